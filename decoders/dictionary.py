"""The patch dictionary: K prototypes of R x R pixels, each with a support mask and a linear code,
and the background the programs paint on.

Patch (k, b) is ``clamp(mean[k] + levels[b] * basis[k], 0, 1)`` inside the support of prototype
k; the code b is quantised to ``L`` fixed levels in [-1, 1] (a single level 0 when L = 1, so the
patch is the mean). This is LLGAE's ``mu_k + W_k b`` with a one-dimensional basis per prototype.
Both ``mean`` and ``basis`` are trainable; the masks and levels are fixed buffers.

The canvas starts black, or (``background_levels`` Q > 0) flat in each image's border colour: the
median of its outer ring of pixels, per channel, quantised to Q levels. That colour is a code of
``C log2 Q`` bits that the encoder writes before the program (``background_bits``): a photograph
has no black background to leave unpainted, while on dark-background data the border colour is
black and the background costs nothing but its bits.

References:

- the LLGAE note: CATSMILE-1022, Locally Linear Generative Autoencoder (the ``mu_k + W_k b`` patch).
- Arthur & Vassilvitskii, k-means++: The Advantages of Careful Seeding, 2007.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from decoders.storage import atomic_save, load_payload

FORMAT = "painter-dictionary"
FORMAT_VERSION = 1


def code_levels(num_levels: int) -> torch.Tensor:
    """The L fixed code values: evenly spaced in [-1, 1], or ``[0]`` for a single level."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return torch.zeros(1)
    return torch.linspace(-1.0, 1.0, num_levels)


class PatchDictionary(nn.Module):
    """K prototypes (C channels, R x R) with support masks and an L-level linear code."""

    def __init__(
        self,
        mean: torch.Tensor,
        basis: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_levels: int = 1,
        background_levels: int = 0,
    ):
        super().__init__()
        if background_levels == 1 or background_levels < 0:
            raise ValueError(f"background_levels must be 0 (black) or at least 2, got {background_levels}")
        self.background_levels = int(background_levels)
        if mean.dim() != 4 or mean.shape[-1] != mean.shape[-2]:
            raise ValueError(f"mean must have shape (K, C, R, R), got {tuple(mean.shape)}")
        if not torch.isfinite(mean).all() or (basis is not None and not torch.isfinite(basis).all()):
            raise ValueError("dictionary prototypes contain NaN or infinite values")
        num_prototypes, _, size, _ = mean.shape
        basis = torch.zeros_like(mean) if basis is None else basis
        if basis.shape != mean.shape:
            raise ValueError(f"basis shape {tuple(basis.shape)} differs from mean shape {tuple(mean.shape)}")
        mask = torch.ones(num_prototypes, 1, size, size, dtype=torch.bool) if mask is None else mask
        if mask.shape != (num_prototypes, 1, size, size):
            raise ValueError(f"mask must have shape {(num_prototypes, 1, size, size)}, got {tuple(mask.shape)}")
        self.mean = nn.Parameter(mean.detach().float().clone())
        self.basis = nn.Parameter(basis.detach().float().clone())
        self.register_buffer("mask", mask.detach().bool().clone())
        self.register_buffer("levels", code_levels(num_levels).to(mean.device))

    @property
    def num_prototypes(self) -> int:
        return self.mean.shape[0]

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    @property
    def patch_size(self) -> int:
        return self.mean.shape[-1]

    @property
    def num_levels(self) -> int:
        return self.levels.numel()

    @property
    def num_patches(self) -> int:
        """Number of distinct (k, b) patches: K * L."""
        return self.num_prototypes * self.num_levels

    @property
    def background_bits(self) -> float:
        """Bits per image of the background colour: ``C log2 Q`` (0 for a black canvas)."""
        return self.channels * math.log2(self.background_levels) if self.background_levels else 0.0

    def background_colours(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)``: the colour each image's canvas starts from (zeros for a black canvas)."""
        if not self.background_levels:
            return images.new_zeros(images.shape[:2])
        return border_colours(images, self.background_levels)

    def start_canvas(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)``: the canvas a program paints on for each of ``images``."""
        colours = self.background_colours(images)
        return colours[:, :, None, None].expand_as(images).contiguous()

    def patches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (k, b) patch, flattened: values ``(K*L, C, R*R)`` and support ``(K*L, 1, R*R)``.

        The support is 0/1 in the values' dtype (blending with it is faster than masking).

        Row ``k * L + b`` is prototype k with code level b. Differentiable in ``mean`` and ``basis``.
        """
        values = self.mean.unsqueeze(1) + self.levels.view(1, -1, 1, 1, 1) * self.basis.unsqueeze(1)
        values = values.clamp(0.0, 1.0) * self.mask.unsqueeze(1)
        count, channels, size = self.num_patches, self.channels, self.patch_size
        support = self.mask.unsqueeze(1).expand(-1, self.num_levels, -1, -1, -1).to(values.dtype)
        return values.reshape(count, channels, size * size), support.reshape(count, 1, size * size)

    def config(self) -> dict:
        return {
            "num_prototypes": self.num_prototypes,
            "channels": self.channels,
            "patch_size": self.patch_size,
            "num_levels": self.num_levels,
            "background_levels": self.background_levels,
        }

    def save(self, path: str | Path) -> None:
        """Write the dictionary atomically (temporary file, then rename)."""
        atomic_save(self.to_payload(), path)

    def to_payload(self) -> dict:
        state = {name: value.detach().cpu() for name, value in self.state_dict().items()}
        return {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config(), "state": state}

    @classmethod
    def from_payload(cls, payload: dict, where: str = "payload") -> PatchDictionary:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{where} does not hold a painter dictionary (no '{FORMAT}' payload)")
        state, background = payload["state"], payload.get("config", {}).get("background_levels", 0)
        return cls(state["mean"], state["basis"], state["mask"], state["levels"].numel(), background)

    @classmethod
    def load(cls, path: str | Path) -> PatchDictionary:
        """Load a dictionary saved by :meth:`save`, or the ``dictionary`` entry of a training checkpoint."""
        payload = load_payload(path, what="dictionary file")
        if isinstance(payload, dict) and isinstance(payload.get("dictionary"), dict):
            payload = payload["dictionary"]
        return cls.from_payload(payload, where=str(path))


