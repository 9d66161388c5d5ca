"""The fused multi-categorical distribution against SB3's, and the policy class that uses it."""

import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import MultiCategoricalDistribution

from agents.sb3 import PainterVecEnv, painter_policy_kwargs
from agents.sb3.distributions import FusedMultiCategoricalDistribution, PainterMultiInputPolicy
from agents.sb3.encoder import load_sb3_model

DIMS = [5, 5, 3, 1]
SMALL = dict(image_size=10, patch_size=3, max_steps=3, max_shapes=2, move_radius=2, split="test")


def both(logits: torch.Tensor):
    return (
        MultiCategoricalDistribution(DIMS).proba_distribution(logits),
        FusedMultiCategoricalDistribution(DIMS).proba_distribution(logits),
    )


def test_log_prob_entropy_and_mode_equal_sb3s():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, sum(DIMS), generator=generator) * 4
    logits[:5, :5] = torch.tensor([0.0, 0.0, 50.0, 50.0, -50.0])  # ties and near-zero probabilities
    logits[5, 5:10] = float("-inf")
    logits[5, 7] = 1.0  # a component with one possible value
    reference, fused = both(logits)
    actions = torch.stack([torch.randint(0, n, (200,), generator=generator) for n in DIMS], 1)
    actions[5, 1] = 2
    torch.testing.assert_close(fused.log_prob(actions), reference.log_prob(actions), rtol=0, atol=1e-5)
    torch.testing.assert_close(fused.log_prob(actions.float()), reference.log_prob(actions), rtol=0, atol=1e-5)
    torch.testing.assert_close(fused.entropy(), reference.entropy(), rtol=0, atol=1e-5)
    assert torch.equal(fused.mode(), reference.mode())
    assert torch.equal(fused.get_actions(deterministic=True), reference.get_actions(deterministic=True))
    sampled, log_prob = FusedMultiCategoricalDistribution(DIMS).log_prob_from_params(logits)
    torch.testing.assert_close(log_prob, reference.log_prob(sampled), rtol=0, atol=1e-5)


def test_entropy_gradient_equals_sb3s():
    """PPO and A2C train on the entropy: its gradient must be SB3's too, -inf logits included."""
    logits = torch.randn(50, sum(DIMS), generator=torch.Generator().manual_seed(1)) * 4
    logits[:5, :5] = torch.tensor([0.0, 0.0, 50.0, 50.0, -50.0])  # a log-probability below -87
    logits[5, 5:10] = float("-inf")
    logits[5, 7] = 1.0
    gradients = []
    for distribution in (MultiCategoricalDistribution(DIMS), FusedMultiCategoricalDistribution(DIMS)):
        leaf = logits.clone().requires_grad_()
        distribution.proba_distribution(leaf).entropy().sum().backward()
        gradients.append(leaf.grad)
    assert bool(gradients[1].isfinite().all())
    torch.testing.assert_close(gradients[1], gradients[0], rtol=0, atol=1e-5)


def test_samples_follow_the_same_law():
    torch.manual_seed(0)
    draws = 20_000
    logits = torch.randn(1, sum(DIMS)) * 2
    reference, _ = both(logits)
    samples = FusedMultiCategoricalDistribution(DIMS).proba_distribution(logits.expand(draws, -1)).sample()
    assert samples.dtype == torch.long and samples.shape == (draws, len(DIMS))
    for component, (dist, n) in enumerate(zip(reference.distribution, DIMS)):
        probs = dist.probs[0]
        frequencies = torch.bincount(samples[:, component], minlength=n).float() / draws
        assert frequencies.shape == (n,)  # no draw outside the component's values
        # Five standard deviations of a frequency from `draws` independent draws.
        tolerance = 5 * (probs * (1 - probs) / draws).sqrt() + 1e-6
        assert bool(((frequencies - probs).abs() <= tolerance).all()), (component, frequencies, probs)


def test_one_sided_logits_never_draw_impossible_values():
    logits = torch.full((1000, sum(DIMS)), float("-inf"))
    logits[:, [4, 9, 12, 13]] = 0.0  # only the last value of each component is possible
    samples = FusedMultiCategoricalDistribution(DIMS).proba_distribution(logits).sample()
    assert torch.equal(samples, torch.tensor(DIMS).expand(1000, -1) - 1)


@pytest.mark.parametrize("algorithm", [PPO, A2C])
def test_policy_uses_the_fused_distribution_learns_and_reloads(tmp_path, algorithm):
    torch.set_num_threads(1)
    venv = PainterVecEnv(8, horizon_is_terminal=True, **SMALL)
    batch = {"batch_size": 32} if algorithm is PPO else {}  # PPO: one rollout (4 steps x 8 envs) per minibatch
    model = algorithm(
        PainterMultiInputPolicy,
        venv,
        policy_kwargs=painter_policy_kwargs(cnn_features=16, channels=4),
        n_steps=4,
        seed=0,
        **batch,
    )
    assert isinstance(model.policy.action_dist, FusedMultiCategoricalDistribution)
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = load_sb3_model(tmp_path / "model.zip")
    assert isinstance(loaded.policy.action_dist, FusedMultiCategoricalDistribution)
    observation = venv.reset()
    assert (
        loaded.predict(observation, deterministic=True)[0] == model.predict(observation, deterministic=True)[0]
    ).all()
