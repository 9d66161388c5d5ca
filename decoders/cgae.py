"""CGAE: a convolutional additive model of placed prototypes, fitted with a batched Gibbs sampler.

An image is explained as a sum of H components, each a prototype placed anywhere:
``x ~= sum_h g(i_h, j_h, k_h)``, with ``g(i, j, k)`` prototype k (C x R x R, unconstrained
values) with its top-left corner at (i, j). A component may also be *empty* (the null code),
so an image that needs fewer than H strokes is not forced to add a useless one.

Gibbs sampling resamples one component at a time given the others. With the residual
``r = x - sum_{h' != h} g_h'``, the conditional of component h is
``p(i, j, k) ~ exp(-beta ||r - g(i, j, k)||^2)``, and since
``||r - w||^2 = ||r||^2 - 2 <r, w> + ||w||^2`` every (i, j, k) is scored by ONE cross-correlation
(conv2d) of the residual with the K prototypes; the null code scores ``||r||^2``. Images and
chains are one batch. The residual is updated in place after every draw (remove the old
component, add back the new one), so no conditional ever sees a stale residual.

Keeping the prototypes from collapsing onto a blurry mean (the failure a naive sampler
shows): with the per-pixel *mean* squared error at beta = 1 as energy, the log-probabilities
of different placements differ by a few hundredths, the draws are nearly uniform, and dictionary
learning averages random placements into one blur; a biased sampler adds to it. Here the energy
is the per-image sum of squares, beta is annealed, the draws are exact
(:func:`decoders.sampling.sample_categorical`), the prototypes start from k-means++ over data
patches, and prototypes left unused are reseeded from patches of the residual
(``reseed_unused``); usage and its entropy are logged.

References:

- Geman & Geman, Stochastic Relaxation, Gibbs Distributions, and the Bayesian Restoration of
  Images, 1984.
- Arthur & Vassilvitskii, k-means++: The Advantages of Careful Seeding, 2007.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from decoders.dictionary import kmeans_plus_plus, sample_patches
from decoders.kernel import CanvasGeometry, table_on
from decoders.sampling import beta_schedule, sample_categorical


class CGAE(nn.Module):
    """K prototypes ``(K, C, R, R)`` combined additively by H components on an H x W canvas."""

    def __init__(self, prototypes: torch.Tensor, components: int, height: int, width: int):
        super().__init__()
        if prototypes.dim() != 4 or prototypes.shape[-1] != prototypes.shape[-2]:
            raise ValueError(f"prototypes must have shape (K, C, R, R), got {tuple(prototypes.shape)}")
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.prototypes = nn.Parameter(prototypes.detach().float().clone())
        self.components = components
        size = prototypes.shape[-1]
        self.geometry = CanvasGeometry(height, width, size, max(height, width) - size)

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[0]

    @property
    def num_positions(self) -> int:
        return self.geometry.rows * self.geometry.cols

    @property
    def null_code(self) -> int:
        """The code of an empty component: one past the last (k, i, j) code."""
        return self.num_prototypes * self.num_positions

    @property
    def bits_per_image(self) -> float:
        """H codes, each one of K * rows * cols placements or empty."""
        return self.components * math.log2(self.null_code + 1)

    def config(self) -> dict:
        return {"components": self.components, "height": self.geometry.height, "width": self.geometry.width}

    def conditional_logits(self, residual: torch.Tensor, beta: float) -> torch.Tensor:
        """``(N, (K+1)*rows*cols)`` log-probabilities (up to a constant) of every code given ``residual``.

        Entry ``k * rows*cols + i * cols + j`` (k < K) is ``-beta (||r - g(i,j,k)||^2 - ||r||^2)``.
        The null code is spread over the ``rows*cols`` entries of an extra all-zero prototype, each
        at ``-log(rows*cols)``, so together they weigh exactly ``exp(0)``; any of them means empty.
        Computed by one conv2d of the residual with the scaled prototypes (the shift is its bias).
        """
        prototypes = self.prototypes.detach()
        weight = torch.cat([(2 * beta) * prototypes, prototypes.new_zeros(1, *prototypes.shape[1:])])
        bias = torch.cat(
            [beta * prototypes.square().sum(dim=(1, 2, 3)), prototypes.new_full((1,), math.log(self.num_positions))]
        )
        return F.conv2d(residual, weight, -bias).flatten(1)

    def _windows(self, codes: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel indices ``(N, C, R*R)`` and values of the components ``codes`` ``(N,)`` (zero if null)."""
        channels = prototypes.shape[1]
        empty = codes == self.null_code
        codes = codes.masked_fill(empty, 0)
        kind, position = codes // self.num_positions, codes % self.num_positions
        # index_select, not advanced indexing: advanced indexing is far slower on small CPU tensors
        index = table_on(self.geometry, codes.device).index_select(0, position)
        index = index.unsqueeze(1).expand(-1, channels, -1)
        values = prototypes.index_select(0, kind).flatten(2) * (~empty).view(-1, 1, 1).to(prototypes.dtype)
        return index, values

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` of codes ``(N, H)``: the sum of the placed prototypes (differentiable)."""
        count, components = codes.shape
        index, values = self._windows(codes.reshape(-1), self.prototypes)
        channels = values.shape[1]
        index = index.view(count, components, channels, -1).transpose(1, 2).reshape(count, channels, -1)
        values = values.view(count, components, channels, -1).transpose(1, 2).reshape(count, channels, -1)
        canvas = values.new_zeros(count, channels, self.geometry.height * self.geometry.width)
        canvas = canvas.scatter_add(2, index, values)
        return canvas.view(count, channels, self.geometry.height, self.geometry.width)

    @torch.no_grad()
    def gibbs_step(
        self,
        residual: torch.Tensor,
        codes: torch.Tensor,
        component: int,
        beta: float,
        generator: torch.Generator | None = None,
    ) -> None:
        """Resample component ``component`` of every chain in place; ``residual`` ``(N, C, H, W)`` is kept exact."""
        flat = residual.view(residual.shape[0], residual.shape[1], -1)
        index, values = self._windows(codes[:, component], self.prototypes.detach())
        flat.scatter_add_(2, index, values)
        new = sample_categorical(self.conditional_logits(residual, beta), generator, consume=True)
        new = new.clamp_max(self.null_code)
        index, values = self._windows(new, self.prototypes.detach())
        flat.scatter_add_(2, index, -values)
        codes[:, component] = new

    @torch.no_grad()
    def gibbs(
        self,
        images: torch.Tensor,
        chains: int = 1,
        sweeps: int = 4,
        beta_start: float = 1.0,
        beta_end: float = 100.0,
        generator: torch.Generator | None = None,
        codes: torch.Tensor | None = None,
        record: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``sweeps`` annealed Gibbs sweeps over ``chains`` chains per image.

        ``images`` ``(B, C, H, W)``; ``codes`` ``(B, S, H)`` to continue from (default: all empty).
        Returns the codes ``(B, S, H)`` and, if ``record`` > 0, the reconstructions of chain 0 of the
        first ``record`` images after each sweep (for animations).
        """
        batch = images.shape[0]
        if codes is None:
            codes = torch.full((batch, chains, self.components), self.null_code, dtype=torch.long, device=images.device)
        elif codes.shape[:2] != (batch, chains) or codes.shape[2] != self.components:
            raise ValueError(f"codes must have shape {(batch, chains, self.components)}, got {tuple(codes.shape)}")
        flat_codes = codes.reshape(batch * chains, self.components).clone()
        repeated = images.repeat_interleave(chains, dim=0)
        residual = repeated - self.reconstruct(flat_codes).detach()
        frames = []
        for beta in beta_schedule(beta_start, beta_end, sweeps):
            for component in range(self.components):
                self.gibbs_step(residual, flat_codes, component, beta, generator)
            if record:
                frames.append((repeated - residual)[::chains][:record].clone())
        return flat_codes.view(batch, chains, self.components), frames

    def chain_sse(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """SSE ``(B, S)`` of every chain (differentiable in the prototypes)."""
        batch, chains = codes.shape[:2]
        reconstruction = self.reconstruct(codes.flatten(0, 1))
        error = images.repeat_interleave(chains, dim=0) - reconstruction
        return error.square().flatten(1).sum(1).view(batch, chains)


def cgae_from_images(
    images: torch.Tensor,
    num_prototypes: int,
    patch_size: int,
    components: int,
    seed: int = 0,
    num_samples: int = 20000,
) -> CGAE:
    """A CGAE whose prototypes are k-means++ centres of non-empty data patches."""
    generator = torch.Generator().manual_seed(seed)
    images = images.detach().float().cpu()
    points = sample_patches(images, patch_size, num_samples, generator)
    centres, _ = kmeans_plus_plus(points, num_prototypes, generator)
    channels, height, width = images.shape[1:]
    prototypes = centres.view(num_prototypes, channels, patch_size, patch_size)
    return CGAE(prototypes, components, height, width)


def prototype_usage(codes: torch.Tensor, model: CGAE) -> torch.Tensor:
    """How many components use each prototype ``(K,)`` (empty components not counted)."""
    used = codes[codes != model.null_code] // model.num_positions
    return torch.bincount(used.reshape(-1), minlength=model.num_prototypes)


def usage_entropy(usage: torch.Tensor) -> float:
    """Entropy of the usage distribution in bits (log2 K when every prototype is used equally)."""
    total = usage.sum()
    if total == 0:
        return 0.0
    share = usage[usage > 0].double() / total
    return float(-(share * share.log2()).sum())


@torch.no_grad()
def reseed_unused(model: CGAE, usage: torch.Tensor, residuals: torch.Tensor, generator: torch.Generator) -> int:
    """Replace prototypes with zero usage by patches of missing ink in ``residuals``; returns how many."""
    unused = (usage == 0).nonzero().flatten()
    if unused.numel() == 0:
        return 0
    size = model.prototypes.shape[-1]
    missing = residuals.detach().clamp_min(0).cpu()
    try:
        patches = sample_patches(missing, size, unused.numel(), generator, min_energy=1e-2)
    except ValueError:
        return 0
    count = patches.shape[0]
    model.prototypes[unused[:count]] = patches.view(count, *model.prototypes.shape[1:]).to(model.prototypes)
    return count
