"""VQ-VAE and VAE: a conv encoder and decoder around a discrete or Gaussian code.

Both use the same encoder (two stride-2 convolutions, then average pooling to an m x m grid of
D-dimensional vectors) and the same decoder (the mirror image), so they differ only in the
bottleneck:

- ``VectorQuantizer`` (VQ-VAE): each grid vector z is replaced by its nearest codebook entry e
  (K entries). The decoder gets ``z + sg[e - z]`` (straight-through: the forward pass uses e, the
  gradient goes to z as if unquantised). The codebook loss ``||sg[z] - e||^2`` moves the codes,
  the commitment loss ``gamma ||z - sg[e]||^2`` (gamma = 0.25) keeps the encoder near them.
  Bits per image: m^2 log2 K.
- ``GaussianBottleneck`` (VAE): the encoder gives a mean and log-variance per latent; the
  decoder gets a reparameterised sample (the mean at evaluation) and the loss adds
  ``beta * KL(q(z|x) || N(0, I))``. Its rate is the KL in bits; beta sweeps it.

The reconstruction loss is the SSE per image (a Gaussian likelihood with variance 1/2), so the
VAE with beta = 1 maximises the ELBO.

References:

- van den Oord, Vinyals & Kavukcuoglu, Neural Discrete Representation Learning, 2017 (VQ-VAE).
- Kingma & Welling, Auto-Encoding Variational Bayes, 2014 (VAE).
- Higgins et al., beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework, 2017 (the KL weight).
- Bengio, Léonard & Courville, Estimating or Propagating Gradients Through Stochastic Neurons for
  Conditional Computation, 2013 (the straight-through estimator).
- the VAE and VQ-VAE study notes (Auto-Encoding Variational Bayes; VQ-VAE: Neural Discrete
  Representation Learning) and the VAE lecture notes (Generative model, Why VAE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from decoders.dictionary import kmeans_plus_plus

KINDS = ("vqvae", "vae")


class ConvEncoder(nn.Module):
    """``(N, C, S, S)`` images -> ``(N, out, m, m)`` features (S divisible by 4, m <= S/4)."""

    def __init__(self, channels: int, out_channels: int, grid: int, hidden: int = 64):
        super().__init__()
        self.grid = grid
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden // 2, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(images), self.grid)


class ConvDecoder(nn.Module):
    """``(N, in, m, m)`` codes -> ``(N, C, S, S)`` images in [0, 1]."""

    def __init__(self, channels: int, in_channels: int, image_size: int, hidden: int = 64):
        super().__init__()
        self.feature_size = image_size // 4
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 1, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.layers(F.interpolate(codes, size=self.feature_size, mode="nearest"))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of ``(N, D, m, m)`` onto a codebook ``(K, D)``."""

    def __init__(self, num_codes: int, dim: int, commitment: float = 0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) / math.sqrt(dim))
        self.commitment = commitment

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``vectors`` ``(M, D)``."""
        distances = (
            vectors.square().sum(1, keepdim=True) - 2 * vectors @ self.codebook.T + self.codebook.square().sum(1)
        )
        return distances.argmin(1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantised features, codes ``(N, m, m)``, and the codebook+commitment loss ``(N,)``."""
        batch, dim, rows, cols = features.shape
        vectors = features.permute(0, 2, 3, 1).reshape(-1, dim)
        codes = self.nearest(vectors.detach())
        quantised = self.codebook[codes].view(batch, rows, cols, dim).permute(0, 3, 1, 2)
        codebook_loss = (features.detach() - quantised).square().flatten(1).sum(1)
        commitment_loss = (features - quantised.detach()).square().flatten(1).sum(1)
        straight_through = features + (quantised - features).detach()
        return straight_through, codes.view(batch, rows, cols), codebook_loss + self.commitment * commitment_loss

    @torch.no_grad()
    def reseed(self, vectors: torch.Tensor, usage: torch.Tensor | None, generator: torch.Generator) -> int:
        """Codebook from k-means++ over ``vectors`` ``(M, D)`` (``usage`` None), or only unused codes
        moved to random vectors; returns how many codes changed."""
        if usage is None:
            centres, _ = kmeans_plus_plus(vectors.detach().cpu(), self.codebook.shape[0], generator, iterations=10)
            self.codebook.copy_(centres)
            return self.codebook.shape[0]
        dead = (usage == 0).nonzero().flatten()
        if dead.numel():
            pick = torch.randint(vectors.shape[0], (dead.numel(),), generator=generator)
            self.codebook[dead.to(self.codebook.device)] = vectors[pick].to(self.codebook)
        return dead.numel()


