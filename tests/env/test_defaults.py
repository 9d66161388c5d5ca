"""Defaults chosen from the data: the background and the probed patch size."""

import pytest
import torch

from painter_env import defaults
from painter_env.config import PainterConfig, build_painter


def _digits(count=64, size=16, seed=0) -> torch.Tensor:
    """Bright strokes on black: a few random bars per image."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, size, size)
    for image in images:
        for _ in range(3):
            row, col = torch.randint(2, size - 6, (2,), generator=generator).tolist()
            image[0, row : row + 5, col : col + 2] = 0.8
    return images


def test_dark_borders_keep_a_black_canvas_and_coloured_ones_get_a_background():
    digits = _digits()
    assert defaults.background_levels(digits) == 0
    photos = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.3
    assert defaults.background_levels(photos) == defaults.BACKGROUND_LEVELS


def test_the_probe_stops_at_a_size_whose_neighbours_are_worse():
    digits = _digits()
    size, tried = defaults.probe_patch_size(digits, 4, 8, 2, 0.1, 0, 0)
    assert tried[size] == min(tried.values()) and len(tried) >= 3
    for neighbour in (size - 1, size + 1):
        assert neighbour not in tried or tried[neighbour] >= tried[size]


def test_build_painter_records_the_chosen_patch_size_and_background(tmp_path):
    from PIL import Image

    colours = torch.rand(12, 3, generator=torch.Generator().manual_seed(2))
    for index, colour in enumerate(colours):
        pixels = (colour.view(1, 1, 3).expand(12, 12, 3) * 255).byte().numpy()
        pixels[4:8, 4:8] = 255
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
    painter = build_painter(PainterConfig(dataset=f"folder:{tmp_path}", split="all", max_steps=3, num_prototypes=4))
    assert painter.config.background == "border" and painter.dictionary.background_levels > 0
    assert painter.config.patch_size == painter.geometry.patch_size
    black = build_painter(
        PainterConfig(
            dataset=f"folder:{tmp_path}", split="all", max_steps=3, num_prototypes=4, background="black", patch_size=4
        )
    )
    assert black.config.background == "black" and black.dictionary.background_bits == 0
    with pytest.raises(ValueError, match="background"):
        PainterConfig(background="white")


@pytest.mark.parametrize("background, levels", [(None, defaults.BACKGROUND_LEVELS), ("black", 0)])
def test_the_probe_paints_on_the_background_the_painter_will_use(colour_folder, monkeypatch, background, levels):
    from painter_env import config as painter_config

    seen = []

    def probe(images, steps, num_prototypes, num_levels, threshold, seed, background_levels):
        seen.append(background_levels)
        return 3, {3: 1.0}

    monkeypatch.setattr(painter_config, "probe_patch_size", probe)
    kwargs = {key: value for key, value in colour_folder.items() if key != "patch_size"}
    painter = build_painter(PainterConfig(**kwargs, background=background))
    assert seen == [levels] and painter.config.patch_size == 3
    assert painter.dictionary.background_levels == levels