def border_colours(images: torch.Tensor, levels: int, width: int = 2) -> torch.Tensor:
    """``(B, C)``: the median of each image's outer ``width`` rows and columns of pixels, per channel,
    quantised to ``levels`` evenly spaced values in [0, 1]."""
    height, cols = images.shape[-2:]
    width = max(1, min(width, min(height, cols) // 4))
    ring = torch.ones(height, cols, dtype=torch.bool, device=images.device)
    ring[width : height - width, width : cols - width] = False
    median = images[:, :, ring].median(dim=2).values
    return (median * (levels - 1)).round() / (levels - 1)


def sample_patches(
    images: torch.Tensor, patch_size: int, count: int, generator: torch.Generator, min_energy: float = 1e-3
) -> torch.Tensor:
    """Draw up to ``count`` non-empty R x R patches ``(N, C*R*R)`` at random images and positions."""
    num_images, channels, height, width = images.shape
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} is larger than the images ({height}x{width})")
    draws = 4 * count
    which = torch.randint(num_images, (draws,), generator=generator)
    rows = torch.randint(height - patch_size + 1, (draws,), generator=generator)
    cols = torch.randint(width - patch_size + 1, (draws,), generator=generator)
    offsets = torch.arange(patch_size)
    row_index = (rows[:, None] + offsets)[:, :, None].expand(-1, -1, patch_size)
    col_index = (cols[:, None] + offsets)[:, None, :].expand(-1, patch_size, -1)
    patches = images[
        which[:, None, None, None], torch.arange(channels)[None, :, None, None], row_index[:, None], col_index[:, None]
    ]
    patches = patches.reshape(draws, -1)
    keep = patches.square().mean(1) > min_energy
    patches = patches[keep][:count]
    if patches.shape[0] == 0:
        raise ValueError("no non-empty patches found in the images (are they all blank?)")
    return patches


def kmeans_plus_plus(
    points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means with k-means++ seeding (D^2 sampling) then Lloyd iterations; returns (centres, labels)."""
    count = points.shape[0]
    if count < k:
        raise ValueError(f"need at least {k} non-empty patches for k-means, found {count}")
    centres = points[torch.randint(count, (1,), generator=generator)]
    nearest = torch.cdist(points, centres).squeeze(1).square()
    for _ in range(1, k):
        probabilities = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1 / count)
        choice = torch.multinomial(probabilities, 1, generator=generator)
        centres = torch.cat([centres, points[choice]])
        nearest = torch.minimum(nearest, (points - points[choice]).square().sum(1))
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k).clamp_min(1).unsqueeze(1)
        centres = torch.where(torch.bincount(labels, minlength=k).unsqueeze(1) > 0, sums / counts, centres)
    return centres, torch.cdist(points, centres).argmin(1)


def dictionary_from_images(
    images: torch.Tensor,
    num_prototypes: int,
    patch_size: int,
    num_levels: int,
    seed: int = 0,
    num_samples: int = 20000,
    support_threshold: float = 0.0,
    background_levels: int = 0,
) -> PatchDictionary:
    """Initialise a dictionary from data: k-means++ over non-empty patches (deterministic per seed).

    The mean of prototype k is its cluster centre; its basis is the cluster's first principal
    direction scaled by its standard deviation, so the code levels -1..1 span about +-1 sigma.
    The support of a prototype is where some code level paints above ``support_threshold``
    (``mean + |basis|``, brightest channel; always its brightest pixel): outside it the patch leaves
    the canvas as it is, so strokes on a blank background compose instead of erasing each other.
    0 gives full square supports. ``background_levels`` sets the dictionary's background (see the
    module docstring).
    """
    if num_prototypes < 1:
        raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}")
    generator = torch.Generator().manual_seed(seed)
    images = images.detach().float().cpu()
    points = sample_patches(images, patch_size, num_samples, generator)
    centres, labels = kmeans_plus_plus(points, num_prototypes, generator)
    channels = images.shape[1]
    means, bases = [], []
    for k, centre in enumerate(centres):
        members = points[labels == k]
        direction = torch.zeros_like(centre)
        if members.shape[0] > 1:
            centred = members - centre
            _, singular, right = torch.linalg.svd(centred, full_matrices=False)
            direction = right[0] * singular[0] / math.sqrt(members.shape[0] - 1)
            direction = direction * torch.sign(direction.sum() + 1e-12)
        means.append(centre)
        bases.append(direction)
    shape = (num_prototypes, channels, patch_size, patch_size)
    mean, basis = torch.stack(means).view(shape), torch.stack(bases).view(shape)
    support = ink_support(mean, basis, support_threshold) if support_threshold > 0 else None
    return PatchDictionary(mean, basis, support, num_levels, background_levels)


def ink_support(mean: torch.Tensor, basis: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(K, 1, R, R)`` bool: the pixels where some code level of each prototype paints above ``threshold``."""
    brightest = (mean + basis.abs()).amax(1, keepdim=True)
    peak = brightest.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (brightest > threshold) | (brightest >= peak)
