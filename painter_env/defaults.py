"""Defaults chosen from the data: the canvas background and the patch size.

``build_painter`` asks for these when the caller leaves them unset (``shapes`` keeps its own: the
ground truth's patches on a black canvas). Both are decided on the fit split, so a painter suits
the data it is given instead of one dataset:

- **background**: the canvas starts flat in each image's border colour (the dictionary's
  ``background_levels``, ``BACKGROUND_LEVELS`` levels per channel) when more than
  ``BORDERED_SHARE`` of the fit images have a border that is not black. Otherwise it starts black,
  and the background costs no bits: dark-background data (digits, clothing) keeps its free
  background, photographs get a starting colour for their ``C log2 Q`` bits.
- **patch size R**: a short greedy probe. The first candidate is the size whose T strokes cover
  the pixels that differ from the background ``COVERAGE`` times over; from there the probe moves
  one size at a time towards the lower SSE of greedy search (``decoders.greedy``) with each size's
  k-means++ dictionary (of ``PROBE_PATCHES`` patches), on ``PROBE_IMAGES`` fit images, and stops
  where the SSE rises again.

Each choice is cached per process (a thousand environments probe once).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from decoders.dictionary import PatchDictionary, border_colours, dictionary_from_images
from decoders.greedy import greedy_programs
from decoders.kernel import CanvasGeometry

BACKGROUND_LEVELS = 32
BORDERED_SHARE = 0.05
INK_THRESHOLD = 0.1  # a pixel differs from the background by more than this in some channel
COVERAGE = 2.0
PROBE_IMAGES = 128
PROBE_PATCHES = 4096  # patches clustered for each candidate's dictionary (a final dictionary uses more)


def background_levels(images: torch.Tensor) -> int:
    """``BACKGROUND_LEVELS`` when more than ``BORDERED_SHARE`` of ``images`` have a border colour
    that is not black, else 0 (a black canvas)."""
    bordered = border_colours(images, BACKGROUND_LEVELS).amax(1) > 0
    return BACKGROUND_LEVELS if float(bordered.float().mean()) > BORDERED_SHARE else 0


def coverage_patch_size(images: torch.Tensor, levels: int, steps: int) -> int:
    """The patch size R with ``T R^2 = COVERAGE * ink * H W``, where ink is the share of pixels that
    differ from their image's background by more than ``INK_THRESHOLD``."""
    height, width = images.shape[-2:]
    background = border_colours(images, levels)[:, :, None, None] if levels else 0.0
    ink = float(((images - background).abs().amax(1) > INK_THRESHOLD).float().mean())
    size = round(math.sqrt(COVERAGE * max(ink, 1e-3) * height * width / steps))
    return max(1, min(height, width, size))


def probe_sse(images: torch.Tensor, dictionary: PatchDictionary, steps: int) -> float:
    """Greedy search's mean SSE on ``images`` with ``dictionary``, whole-canvas moves."""
    height, width = images.shape[-2:]
    size = dictionary.patch_size
    geometry = CanvasGeometry(height, width, size, max(height, width) - size)
    with torch.no_grad():
        _, canvases = greedy_programs(images, dictionary, geometry, steps)
    return float((images - canvases).square().flatten(1).sum(1).mean())


@lru_cache(maxsize=32)
def probe_patch_size(
    images: torch.Tensor, steps: int, num_prototypes: int, num_levels: int, threshold: float, seed: int, levels: int
) -> tuple[int, dict[int, float]]:
    """The probed patch size for programs of ``steps`` strokes on a canvas that starts from a
    background of ``levels`` levels (0: black), and the SSE of every size tried."""
    probe = images[:: max(1, len(images) // PROBE_IMAGES)][:PROBE_IMAGES]
    largest = min(images.shape[-2:])
    tried: dict[int, float] = {}

    def sse(size: int) -> float:
        if size not in tried:
            dictionary = dictionary_from_images(
                images, num_prototypes, size, num_levels, seed, PROBE_PATCHES, threshold, background_levels=levels
            )
            tried[size] = probe_sse(probe, dictionary, steps)
        return tried[size]

    best = coverage_patch_size(images, levels, steps)
    for direction in (-1, 1):
        while 1 <= best + direction <= largest and sse(best + direction) < sse(best):
            best += direction
    return best, tried
