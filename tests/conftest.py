"""Shared fixtures: small painter configurations and the MNIST files when they are present."""

from pathlib import Path

import pytest
import torch

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry

MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

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


@pytest.fixture
def mnist_root() -> Path:
    if (
        not (MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file()
        and not (MNIST_ROOT / "t10k-images-idx3-ubyte").is_file()
    ):
        pytest.skip(f"MNIST test files not found in {MNIST_ROOT}")
    return MNIST_ROOT


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
