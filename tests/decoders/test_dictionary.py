"""The patch dictionary: data initialisation, patches, saving and loading."""

import math

import pytest
import torch

from decoders.dictionary import PatchDictionary, code_levels, dictionary_from_images
from decoders.kernel import CanvasGeometry, decode
from decoders.storage import atomic_save
from painter_env.datasets import load_images
from tests.conftest import random_dictionary


@pytest.fixture(scope="module")
def scenes():
    return load_images("shapes", "train[:300]").images


def test_kmeans_initialisation_is_deterministic_per_seed(scenes):
    first = dictionary_from_images(scenes, 8, 7, 3, seed=0)
    again = dictionary_from_images(scenes, 8, 7, 3, seed=0)
    other = dictionary_from_images(scenes, 8, 7, 3, seed=1)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.basis, again.basis)
    assert not torch.equal(first.mean, other.mean)
    assert first.num_prototypes == 8 and first.num_levels == 3 and torch.isfinite(first.basis).all()
    # prototypes are data patches' centres: non-empty, within the pixel range
    energy = first.mean.flatten(1).square().sum(1)
    assert (energy > 0).all() and first.mean.min() >= 0 and first.mean.max() <= 1


def test_patches_are_clamped_and_vanish_outside_the_support():
    dictionary = random_dictionary(3, 2, 4, 3, torch.Generator().manual_seed(0))
    values, support = dictionary.patches()
    assert values.shape == (9, 2, 16) and support.shape == (9, 1, 16)
    assert values.min() >= 0 and values.max() <= 1
    assert set(support.unique().tolist()) <= {0.0, 1.0} and (values * (1 - support) == 0).all()
    # row k*L + b is prototype k at level b
    expected = (dictionary.mean[1] + code_levels(3)[2] * dictionary.basis[1]).clamp(0, 1) * dictionary.mask[1]
    torch.testing.assert_close(values[1 * 3 + 2], expected.flatten(1))


def test_save_and_load_roundtrip_including_training_checkpoints(tmp_path):
    dictionary = random_dictionary(4, 1, 5, 2, torch.Generator().manual_seed(1))
    dictionary.save(tmp_path / "dictionary.pt")
    loaded = PatchDictionary.load(tmp_path / "dictionary.pt")
    for name, value in dictionary.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    atomic_save({"dictionary": dictionary.to_payload(), "iteration": 3}, tmp_path / "checkpoint.pt")
    assert torch.equal(PatchDictionary.load(tmp_path / "checkpoint.pt").mean, dictionary.mean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "dictionary.pt"]  # no temporaries left


def test_unreadable_dictionary_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        PatchDictionary.load(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt.pt"):
        PatchDictionary.load(tmp_path / "corrupt.pt")
    atomic_save({"something": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="does not hold a painter dictionary"):
        PatchDictionary.load(tmp_path / "foreign.pt")


def test_nan_prototypes_are_rejected():
    mean = torch.zeros(2, 1, 3, 3)
    mean[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        PatchDictionary(mean)


def test_ink_support_keeps_the_pixels_some_level_paints_and_never_empties_a_prototype():
    from decoders.dictionary import ink_support

    mean = torch.zeros(2, 1, 3, 3)
    basis = torch.zeros(2, 1, 3, 3)
    mean[0, 0, 1, 1], basis[0, 0, 0, 0] = 0.5, -0.3  # level -1 paints 0.3 at (0, 0)
    mean[1, 0, 2, 2] = 0.01  # faint: only its brightest pixel
    support = ink_support(mean, basis, 0.2)
    assert support[0, 0].nonzero().tolist() == [[0, 0], [1, 1]]
    assert support[1, 0].nonzero().tolist() == [[2, 2]]


def test_the_background_is_each_images_quantised_border_colour_and_its_bits_are_counted():
    images = torch.zeros(2, 3, 10, 10)
    images[0] = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1)  # a flat colour
    images[0, :, 3:7, 3:7] = 1.0  # an object inside the border does not change it
    dictionary = PatchDictionary(torch.rand(4, 3, 3, 3), num_levels=2, background_levels=5)
    colours = dictionary.background_colours(images)
    torch.testing.assert_close(colours, torch.tensor([[0.25, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    start = dictionary.start_canvas(images)
    assert start.shape == images.shape and torch.equal(start[0, :, 5, 5], colours[0])
    assert dictionary.background_bits == pytest.approx(3 * math.log2(5))
    black = PatchDictionary(torch.rand(4, 3, 3, 3))
    assert black.background_bits == 0 and not black.start_canvas(images).any()
    loaded = PatchDictionary.from_payload(dictionary.to_payload())
    assert loaded.background_levels == 5
    with pytest.raises(ValueError, match="background_levels"):
        PatchDictionary(torch.rand(4, 3, 3, 3), background_levels=1)


def test_decode_paints_on_the_start_canvas():
    generator = torch.Generator().manual_seed(0)
    dictionary = PatchDictionary(torch.rand(2, 1, 2, 2, generator=generator), num_levels=1, background_levels=8)
    geometry = CanvasGeometry(4, 4, 2, 2)
    images = torch.rand(3, 1, 4, 4, generator=generator)
    start = dictionary.start_canvas(images)
    values, support = dictionary.patches()
    actions = torch.tensor([[[0, 0, 1, 0]]] * 3)  # a move clamped to the top-left corner, then patch 1
    canvas = decode(actions, values.detach(), support, 1, geometry, start)
    assert torch.equal(canvas[:, :, 2:, 2:], start[:, :, 2:, 2:])  # unpainted pixels keep the background
    assert torch.equal(canvas[:, 0, :2, :2], values[1, 0].detach().view(1, 2, 2).expand(3, 2, 2))
