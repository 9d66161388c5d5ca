"""LLGAE: the inner loop is the damped iteration towards the ridge code, gradients flow through it."""

import torch

from decoders.llgae import LLGAE, center_images, llgae_from_points, ridge_codes, seed_figure


def random_model(n_step: int, beta: float = 0.05, seed: int = 0) -> tuple[LLGAE, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    model = LLGAE(torch.randn(3, 12, generator=generator), torch.randn(3, 12, 4, generator=generator), beta, n_step)
    return model, torch.randn(5, 12, generator=generator)


def test_inner_loop_matches_its_closed_form_for_every_step_count():
    """b_n = sum_{i<n} A^i beta W^T (x - mu) with A = I - beta (W^T W + I): the decay term included."""
    for n_step in (0, 1, 3, 7):
        model, points = random_model(n_step)
        got = model.codes(points).detach()
        basis = model.basis.detach()
        eye = torch.eye(4)
        step = eye - model.beta * (basis.transpose(1, 2) @ basis + eye)
        drive = model.beta * torch.einsum("kde,nkd->nke", basis, points.unsqueeze(1) - model.mean.detach())
        expected, power = torch.zeros_like(drive), eye.expand(3, 4, 4)
        for _ in range(n_step):
            expected = expected + torch.einsum("kef,nkf->nke", power, drive)
            power = power @ step
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_inner_loop_converges_to_ridge_solution_as_steps_grow():
    model, points = random_model(n_step=1, beta=0.02)
    target = ridge_codes(model, points)
    errors = []
    for n_step in (5, 50, 2000):
        model.n_step = n_step
        errors.append((model.codes(points).detach() - target).norm().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3 * target.norm().item()


def test_best_component_is_chosen_and_gradients_flow_through_inner_loop():
    model, points = random_model(n_step=3)
    reconstruction, best, codes = model(points)
    decoded = model.mean + torch.einsum("kde,nke->nkd", model.basis, model.codes(points))
    errors = (points.unsqueeze(1) - decoded).square().sum(-1)
    assert torch.equal(best, errors.argmin(1))
    loss = (points - reconstruction).square().sum()
    loss.backward()
    through = model.basis.grad.clone()
    model.zero_grad()
    detached = model.mean + torch.einsum("kde,nke->nkd", model.basis, model.codes(points).detach())
    (points - detached[torch.arange(5), best]).square().sum().backward()
    assert not torch.allclose(through, model.basis.grad, atol=1e-4)


def test_lgae_initialised_from_pca_nearly_projects_on_the_principal_subspace():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(200, 3, generator=generator) @ torch.randn(3, 10, generator=generator)
    points = points + 0.01 * torch.randn(200, 10, generator=generator)
    model = llgae_from_points(points, components=1, code_size=3, beta=0.01, n_step=5)
    reconstruction, best, _ = model(points)
    assert (best == 0).all()
    relative = (points - reconstruction).square().sum() / (points - points.mean(0)).square().sum()
    assert relative < 0.02


def test_centering_and_seed_figure_scale():
    images = torch.rand(4, 1, 5, 5)
    centred, means = center_images(images)
    torch.testing.assert_close(centred.mean(1), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(centred + means, images.flatten(1))
    assert abs(seed_figure(9.26, 784) - 768.2) < 0.5
