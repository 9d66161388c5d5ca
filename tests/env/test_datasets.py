"""Datasets: shapes, MNIST-format IDX files, image folders, split slicing."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from decoders.kernel import CanvasGeometry, decode
from painter_env import shapes
from painter_env.datasets import checked, load_images, parse_split


def write_idx(path, images: np.ndarray, compress: bool):
    header = struct.pack(">IIII", 0x00000803, *images.shape)
    data = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize(
    "split, expected",
    [
        ("test", ("test", slice(None))),
        ("test[:8000]", ("test", slice(None, 8000))),
        ("test[8000:]", ("test", slice(8000, None))),
        ("train[-5:]", ("train", slice(-5, None))),
    ],
)
def test_split_parsing(split, expected):
    assert parse_split(split) == expected


@pytest.mark.parametrize("split", ["test[8000]", "test[a:b]", "", "te st"])
def test_bad_splits_are_rejected(split):
    with pytest.raises(ValueError, match="bad split"):
        parse_split(split)


def test_mnist_loader_reads_the_shared_test_set(mnist_root):
    full = load_images("mnist", "test", data_root=mnist_root)
    fit = load_images("mnist", "test[:8000]", data_root=mnist_root)
    held_out = load_images("mnist", "test[8000:]", data_root=mnist_root)
    assert full.images.shape == (10000, 1, 28, 28)
    assert len(fit) == 8000 and len(held_out) == 2000
    assert full.images.min() == 0 and full.images.max() == 1
    torch.testing.assert_close(held_out.images, full.images[8000:])
    assert 0.1 < float(full.images.mean()) < 0.15  # MNIST's mean intensity is about 0.13
    with pytest.raises(FileNotFoundError, match="download"):
        load_images("mnist", "train", data_root=mnist_root)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_gz_or_not_in_the_torchvision_layout(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / ("train-images-idx3-ubyte" + (".gz" if compress else "")), images, compress)
    loaded = load_images("fashion-mnist", "train", data_root=tmp_path)
    np.testing.assert_allclose(loaded.images[:, 0].numpy() * 255, images, atol=1e-4)
    resized = load_images("fashion-mnist", "train[2:]", data_root=tmp_path, image_size=14)
    assert resized.images.shape == (5, 1, 14, 14)


def test_corrupt_idx_file_names_the_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_images("mnist", "test", data_root=tmp_path)


def test_missing_files_say_where_they_go(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*MNIST/raw.*download"):
        load_images("mnist", "test", data_root=tmp_path)


def test_image_folder_grayscale_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), mode="L").save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "b.jpg")
    loaded = load_images(f"folder:{tmp_path}", "all", image_size=16)
    assert loaded.images.shape == (2, 3, 16, 16)
    (tmp_path / "c.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.png"):
        load_images(f"folder:{tmp_path}", "all", image_size=17)
    with pytest.raises(ValueError, match="single split 'all'"):
        load_images(f"folder:{tmp_path}", "train", image_size=16)
    (tmp_path / "c.png").unlink()
    with pytest.raises(ValueError, match="not all of one square size.*--image-size"):
        load_images(f"folder:{tmp_path}", "all")


def test_a_folder_of_one_size_keeps_it(tmp_path):
    rng = np.random.default_rng(1)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    loaded = load_images(f"folder:{tmp_path}", "all[1:]")
    assert loaded.images.shape == (2, 3, 10, 10)


def test_cifar10_is_read_with_torchvision_from_its_batches(tmp_path, monkeypatch):
    import pickle

    from torchvision.datasets import CIFAR10

    with pytest.raises(FileNotFoundError, match="download"):
        load_images("cifar10", "test", data_root=tmp_path)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels = np.random.default_rng(2).integers(0, 256, (6, 3 * 32 * 32), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as file:
            pickle.dump({"data": pixels, "labels": [0] * 6}, file)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, file)
    # the fake batches have other checksums than the real ones
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    train = load_images("cifar10", "train[:7]", data_root=tmp_path)
    assert train.images.shape == (7, 3, 32, 32)
    np.testing.assert_allclose(train.images[0].numpy() * 255, pixels[0].reshape(3, 32, 32), atol=1e-4)


def test_nan_pixels_are_reported():
    images = torch.zeros(4, 1, 5, 5)
    images[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="image 2"):
        checked(images, "somewhere")
    assert checked(images[:2], "somewhere") is not None


def test_shapes_scenes_depend_only_on_seed_split_and_index():
    geometry = CanvasGeometry(20, 20, 5, 15)
    few, few_lengths = shapes.scene_programs(range(5), "train", 0, geometry, 3, 4)
    many, many_lengths = shapes.scene_programs(range(50), "train", 0, geometry, 3, 4)
    middle, _ = shapes.scene_programs(range(3, 5), "train", 0, geometry, 3, 4)
    other, _ = shapes.scene_programs(range(5), "test", 0, geometry, 3, 4)
    assert torch.equal(few, many[:5]) and torch.equal(few_lengths, many_lengths[:5])
    assert torch.equal(middle, few[3:5]) and not torch.equal(few, other)
    sliced = load_images("shapes", "train[40:50]", image_size=20, patch_size=5)
    assert torch.equal(sliced.programs, load_images("shapes", "train[:50]", image_size=20, patch_size=5).programs[40:])
    assert set(many_lengths.tolist()) == {1, 2, 3, 4}


def test_shapes_ground_truth_programs_reconstruct_their_images_exactly():
    data = load_images("shapes", "test[:64]", image_size=20, patch_size=5)
    geometry = CanvasGeometry(20, 20, 5, 15)
    dictionary = shapes.shapes_dictionary(5, 3)
    values, support = dictionary.patches()
    painted = decode(shapes.absolute_to_actions(data.programs, geometry), values, support, 3, geometry)
    assert torch.equal(painted, data.images)
    assert data.images.flatten(1).max(1).values.min() >= shapes.INTENSITY_RANGE[0] - 1e-6  # no blank scene
    masks = shapes.shape_masks(7)
    assert len(masks) == len(shapes.SHAPE_NAMES) and len({m.numpy().tobytes() for m in masks}) == len(masks)


def test_the_default_patch_size_lets_a_program_cover_about_half_the_canvas():
    from painter_env.config import PainterConfig, build_painter, default_patch_size

    assert default_patch_size(28, 28, 8) == 7  # the shapes dataset's ground-truth patches
    assert [default_patch_size(28, 28, steps) for steps in (4, 16, 64)] == [10, 5, 2]
    painter = build_painter(PainterConfig(image_size=20, max_steps=2, max_shapes=1))
    assert painter.geometry.patch_size == 10 and painter.config.patch_size == 10 and painter.config.max_steps == 2
