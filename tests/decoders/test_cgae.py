"""CGAE: the one-conv2d conditional equals brute force, residuals are never stale, usage stats."""

import torch

from decoders.cgae import CGAE, cgae_from_images, prototype_usage, reseed_unused, usage_entropy


def tiny_model(seed: int = 0, components: int = 3) -> CGAE:
    generator = torch.Generator().manual_seed(seed)
    return CGAE(torch.rand(2, 1, 3, 3, generator=generator), components, height=6, width=5)


def test_conditional_matches_brute_force():
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    residual = torch.randn(2, 1, 6, 5, generator=generator)
    beta = 0.7
    logits = model.conditional_logits(residual, beta)
    codes = torch.arange(model.null_code + 1)
    placed = model.reconstruct(codes.view(-1, 1)).detach()
    for image in range(2):
        brute = -beta * ((residual[image] - placed).square().flatten(1).sum(1) - residual[image].square().sum())
        wanted = torch.softmax(brute.double(), 0)
        got = torch.softmax(logits[image].double(), 0)
        got = torch.cat([got[: model.null_code], got[model.null_code :].sum().view(1)])
        torch.testing.assert_close(got, wanted, rtol=1e-5, atol=1e-7)


def test_placement_puts_prototype_at_its_position():
    model = tiny_model()
    k, i, j = 1, 2, 1
    image = model.reconstruct(torch.tensor([[k * model.num_positions + i * model.geometry.cols + j]])).detach()
    expected = torch.zeros(1, 6, 5)
    expected[:, i : i + 3, j : j + 3] = model.prototypes.detach()[k]
    torch.testing.assert_close(image[0], expected)


def test_gibbs_steps_never_use_stale_residuals():
    model = tiny_model(components=4)
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 1, 6, 5, generator=generator)
    codes = torch.randint(model.null_code + 1, (3, 4), generator=generator)
    residual = images - model.reconstruct(codes).detach()
    for _sweep in range(3):
        for component in range(4):
            before = codes.clone()
            model.gibbs_step(residual, codes, component, beta=2.0, generator=generator)
            changed = (codes != before).any(0).nonzero().flatten().tolist()
            assert set(changed) <= {component}
            torch.testing.assert_close(residual, images - model.reconstruct(codes).detach(), rtol=0, atol=1e-5)


def test_gibbs_chain_reaches_exact_reconstruction_when_beta_is_large():
    model = tiny_model(components=2)
    truth = torch.tensor([[0 * model.num_positions + 4, 1 * model.num_positions + 7]])
    images = model.reconstruct(truth).detach()
    codes, frames = model.gibbs(
        images, chains=4, sweeps=6, beta_start=1.0, beta_end=1e3, generator=torch.Generator().manual_seed(3), record=1
    )
    assert codes.shape == (1, 4, 2) and len(frames) == 6
    assert model.chain_sse(images, codes).min() < 1e-8


def test_kmeans_init_usage_entropy_and_reseeding():
    images = torch.zeros(20, 1, 10, 10)
    images[:, :, 2:6, 3:7] = 1.0
    images[10:, :, 5:9, 1:4] = 0.5
    model = cgae_from_images(images, num_prototypes=3, patch_size=3, components=2, seed=0, num_samples=500)
    assert model.prototypes.shape == (3, 1, 3, 3) and (model.prototypes.abs().sum((1, 2, 3)) > 0).all()
    codes = torch.tensor([[[0, model.num_positions]], [[model.null_code, 1]]])
    usage = prototype_usage(codes, model)
    assert usage.tolist() == [2, 1, 0]
    assert (
        abs(
            usage_entropy(usage) - (-(2 / 3) * torch.tensor(2 / 3).log2() - (1 / 3) * torch.tensor(1 / 3).log2()).item()
        )
        < 1e-6
    )
    before = model.prototypes.detach().clone()
    assert reseed_unused(model, usage, images, torch.Generator().manual_seed(0)) == 1
    assert torch.equal(model.prototypes[:2], before[:2]) and not torch.equal(model.prototypes[2], before[2])
