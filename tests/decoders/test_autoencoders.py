"""VQ-VAE: straight-through gradients, codebook and commitment updates; the shared VAE bottleneck."""

import math

import pytest
import torch

from decoders.autoencoders import Autoencoder, GaussianBottleneck, VectorQuantizer, codes_for_bits


def test_quantiser_picks_nearest_code_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    quantiser = VectorQuantizer(num_codes=5, dim=3)
    features = torch.randn(2, 3, 4, 4, requires_grad=True)
    quantised, codes, _ = quantiser(features)
    vectors = features.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(codes.reshape(-1), torch.cdist(vectors, quantiser.codebook.detach()).argmin(1))
    torch.testing.assert_close(
        quantised.detach().permute(0, 2, 3, 1).reshape(-1, 3), quantiser.codebook.detach()[codes.reshape(-1)]
    )
    weights = torch.randn_like(quantised)
    (quantised * weights).sum().backward()
    assert quantised.shape == features.shape
    torch.testing.assert_close(features.grad, weights)
    assert quantiser.codebook.grad is None or (quantiser.codebook.grad == 0).all()


def test_codebook_loss_moves_only_used_codes_and_commitment_pulls_encoder():
    torch.manual_seed(1)
    quantiser = VectorQuantizer(num_codes=6, dim=2, commitment=0.25)
    features = (torch.randn(1, 2, 3, 1) + 5.0).requires_grad_(True)
    _, codes, penalty = quantiser(features)
    penalty.sum().backward()
    used = torch.zeros(6, dtype=torch.bool)
    used[codes.reshape(-1)] = True
    vectors = features.detach().permute(0, 2, 3, 1).reshape(-1, 2)
    expected = torch.zeros(6, 2).index_add_(
        0, codes.reshape(-1), 2 * (quantiser.codebook.detach()[codes.reshape(-1)] - vectors)
    )
    torch.testing.assert_close(quantiser.codebook.grad, expected)
    assert (quantiser.codebook.grad[~used] == 0).all()
    chosen = quantiser.codebook.detach()[codes.reshape(-1)].view(1, 3, 1, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(features.grad, 0.25 * 2 * (features.detach() - chosen))
    before = quantiser.codebook.detach().clone()
    with torch.no_grad():
        quantiser.codebook -= 0.1 * quantiser.codebook.grad
    after_distance = (quantiser.codebook.detach()[codes.reshape(-1)] - vectors).norm(dim=1)
    assert (after_distance < (before[codes.reshape(-1)] - vectors).norm(dim=1)).all()


def test_reseed_from_kmeans_and_dead_codes():
    quantiser = VectorQuantizer(num_codes=3, dim=2)
    vectors = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [-4.0, 2.0], [-4.0, 2.1]])
    generator = torch.Generator().manual_seed(0)
    assert quantiser.reseed(vectors, None, generator) == 3
    assert torch.cdist(vectors, quantiser.codebook.detach()).min(1).values.max() < 0.1
    assert quantiser.reseed(vectors, torch.tensor([2, 0, 4]), generator) == 1


def test_autoencoders_shapes_bits_and_gradients():
    images = torch.rand(3, 1, 28, 28)
    vq = Autoencoder("vqvae", channels=1, image_size=28, grid=4, dim=8, num_codes=16, hidden=16)
    out = vq(images)
    assert out["reconstruction"].shape == images.shape and out["codes"].shape == (3, 4, 4)
    assert vq.bits_per_image() == pytest.approx(16 * 4)
    loss = (out["reconstruction"] - images).square().sum() + out["penalty"].sum()
    loss.backward()
    assert vq.encoder.layers[0].weight.grad.abs().sum() > 0 and vq.bottleneck.codebook.grad.abs().sum() > 0
    vae = Autoencoder("vae", channels=1, image_size=28, grid=2, dim=4, hidden=16).eval()
    out = vae(images)
    assert out["reconstruction"].shape == images.shape and (out["penalty"] >= 0).all()
    assert vae.bits_per_image(out["penalty"]) == pytest.approx(out["penalty"].mean().item() / math.log(2))
    with pytest.raises(ValueError):
        Autoencoder("vqvae", channels=1, image_size=30)
    assert codes_for_bits(279.0, 7) == 52


def test_gaussian_kl_is_zero_at_the_prior_and_sampling_only_in_training():
    bottleneck = GaussianBottleneck()
    features = torch.zeros(2, 6, 1, 1)
    latent, kl = bottleneck.eval()(features)
    assert torch.equal(latent, torch.zeros(2, 3, 1, 1)) and torch.equal(kl, torch.zeros(2))
    latent, _ = bottleneck.train()(features, torch.Generator().manual_seed(0))
    assert latent.abs().sum() > 0
