"""The estimators against exact gradients on a problem small enough to enumerate every program.

4x4 canvas, 2x2 patches, K=2 prototypes, L=1 level, move radius 1, T=2 steps: 18 actions per
step, 324 programs. The encoder is a tabular autoregressive policy (logits for step 1, logits
for step 2 given action 1), the decoder the two patches' values. Exact objectives are sums over
all programs, differentiated by autograd. Monte-Carlo gradients are computed exactly as the
trainer does, by back-propagating the estimator's surrogate into its inputs (``log_probs``,
``sse``); since each input entry belongs to one enumerated program, the per-replicate parameter
gradient is that back-propagated weight times the program's Jacobian. The tolerance of each
comparison is derived from the sample variance of the replicates (z-scores).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from agents.estimators import SampleBatch, iw, reinforce, returns_to_go, vimco
from decoders.kernel import CanvasGeometry, act_, decode

GEOMETRY = CanvasGeometry(4, 4, 2, 1)
K, STEPS, BETA = 2, 2, 1.0


def _problem():
    generator = torch.Generator().manual_seed(0)
    step_actions = torch.tensor(list(itertools.product(range(3), range(3), range(K), range(1))))
    count = step_actions.shape[0]
    pairs = torch.cartesian_prod(torch.arange(count), torch.arange(count))
    programs = step_actions[pairs]  # (P, T, 4)
    theta1 = (0.7 * torch.randn(count, generator=generator, dtype=torch.float64)).requires_grad_()
    theta2 = (0.7 * torch.randn(count, count, generator=generator, dtype=torch.float64)).requires_grad_()
    values = (0.2 + 0.6 * torch.rand(K, 1, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    support = torch.tensor([[[True, True, True, True]], [[True, False, True, True]]])
    target = torch.rand(1, 1, 4, 4, generator=generator, dtype=torch.float64)

    def log_prob_table(t1, t2):
        return torch.stack([t1.log_softmax(0)[pairs[:, 0]], t2.log_softmax(1)[pairs[:, 0], pairs[:, 1]]], dim=1)

    def sse_table(v):
        canvas = decode(programs, v, support, 1, GEOMETRY)
        return (target - canvas).square().flatten(1).sum(1)

    # Per-step rewards painted with the kernel, as a rollout would.
    canvas = torch.zeros(len(programs), 1, 16, dtype=torch.float64)
    target_flat = target.reshape(1, 1, 16).expand(len(programs), -1, -1)
    cursor = torch.tensor(GEOMETRY.start).repeat(len(programs), 1)
    rewards = []
    for t in range(STEPS):
        cursor, reward = act_(canvas, target_flat, cursor, programs[:, t], values.detach(), support, 1, GEOMETRY)
        rewards.append(reward)
    rewards = torch.stack(rewards, 1)

    log_q = log_prob_table(theta1, theta2)
    sse = sse_table(values)
    jac_q = torch.autograd.functional.jacobian(log_prob_table, (theta1, theta2), vectorize=True)
    jac_q = torch.cat([jac_q[0].flatten(2), jac_q[1].flatten(2)], dim=2)  # (P, T, D_e)
    jac_sse = torch.autograd.functional.jacobian(sse_table, values, vectorize=True).flatten(1)  # (P, D_m)
    return dict(
        theta=(theta1, theta2),
        values=values,
        log_q=log_q,
        sse=sse,
        rewards=rewards,
        jac_q=jac_q,
        jac_sse=jac_sse,
        sse0=float(target.square().sum()),
        first=pairs[:, 0],
    )


PROBLEM = _problem()


def _flat_grad(objective):
    params = (*PROBLEM["theta"], PROBLEM["values"])
    grads = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])


def _exact_reinforce():
    q = PROBLEM["log_q"].sum(1).exp()
    return _flat_grad((q * -BETA * PROBLEM["sse"]).sum())


def _exact_iw():
    return _flat_grad((PROBLEM["log_q"].sum(1) - BETA * PROBLEM["sse"]).logsumexp(0))


def _exact_vimco_two_samples():
    q = PROBLEM["log_q"].sum(1).exp()
    f = -BETA * PROBLEM["sse"]
    bound = torch.logaddexp(f[:, None], f[None, :]) - math.log(2)
    return _flat_grad((q[:, None] * q[None, :] * bound).sum())


def _replicate_gradients(estimator, samples: int, replicates: int, seed: int, **kwargs) -> torch.Tensor:
    """Per-replicate gradients ``(M, D)`` of the objective (minus the surrogate's gradient)."""
    generator = torch.Generator().manual_seed(seed)
    probabilities = PROBLEM["log_q"].detach().sum(1).exp()
    index = torch.multinomial(probabilities.expand(replicates, -1), samples, replacement=True, generator=generator)
    log_probs = PROBLEM["log_q"].detach()[index].clone().requires_grad_()
    sse = PROBLEM["sse"].detach()[index].clone().requires_grad_()
    reference = kwargs.pop("reference_table", None)
    batch = SampleBatch(
        log_probs,
        PROBLEM["rewards"][index],
        sse,
        values=kwargs.pop("values_table", None),
        reference_rewards=None if reference is None else reference.expand(replicates, -1),
    )
    if batch.values is not None:
        batch.values = batch.values[index]
    surrogate = estimator(batch, beta=BETA, **kwargs)
    weight_q, weight_sse = torch.autograd.grad(surrogate.loss * replicates, (log_probs, sse))
    programs, steps = len(PROBLEM["sse"]), STEPS
    coefficients = torch.zeros(replicates, programs * steps, dtype=torch.float64)
    slots = (index.unsqueeze(2) * steps + torch.arange(steps)).flatten(1)
    coefficients.scatter_add_(1, slots, weight_q.flatten(1))
    encoder = coefficients @ PROBLEM["jac_q"].reshape(programs * steps, -1)
    sse_coefficients = torch.zeros(replicates, programs, dtype=torch.float64).scatter_add_(1, index, weight_sse)
    decoder = sse_coefficients @ PROBLEM["jac_sse"]
    return -torch.cat([encoder, decoder], dim=1)


def _assert_unbiased(gradients: torch.Tensor, exact: torch.Tensor) -> None:
    mean, std = gradients.mean(0), gradients.std(0)
    error = (mean - exact).abs()
    varies = std > 1e-10
    assert torch.all(error[~varies] < 1e-8), "constant components must match exactly"
    z = error[varies] / (std[varies] / math.sqrt(gradients.shape[0]))
    assert z.max() < 5.0, f"largest z-score {z.max():.2f}"
    assert z.square().mean() < 1.3, f"mean squared z-score {z.square().mean():.2f} (about 1 if unbiased)"


def test_rewards_telescope_to_the_final_sse():
    assert torch.allclose(PROBLEM["rewards"].sum(1), PROBLEM["sse0"] - PROBLEM["sse"].detach())


def test_returns_to_go():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(returns_to_go(rewards), torch.tensor([[6.0, 5.0, 3.0]]))


@pytest.mark.parametrize("baseline", ["loo", "none", "moving-average", "value", "self-critical"])
def test_reinforce_is_unbiased(baseline):
    kwargs = {"baseline": baseline}
    if baseline == "self-critical":
        # The rewards of one fixed program: like the policy's most likely program, not a function of the samples.
        kwargs["reference_table"] = PROBLEM["rewards"][PROBLEM["sse"].argmin()]
    if baseline == "moving-average":
        kwargs["moving_average"] = torch.tensor([1.5, 0.7], dtype=torch.float64)
    if baseline == "value":
        # Any function of the history before the step: here of the first action, at step 2.
        table = torch.stack([torch.full((18,), 0.9), torch.linspace(-1, 2, 18)], 1).double()
        kwargs["values_table"] = table[PROBLEM["first"]]
    gradients = _replicate_gradients(reinforce, samples=4, replicates=20000, seed=1, **kwargs)
    _assert_unbiased(gradients, _exact_reinforce())


@pytest.mark.parametrize("per_step", [True, False])
def test_vimco_is_unbiased_for_the_two_sample_bound(per_step):
    gradients = _replicate_gradients(vimco, samples=2, replicates=20000, seed=2, per_step=per_step)
    _assert_unbiased(gradients, _exact_vimco_two_samples())


def _expected_gradient_over_sample_pairs(estimator, **kwargs) -> torch.Tensor:
    """The estimator's exact expected gradient with S=2: every pair of programs, weighted by its probability."""
    programs = len(PROBLEM["sse"])
    index = torch.cartesian_prod(torch.arange(programs), torch.arange(programs))  # (P^2, 2)
    probability = PROBLEM["log_q"].detach().sum(1)[index].sum(1).exp()
    log_probs = PROBLEM["log_q"].detach()[index].clone().requires_grad_()
    sse = PROBLEM["sse"].detach()[index].clone().requires_grad_()
    surrogate = estimator(SampleBatch(log_probs, PROBLEM["rewards"][index], sse), beta=BETA, **kwargs)
    weight_q, weight_sse = torch.autograd.grad(surrogate.loss * len(index), (log_probs, sse))
    slots = (index.unsqueeze(2) * STEPS + torch.arange(STEPS)).flatten()
    weighted = (weight_q * probability.view(-1, 1, 1)).flatten()
    encoder = torch.zeros(programs * STEPS, dtype=torch.float64).scatter_add_(0, slots, weighted)
    decoder = torch.zeros(programs, dtype=torch.float64).scatter_add_(
        0, index.flatten(), (weight_sse * probability.view(-1, 1)).flatten()
    )
    return -torch.cat([encoder @ PROBLEM["jac_q"].reshape(programs * STEPS, -1), decoder @ PROBLEM["jac_sse"]])


def test_iw_per_step_control_variate_keeps_the_expected_gradient():
    """Exactly, over all 324^2 pairs of samples: the per-step control variate has mean zero."""
    per_step = _expected_gradient_over_sample_pairs(iw, per_step=True)
    per_program = _expected_gradient_over_sample_pairs(iw)
    assert float(per_step.norm()) > 0.01
    torch.testing.assert_close(per_step, per_program, rtol=0, atol=1e-12)


def test_iw_approaches_the_exact_gradient_as_samples_grow():
    exact = _exact_iw()
    errors = {}
    for samples in (2, 8, 64):
        gradients = _replicate_gradients(iw, samples=samples, replicates=4000, seed=3)
        errors[samples] = float((gradients.mean(0) - exact).norm())
        noise = float(gradients.var(0).sum().sqrt() / math.sqrt(gradients.shape[0]))
    assert errors[64] < errors[8] < errors[2]
    assert errors[64] < 0.1 * errors[2]
    assert errors[64] < 0.2 * float(exact.norm()) + 3 * noise


def test_gradient_variance_ordering():
    """Trace of the encoder-gradient covariance at the same number of samples (S=4).

    Measured: reinforce without baseline 0.99, reinforce with leave-one-out baseline 0.26,
    iw 0.17 per program and 0.13 per step, vimco 0.34 per step and 0.43 per program. Refining the
    signals per step removes a fifth of their variance even with T=2, but REINFORCE's per-step
    leave-one-out baseline still beats VIMCO on this problem.
    """
    encoder = PROBLEM["jac_q"].shape[2]
    variance = {
        name: float(_replicate_gradients(fn, samples=4, replicates=8000, seed=4, **kwargs)[:, :encoder].var(0).sum())
        for name, fn, kwargs in (
            ("reinforce-none", reinforce, {"baseline": "none"}),
            ("reinforce-loo", reinforce, {}),
            ("iw", iw, {}),
            ("iw-step", iw, {"per_step": True}),
            ("vimco-step", vimco, {"per_step": True}),
            ("vimco", vimco, {}),
        )
    }
    print("encoder gradient variance (trace), S=4:", variance)
    assert variance["iw-step"] < 0.9 * variance["iw"] < variance["reinforce-loo"] < variance["reinforce-none"]
    assert variance["vimco-step"] < 0.9 * variance["vimco"] < variance["reinforce-none"]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="sse"):
        SampleBatch(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        reinforce(SampleBatch(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 1)), baseline="loo")
    with pytest.raises(ValueError, match="baseline"):
        reinforce(SampleBatch(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), torch.zeros(2, 2)), baseline="median")
    with pytest.raises(ValueError, match="reference_rewards"):
        reinforce(SampleBatch(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), torch.zeros(2, 2)), baseline="self-critical")
    with pytest.raises(ValueError, match="reference_rewards must be"):
        SampleBatch(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), torch.zeros(2, 2), reference_rewards=torch.zeros(2, 3))


