"""The RNN policy and its rollouts: scores, log-probabilities, sampling, env agreement."""

from __future__ import annotations

import gymnasium
import pytest
import torch

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.policy import PlacementScorer, policy_for
from agents.rollout import env_rollout, rollout
from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry, act_, cursor_path, decode, placement_rewards

GEOMETRY = CanvasGeometry(8, 8, 3, 2)


def _dictionary(seed=0, prototypes=3, levels=2):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.rand(prototypes, 1, 3, 3, generator=generator)
    basis = 0.3 * torch.randn(prototypes, 1, 3, 3, generator=generator)
    mask = torch.rand(prototypes, 1, 3, 3, generator=generator) > 0.3
    return PatchDictionary(mean, basis, mask, num_levels=levels)


def _policy(dictionary, seed=0):
    torch.manual_seed(seed)
    return policy_for(GEOMETRY, 1, dictionary.num_prototypes, dictionary.num_levels, hidden_size=16, feature_size=8)


def _targets(count=6, seed=1):
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_scorer_kept_up_to_date_step_by_step_matches_placement_rewards():
    """After each painted step (windows at the edges too) the scorer agrees with a full recomputation."""
    dictionary, targets = _dictionary(), _targets()
    values, support = (tensor.detach() for tensor in dictionary.patches())
    scorer = PlacementScorer(targets, values, support, dictionary.num_levels)
    generator = torch.Generator().manual_seed(2)
    canvas, cursor = torch.zeros(6, 1, 64), torch.tensor(GEOMETRY.start).repeat(6, 1)
    row, col = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([5, 4, 3, 2, 1, 0])
    corners = set()
    for _ in range(12):
        high = torch.tensor([GEOMETRY.num_moves, GEOMETRY.num_moves, dictionary.num_prototypes, dictionary.num_levels])
        actions = (torch.rand(6, 4, generator=generator) * high).long()
        cursor, _ = act_(canvas, targets.flatten(2), cursor, actions, values, support, dictionary.num_levels, GEOMETRY)
        scorer.painted(canvas.view_as(targets), cursor)
        corners.update(map(tuple, cursor.tolist()))
        expected = placement_rewards(targets, canvas.view_as(targets), values, support, 3)
        assert torch.allclose(scorer.best(), expected.amax(1), atol=1e-5)
        assert torch.allclose(scorer.at(row, col), expected[torch.arange(6), :, row, col], atol=1e-5)
    last = GEOMETRY.rows - 1
    assert {0, last} <= {i for i, _ in corners} and {0, last} <= {j for _, j in corners}  # the edges were painted


def test_rollout_rewards_and_canvas_agree_with_decode():
    dictionary, targets = _dictionary(), _targets()
    out = rollout(_policy(dictionary), targets, dictionary, GEOMETRY, 5, generator=torch.Generator().manual_seed(0))
    values, support = dictionary.patches()
    canvas = decode(out.actions, values.detach(), support, dictionary.num_levels, GEOMETRY)
    assert torch.allclose(out.canvas, canvas, atol=1e-6)
    blank, final = targets.square().flatten(1).sum(1), (targets - canvas).square().flatten(1).sum(1)
    assert torch.allclose(out.rewards.sum(1), blank - final, atol=1e-4)


def test_scoring_given_programs_reproduces_the_sampled_log_probabilities():
    dictionary, targets = _dictionary(), _targets()
    policy = _policy(dictionary)
    sampled = rollout(policy, targets, dictionary, GEOMETRY, 4, generator=torch.Generator().manual_seed(3))
    scored = rollout(policy, targets, dictionary, GEOMETRY, 4, actions=sampled.actions)
    assert torch.equal(scored.actions, sampled.actions)
    assert torch.allclose(scored.log_probs, sampled.log_probs, atol=1e-5)


def test_moves_are_never_clamped_and_stay_in_the_action_space():
    dictionary, targets = _dictionary(), _targets(32)
    out = rollout(_policy(dictionary), targets, dictionary, GEOMETRY, 6, generator=torch.Generator().manual_seed(4))
    path = cursor_path(out.actions, GEOMETRY)
    previous = torch.cat([torch.tensor(GEOMETRY.start).expand(32, 1, 2), path[:, :-1]], dim=1)
    assert torch.equal(path - previous + GEOMETRY.move_radius, out.actions[..., :2])
    high = torch.tensor([GEOMETRY.num_moves, GEOMETRY.num_moves, dictionary.num_prototypes, dictionary.num_levels])
    assert ((out.actions >= 0) & (out.actions < high)).all()


def test_first_action_frequencies_match_the_policy_probabilities():
    """Sampling is exact: chi-square of 4000 first actions of one image against exp(log_prob)."""
    dictionary = _dictionary()
    policy = _policy(dictionary)
    policy.log_position_scale.data.fill_(0.0)
    policy.log_patch_scale.data.fill_(0.0)
    targets = _targets(1).expand(4000, -1, -1, -1)
    with torch.no_grad():
        out = rollout(policy, targets, dictionary, GEOMETRY, 1, generator=torch.Generator().manual_seed(5))
    codes = out.actions[:, 0] @ torch.tensor([1000, 100, 10, 1])
    unique, counts = codes.unique(return_counts=True)
    first = torch.cat([(codes == u).nonzero()[:1, 0] for u in unique])
    expected = out.log_probs[first, 0].exp() * 4000
    keep = expected > 5
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    assert float(out.log_probs[first, 0].exp().sum()) <= 1 + 1e-4
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


def test_env_rollout_agrees_with_the_kernel_rollout():
    env = gymnasium.make_vec("Painter-v0", num_envs=5, image_size=12, patch_size=4, max_steps=3).unwrapped
    dictionary = env.painter.dictionary
    torch.manual_seed(0)
    policy = policy_for(env.painter.geometry, 1, dictionary.num_prototypes, dictionary.num_levels, hidden_size=16)
    with torch.no_grad():
        targets, from_env = env_rollout(policy, env, indices=torch.arange(5), mode="greedy")
        direct = rollout(policy, targets, dictionary, env.painter.geometry, 3, mode="greedy")
    assert torch.equal(from_env.actions, direct.actions)
    assert torch.allclose(from_env.rewards, direct.rewards, atol=1e-5)
    assert torch.allclose(from_env.canvas, direct.canvas, atol=1e-6)


def test_bad_arguments_raise_value_errors():
    dictionary, targets = _dictionary(), _targets()
    policy = _policy(dictionary)
    with pytest.raises(ValueError, match="mode"):
        rollout(policy, targets, dictionary, GEOMETRY, 2, mode="best")
    with pytest.raises(ValueError, match="actions must have shape"):
        rollout(policy, targets, dictionary, GEOMETRY, 2, actions=torch.zeros(6, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="steps"):
        rollout(policy, targets, dictionary, GEOMETRY, 0)