class GaussianBottleneck(nn.Module):
    """Mean and log-variance ``(N, D, m, m)`` each, from ``(N, 2D, m, m)`` features."""

    def forward(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample (training) or the mean (evaluation) and the KL to N(0, I) per image in nats ``(N,)``."""
        mean, log_variance = features.chunk(2, dim=1)
        log_variance = log_variance.clamp(-12.0, 8.0)
        kl = 0.5 * (mean.square() + log_variance.exp() - 1.0 - log_variance).flatten(1).sum(1)
        if not self.training:
            return mean, kl
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * log_variance).exp() * noise, kl


class Autoencoder(nn.Module):
    """VQ-VAE (``kind="vqvae"``) or VAE (``kind="vae"``) on ``channels`` x ``image_size``^2 images."""

    def __init__(
        self,
        kind: str,
        channels: int,
        image_size: int,
        grid: int = 7,
        dim: int = 16,
        num_codes: int = 52,
        commitment: float = 0.25,
        hidden: int = 64,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if image_size % 4 or not 1 <= grid <= image_size // 4:
            raise ValueError(f"need an image size divisible by 4 and 1 <= grid <= size/4, got {image_size} and {grid}")
        if num_codes < 2 and kind == "vqvae":
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        self.kind, self.grid, self.dim = kind, grid, dim
        self.settings = {
            "kind": kind,
            "channels": channels,
            "image_size": image_size,
            "grid": grid,
            "dim": dim,
            "num_codes": num_codes,
            "commitment": commitment,
            "hidden": hidden,
        }
        self.encoder = ConvEncoder(channels, dim * (2 if kind == "vae" else 1), grid, hidden)
        self.decoder = ConvDecoder(channels, dim, image_size, hidden)
        self.bottleneck = VectorQuantizer(num_codes, dim, commitment) if kind == "vqvae" else GaussianBottleneck()

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """``reconstruction``, ``penalty`` per image (VQ losses or KL in nats), and ``codes`` (VQ-VAE)."""
        features = self.encoder(images)
        if self.kind == "vqvae":
            quantised, codes, penalty = self.bottleneck(features)
            return {"reconstruction": self.decoder(quantised), "penalty": penalty, "codes": codes, "features": features}
        latent, kl = self.bottleneck(features, generator)
        return {"reconstruction": self.decoder(latent), "penalty": kl, "codes": None, "features": features}

    def bits_per_image(self, penalty: torch.Tensor | None = None) -> float:
        """VQ-VAE: m^2 log2 K. VAE: the mean KL (``penalty`` in nats) in bits."""
        if self.kind == "vqvae":
            return self.grid**2 * math.log2(self.bottleneck.codebook.shape[0])
        if penalty is None:
            raise ValueError("the VAE's rate is its KL: pass the penalty of an evaluation pass")
        return float(penalty.detach().mean()) / math.log(2.0)


def codes_for_bits(bits: float, grid: int) -> int:
    """Codebook size K whose m^2 log2 K is closest to ``bits``."""
    if bits <= 0:
        raise ValueError(f"bits must be > 0, got {bits}")
    return max(2, round(2.0 ** (bits / grid**2)))