def test_vimco_with_two_samples_is_reinforce_loo_plus_the_bound_gap_term():
    """With S=2 and d = f_1 - f_2, VIMCO's signal softplus(d) - log 2 splits exactly into the
    per-program leave-one-out advantage d/2 and log cosh(d/2) >= 0, a term on both samples' scores
    that estimates the gradient of the bound's Jensen gap E[log cosh(d/2)]. So VIMCO's variance is
    that of REINFORCE with a per-program leave-one-out baseline, plus the term's, plus their
    covariance: it need not be below REINFORCE-loo's, and is not everywhere
    (``benchmarks.estimator_variance``)."""
    f = torch.tensor([[-0.3, -2.0], [1.5, 0.25], [0.0, 0.0]], dtype=torch.float64)
    batch = SampleBatch(torch.zeros(3, 2, 1, dtype=torch.float64), torch.zeros(3, 2, 1, dtype=torch.float64), -f)
    signal = vimco(batch).signal.squeeze(2)
    d = f[:, :1] - f[:, 1:]
    advantage = torch.cat([d, -d], 1) / 2
    torch.testing.assert_close(signal, advantage + torch.cosh(d / 2).log(), rtol=0, atol=1e-12)


def test_a_batch_concatenated_and_split_gives_back_its_parts():
    parts = [
        SampleBatch(torch.randn(2, 3, 4), torch.full((2, 3, 4), float(value)), torch.randn(2, 3)) for value in (1, 2)
    ]
    joined = SampleBatch.concatenate(parts)
    assert joined.rewards[:, 0, 0].tolist() == [1, 1, 2, 2] and joined.entropy is None
    for part, rows in zip(parts, joined.halves()):
        assert torch.equal(joined.rows(rows).log_probs, part.log_probs)
