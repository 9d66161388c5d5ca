"""LLGAE and LGAE: a mixture of K linear decoders whose codes are found by a few gradient steps,
with the gradient of the loss taken through those steps.

Component k decodes a code b (E numbers) as ``mu_k + W_k b``. For every k the code starts at
``b = 0`` and takes ``n_step`` steps of ``b <- b + beta (W_k^T (x - mu_k - W_k b) - b)`` (the
``- b`` decay term follows the reference implementation of the LLGAE note: it is gradient ascent on
``-1/2 ||x - mu_k - W_k b||^2 - 1/2 ||b||^2``, whose maximiser is the ridge solution
``(W_k^T W_k + I)^{-1} W_k^T (x - mu_k)``). The component with the smallest residual is chosen
(a hard max over k) and the loss is that residual, differentiated through the inner steps.
K = 1 is LGAE, an autoencoder close to PCA.

The LLGAE note fits images centred by their own mean (``center_images``) and reports the
per-pixel MSE on the 0..255 scale (``seed_figure``), so results can be compared with its table.

References:

- the LLGAE note: CATSMILE-1022, 局部线性生成式自编码器 (LLGAE), Locally Linear Generative
  Autoencoder, http://catsmile.info/1022-llgae.html
- Tipping & Bishop, Mixtures of Probabilistic Principal Component Analyzers, 1999.
"""

from __future__ import annotations

import torch
from torch import nn

from decoders.dictionary import kmeans_plus_plus


class LLGAE(nn.Module):
    """K components with means ``(K, D)`` and bases ``(K, D, E)``; inner step size ``beta``."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, beta: float = 0.01, n_step: int = 5):
        super().__init__()
        if mean.dim() != 2 or basis.dim() != 3 or basis.shape[:2] != mean.shape:
            raise ValueError(f"need mean (K, D) and basis (K, D, E), got {tuple(mean.shape)} and {tuple(basis.shape)}")
        if beta <= 0 or n_step < 0:
            raise ValueError(f"need beta > 0 and n_step >= 0, got beta={beta}, n_step={n_step}")
        self.mean = nn.Parameter(mean.detach().float().clone())
        self.basis = nn.Parameter(basis.detach().float().clone())
        self.beta, self.n_step = float(beta), int(n_step)

    @property
    def num_components(self) -> int:
        return self.mean.shape[0]

    @property
    def code_size(self) -> int:
        return self.basis.shape[2]

    def config(self) -> dict:
        return {"beta": self.beta, "n_step": self.n_step}

    def codes(self, points: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, K, E)`` of flat points ``(N, D)`` after ``n_step`` inner steps (differentiable)."""
        offset = points.unsqueeze(1) - self.mean
        codes = offset.new_zeros(points.shape[0], self.num_components, self.code_size)
        for _ in range(self.n_step):
            residual = offset - torch.einsum("kde,nke->nkd", self.basis, codes)
            codes = codes + self.beta * (torch.einsum("kde,nkd->nke", self.basis, residual) - codes)
        return codes

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstructions ``(N, D)`` with the best component, its index ``(N,)`` and code ``(N, E)``."""
        codes = self.codes(points)
        decoded = self.mean + torch.einsum("kde,nke->nkd", self.basis, codes)
        errors = (points.unsqueeze(1) - decoded).square().sum(-1)
        best = errors.detach().argmin(1)
        rows = torch.arange(points.shape[0], device=points.device)
        return decoded[rows, best], best, codes[rows, best]


def ridge_codes(model: LLGAE, points: torch.Tensor) -> torch.Tensor:
    """The inner loop's fixed point ``(W_k^T W_k + I)^{-1} W_k^T (x - mu_k)`` for every k: ``(N, K, E)``."""
    basis = model.basis.detach()
    gram = basis.transpose(1, 2) @ basis + torch.eye(model.code_size, device=basis.device)
    right = torch.einsum("kde,nkd->kne", basis, points.unsqueeze(1) - model.mean.detach())
    return torch.linalg.solve(gram, right.transpose(1, 2)).permute(2, 0, 1)


def llgae_from_points(
    points: torch.Tensor, components: int, code_size: int, beta: float, n_step: int, seed: int = 0
) -> LLGAE:
    """Initialise from data: k-means++ centres as means, each cluster's top-E principal directions
    as basis, scaled by ``1/sqrt(beta)`` so that one inner step already projects onto the subspace."""
    generator = torch.Generator().manual_seed(seed)
    points = points.detach().float().cpu()
    centres, labels = kmeans_plus_plus(points, components, generator)
    bases = []
    for k in range(components):
        members = points[labels == k] - centres[k]
        directions = torch.zeros(points.shape[1], code_size)
        if members.shape[0] > 1:
            _, _, right = torch.linalg.svd(members, full_matrices=False)
            top = right[:code_size].T
            directions[:, : top.shape[1]] = top
        bases.append(directions / beta**0.5)
    return LLGAE(centres, torch.stack(bases), beta, n_step)


def center_images(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat images minus their own mean ``(N, D)``, and those means ``(N, 1)``."""
    flat = images.flatten(1)
    means = flat.mean(1, keepdim=True)
    return flat - means, means


def seed_figure(sse: float, pixels: int) -> float:
    """The LLGAE note's figure: per-pixel MSE on the 0..255 scale (= 255^2 SSE / pixels)."""
    return 255.0**2 * sse / pixels
