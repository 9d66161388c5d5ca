"""``shapes``: the built-in procedural dataset with known ground-truth programs.

Each scene paints 1..``max_shapes`` shapes from a fixed dictionary (squares, discs, triangles,
bars at four angles, rings, crosses) at random positions and intensity levels, last write wins,
through the painting kernel itself. Scene ``i`` of a split depends only on ``(seed, split, i)``
and the geometry, never on how many scenes are generated. Because every scene is painted by a
program the environment can express, the optimal return of an episode is known: the whole SSE
of the blank canvas.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry, decode

SHAPE_NAMES = (
    "square",
    "small_square",
    "disc",
    "small_disc",
    "ring",
    "triangle_up",
    "triangle_down",
    "cross",
    "bar_0",
    "bar_45",
    "bar_90",
    "bar_135",
)
INTENSITY_RANGE = (0.4, 1.0)
SPLIT_SIZES = {"train": 10000, "test": 2000}
SPLIT_STREAMS = {"train": 0, "test": 1}


def shape_masks(size: int) -> torch.Tensor:
    """Boolean masks ``(12, size, size)`` of the ground-truth shapes, in ``SHAPE_NAMES`` order."""
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = y - centre, x - centre
    radius = np.hypot(dy, dx)
    half = size / 2
    width = max(0.5, size / 8)

    def bar(angle: float) -> np.ndarray:
        theta = math.radians(angle)
        return np.abs(dx * math.sin(theta) - dy * math.cos(theta)) <= width

    masks = [
        np.ones((size, size), bool),
        (np.abs(dy) <= half / 2) & (np.abs(dx) <= half / 2),
        radius <= half,
        radius <= half / 2 + 0.25,
        (radius <= half) & (radius >= half - max(1.0, size / 5)),
        np.abs(dx) <= (y + 1) / 2,
        np.abs(dx) <= (size - y) / 2,
        (np.abs(dx) <= width) | (np.abs(dy) <= width),
        bar(0),
        bar(45),
        bar(90),
        bar(135),
    ]
    return torch.from_numpy(np.stack(masks))


def shapes_dictionary(patch_size: int, num_levels: int, channels: int = 1) -> PatchDictionary:
    """The ground-truth dictionary: shape k at intensity levels evenly spaced in INTENSITY_RANGE."""
    low, high = INTENSITY_RANGE
    masks = shape_masks(patch_size).unsqueeze(1)
    filled = masks.float().expand(-1, channels, -1, -1)
    if num_levels == 1:
        return PatchDictionary(filled * (low + high) / 2, None, masks, num_levels=1)
    return PatchDictionary(filled * (low + high) / 2, filled * (high - low) / 2, masks, num_levels)


def scene_programs(
    indices: range, split: str, seed: int, geometry: CanvasGeometry, num_levels: int, max_shapes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute programs ``(N, max_shapes, 4)`` of rows ``(i, j, k, b)`` and their lengths ``(N,)``.

    Scene ``i`` is drawn from its own generator, seeded by ``(seed, split, i)``. Shorter programs
    are padded by repeating their last shape, which changes nothing.
    """
    programs = np.zeros((len(indices), max_shapes, 4), dtype=np.int64)
    lengths = np.zeros(len(indices), dtype=np.int64)
    highs = np.array([geometry.rows, geometry.cols, len(SHAPE_NAMES), num_levels])
    for row, index in enumerate(indices):
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
        length = int(rng.integers(1, max_shapes + 1))
        scene = rng.integers(0, highs, size=(length, 4))
        programs[row, :length] = scene
        programs[row, length:] = scene[-1]
        lengths[row] = length
    return torch.from_numpy(programs), torch.from_numpy(lengths)


def absolute_to_actions(programs: torch.Tensor, geometry: CanvasGeometry) -> torch.Tensor:
    """Turn absolute ``(i, j, k, b)`` rows into actions ``(di, dj, k, b)`` from the start cursor.

    Requires every jump to be within the move radius (always true when it spans the canvas).
    """
    start = torch.tensor(geometry.start).expand(programs.shape[0], 1, 2)
    previous = torch.cat([start, programs[:, :-1, :2]], dim=1)
    moves = programs[:, :, :2] - previous + geometry.move_radius
    if (moves < 0).any() or (moves >= geometry.num_moves).any():
        raise ValueError("a ground-truth jump exceeds the move radius")
    return torch.cat([moves, programs[:, :, 2:]], dim=2)


def make_scenes(
    indices: range,
    split: str,
    seed: int,
    image_size: int,
    patch_size: int,
    num_levels: int,
    max_shapes: int,
    channels: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(N, C, S, S)`` in [0, 1], absolute programs and program lengths of scenes ``indices``."""
    full_reach = CanvasGeometry(image_size, image_size, patch_size, image_size - patch_size)
    programs, lengths = scene_programs(indices, split, seed, full_reach, num_levels, max_shapes)
    dictionary = shapes_dictionary(patch_size, num_levels, channels)
    with torch.no_grad():
        values, support = dictionary.patches()
        images = decode(absolute_to_actions(programs, full_reach), values, support, num_levels, full_reach)
    return images, programs, lengths
