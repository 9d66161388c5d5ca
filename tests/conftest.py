"""Shared fixtures: small painter configurations and the shared MNIST and CIFAR-10 folders (a test that
needs one fails when it is missing: set ``PAINTER_SHARED_DATA`` to point the tests at ``shared/data``)."""

import os
from pathlib import Path

import pytest
import torch

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry

SHARED_DATA_VARIABLE = "PAINTER_SHARED_DATA"
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SMALL_SHAPES = dict(dataset="shapes", image_size=12, patch_size=5, max_shapes=2, max_steps=4)


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory) -> dict:
    """``Painter-v0`` keywords for a folder of 120 small colour pictures (no black borders, so the
    canvas starts in each picture's border colour)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("colour")
    generator = torch.Generator().manual_seed(0)
    for index in range(120):
        pixels = torch.rand(12, 12, 3, generator=generator) * 0.3 + torch.rand(1, 1, 3, generator=generator) * 0.7
        Image.fromarray((pixels * 255).byte().numpy()).save(folder / f"{index:03d}.png")
    return dict(dataset=f"folder:{folder}", split="all", patch_size=4, max_steps=4, num_prototypes=6)


@pytest.fixture(params=["shapes", "colour"])
def small_painter(request) -> dict:
    """Small ``Painter-v0`` keywords: shapes on a black canvas, colour pictures on their backgrounds."""
    return SMALL_SHAPES if request.param == "shapes" else request.getfixturevalue("colour_folder")


@pytest.fixture
def one_torch_thread():
    """One torch thread: much faster than two on a busy 2-core machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_data() -> Path:
    """The ``shared/data`` folder: ``$PAINTER_SHARED_DATA`` if set, else the repository's parent's ``shared/data``."""
    override = os.environ.get(SHARED_DATA_VARIABLE)
    return Path(override).expanduser() if override else DEFAULT_SHARED_DATA


def shared_folder(name: str, what: str, present) -> Path:
    """``shared_data() / name``; the test fails (one line, no traceback) if ``present(folder)`` is false."""
    folder = shared_data() / name
    if not present(folder):
        override = os.environ.get(SHARED_DATA_VARIABLE)
        where = f"{SHARED_DATA_VARIABLE}={override}" if override else "the default"
        pytest.fail(
            f"{what} not found in {folder} ({where}): set {SHARED_DATA_VARIABLE} to the shared/data folder "
            f"that holds it (default {DEFAULT_SHARED_DATA})",
            pytrace=False,
        )
    return folder


@pytest.fixture
def mnist_root() -> Path:
    """The MNIST folder (``shared/data/mnist``, with the test set); the test fails if it is missing."""
    names = ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte")
    return shared_folder(
        "mnist",
        "MNIST test images (t10k-images-idx3-ubyte[.gz])",
        lambda folder: any((folder / n).is_file() for n in names),
    )


@pytest.fixture
def cifar_root() -> Path:
    """The CIFAR-10 folder of PNGs (``shared/data/cifar10/train``); the test fails if it is missing."""
    return shared_folder("cifar10/train", "CIFAR-10 PNG images", lambda folder: any(folder.glob("*.png")))


def random_dictionary(
    num_prototypes: int, channels: int, patch_size: int, num_levels: int, generator: torch.Generator
) -> PatchDictionary:
    """A dictionary with random values and random (non-empty) supports."""
    shape = (num_prototypes, channels, patch_size, patch_size)
    mask = torch.rand(num_prototypes, 1, patch_size, patch_size, generator=generator) < 0.7
    mask[:, :, 0, 0] = True
    return PatchDictionary(
        torch.rand(shape, generator=generator), 0.3 * torch.randn(shape, generator=generator), mask, num_levels
    )


def random_actions(
    batch: int, steps: int, geometry: CanvasGeometry, dictionary: PatchDictionary, generator: torch.Generator
) -> torch.Tensor:
    highs = [geometry.num_moves, geometry.num_moves, dictionary.num_prototypes, dictionary.num_levels]
    return torch.stack([torch.randint(h, (batch, steps), generator=generator) for h in highs], dim=2)


@pytest.fixture
def restore_torch_settings():
    """``train.sb3.main`` and ``train.evaluate.main`` set torch's threads and distribution checks for the
    process; a test module that runs them lists this fixture in its ``pytestmark`` to restore them."""
    threads, validate = torch.get_num_threads(), torch.distributions.Distribution._validate_args
    yield
    torch.set_num_threads(threads)
    torch.distributions.Distribution.set_default_validate_args(validate)
