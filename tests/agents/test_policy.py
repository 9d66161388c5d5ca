"""The RNN policy and its rollouts: scores, log-probabilities, sampling, env agreement."""

from __future__ import annotations

import gymnasium
import pytest
import torch

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.gibbs import positions_to_actions, program_sse
from agents.policy import PolicyConfig, policy_for
from agents.rollout import draft, env_rollout, rollout
from agents.scorers import make_scorer
from decoders.dictionary import PatchDictionary
from decoders.greedy import reachable
from decoders.kernel import (
    CanvasGeometry,
    act_,
    cursor_path,
    decode,
    move_cursor,
    ownership,
    patch_ids,
    placement_rewards,
)

GEOMETRY = CanvasGeometry(8, 8, 3, 2)


def _dictionary(seed=0, prototypes=3, levels=2):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.rand(prototypes, 1, 3, 3, generator=generator)
    basis = 0.3 * torch.randn(prototypes, 1, 3, 3, generator=generator)
    mask = torch.rand(prototypes, 1, 3, 3, generator=generator) > 0.3
    return PatchDictionary(mean, basis, mask, num_levels=levels)


def _policy(dictionary, seed=0, passes=1):
    torch.manual_seed(seed)
    sizes = dict(hidden_size=16, feature_size=8, passes=passes)
    return policy_for(GEOMETRY, dictionary, **sizes)


def _targets(count=6, seed=1):
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("background", [False, True], ids=["black", "background"])
@pytest.mark.parametrize("with_plan, block_updates", [(False, None), (True, True), (True, False)])
def test_scorer_kept_up_to_date_step_by_step_matches_placement_rewards(with_plan, block_updates, background):
    """After each painted step (windows at the edges too) the scorer agrees with a full recomputation;
    with a plan, one that counts only the pixels the plan's later steps leave visible; on a black
    canvas or one that starts in a background colour."""
    dictionary, targets = _dictionary(), _targets()
    values, support = (tensor.detach() for tensor in dictionary.patches())
    generator = torch.Generator().manual_seed(2)
    high = torch.tensor([GEOMETRY.num_moves, GEOMETRY.num_moves, dictionary.num_prototypes, dictionary.num_levels])
    plan = (torch.rand(6, 13, 4, generator=generator) * high).long() if with_plan else None
    start = torch.rand(6, 1, 1, 1, generator=generator).expand(6, 1, 8, 8).contiguous() if background else None
    scorer = make_scorer(targets, values, support, dictionary.num_levels, GEOMETRY, plan, block_updates, start)
    owner = ownership(plan, support, dictionary.num_levels, GEOMETRY)[0].view(6, 1, 8, 8) if with_plan else None
    canvas = torch.zeros(6, 1, 64) if start is None else start.reshape(6, 1, 64).clone()
    cursor = torch.tensor(GEOMETRY.start).repeat(6, 1)
    visible = (owner <= 0).float() if with_plan else None
    expected = placement_rewards(targets, canvas.view_as(targets), values, support, 3, visible)
    assert torch.allclose(scorer.best(), expected.amax(1), atol=1e-5)  # before the first step too
    row, col = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([5, 4, 3, 2, 1, 0])
    corners = set()
    for step in range(1, 13):
        actions = (torch.rand(6, 4, generator=generator) * high).long()
        cursor, _ = act_(canvas, targets.flatten(2), cursor, actions, values, support, dictionary.num_levels, GEOMETRY)
        scorer.painted(canvas.view_as(targets), cursor)
        corners.update(map(tuple, cursor.tolist()))
        visible = (owner <= step).float() if with_plan else None
        expected = placement_rewards(targets, canvas.view_as(targets), values, support, 3, visible)
        assert torch.allclose(scorer.best(), expected.amax(1), atol=1e-5)
        assert torch.allclose(scorer.at(row, col), expected[torch.arange(6), :, row, col], atol=1e-5)
    last = GEOMETRY.rows - 1
    assert {0, last} <= {i for i, _ in corners} and {0, last} <= {j for _, j in corners}  # the edges were painted


@pytest.mark.parametrize("block_updates", [True, False])
def test_plan_scorer_rewards_are_the_sse_decrease_of_the_program_with_the_plan_after_the_step(block_updates):
    """At step t of a rewrite, a stroke's reward is (up to a constant) minus the SSE of the program made
    of the rewrite's steps before t, that stroke, and the plan's steps after t where the plan put them."""
    geometry = CanvasGeometry(6, 6, 3, 3)  # every position is one move away
    dictionary, targets = _dictionary(), _targets(2)[..., :6, :6]
    values, support = (tensor.detach() for tensor in dictionary.patches())
    generator = torch.Generator().manual_seed(7)
    high = torch.tensor([geometry.num_moves, geometry.num_moves, dictionary.num_prototypes, dictionary.num_levels])
    plan, prefix = ((torch.rand(2, 4, 4, generator=generator) * high).long() for _ in range(2))
    plan_path, plan_ids = cursor_path(plan, geometry), patch_ids(plan, dictionary.num_levels)
    prefix_path, prefix_ids = cursor_path(prefix, geometry), patch_ids(prefix, dictionary.num_levels)
    scorer = make_scorer(targets, values, support, dictionary.num_levels, geometry, plan, block_updates)
    canvas, cursor = torch.zeros(2, 1, 36), torch.tensor(geometry.start).repeat(2, 1)
    for step in range(4):
        rewards = scorer.at(*(torch.zeros(2, dtype=torch.long),) * 2)  # the same rewards seen through `at`...
        grid = scorer.rewards()  # ...and in full
        assert torch.allclose(rewards, grid[:, :, 0, 0])
        assert torch.allclose(scorer.best(), grid.amax(1))
        for image in range(2):
            brute = torch.empty_like(grid[image])
            for patch in range(dictionary.num_patches):
                for i in range(geometry.rows):
                    for j in range(geometry.cols):
                        path = torch.cat(
                            [prefix_path[image, :step], torch.tensor([[i, j]]), plan_path[image, step + 1 :]]
                        )
                        ids = torch.cat([prefix_ids[image, :step], torch.tensor([patch]), plan_ids[image, step + 1 :]])
                        program = positions_to_actions(path[None], ids[None], dictionary.num_levels, geometry)
                        brute[patch, i, j] = -program_sse(
                            targets[image : image + 1], program, values, support, dictionary.num_levels, geometry
                        )[0]
            difference = grid[image] - brute
            torch.testing.assert_close(difference, difference.mean().expand_as(difference), rtol=0, atol=1e-4)
        cursor, _ = act_(
            canvas, targets.flatten(2), cursor, prefix[:, step], values, support, dictionary.num_levels, geometry
        )
        scorer.painted(canvas.view_as(targets), cursor)


def test_a_policy_with_two_passes_rewrites_its_own_most_likely_program():
    """The draft is the first pass's most likely program; the rewrite reads it, and (the plan's later
    strokes occluding) writes a different program for some images: it does not copy the draft."""
    dictionary, targets = _dictionary(), _targets()
    policy = _policy(dictionary, passes=2)
    with torch.no_grad():
        plan = draft(policy, targets, dictionary, GEOMETRY, 4)
        first = rollout(policy, targets, dictionary, GEOMETRY, 4, mode="greedy", plan=None)
        single = _policy(dictionary, passes=1)
        assert torch.equal(plan, rollout(single, targets, dictionary, GEOMETRY, 4, mode="greedy").actions)
        assert torch.equal(
            first.actions, rollout(policy, targets, dictionary, GEOMETRY, 4, mode="greedy", plan=plan).actions
        )
    rewritten = (first.actions != plan).flatten(1).any(1)
    assert rewritten.any(), "the rewrite copied the draft on every image"
    assert draft(single, targets, dictionary, GEOMETRY, 4) is None
    with pytest.raises(ValueError, match="passes"):
        PolicyConfig(1, 8, 8, 3, 2, 3, 2, passes=0)


def test_without_its_learned_terms_the_rewrite_takes_the_best_plan_aware_stroke_at_every_step():
    """With the matched-filter terms dominating (a large ``score_scale``), each step of the rewrite's
    most likely program is the argmax, over reachable positions and patches, of the plan-aware
    rewards (the draft's later strokes hiding what they paint over), and that program is not the
    draft: a rewrite that copied the draft, or scored strokes without the plan, would fail."""
    dictionary, targets = _dictionary(), _targets()
    torch.manual_seed(0)
    policy = policy_for(GEOMETRY, dictionary, hidden_size=16, feature_size=8, passes=2, score_scale=1e4)
    values, support = (tensor.detach() for tensor in dictionary.patches())
    positions = GEOMETRY.rows * GEOMETRY.cols
    with torch.no_grad():
        plan = draft(policy, targets, dictionary, GEOMETRY, 4)
        rewrite = rollout(policy, targets, dictionary, GEOMETRY, 4, mode="greedy", plan=plan).actions
        scorer = make_scorer(targets, values, support, dictionary.num_levels, GEOMETRY, plan)
        canvas, cursor = torch.zeros(6, 1, 64), torch.tensor(GEOMETRY.start).repeat(6, 1)
        for step in range(4):
            grid = scorer.rewards().masked_fill(~reachable(cursor, GEOMETRY)[:, None], -torch.inf)
            best = grid.flatten(1).argmax(1)
            patch, position = best // positions, best % positions
            reached = move_cursor(cursor, rewrite[:, step, :2], GEOMETRY)
            assert torch.equal(reached[:, 0] * GEOMETRY.cols + reached[:, 1], position), f"step {step}"
            assert torch.equal(patch_ids(rewrite[:, step], dictionary.num_levels), patch), f"step {step}"
            cursor, _ = act_(
                canvas, targets.flatten(2), cursor, rewrite[:, step], values, support, dictionary.num_levels, GEOMETRY
            )
            scorer.painted(canvas.view_as(targets), cursor)
    assert (rewrite != plan).flatten(1).any(1).any(), "the rewrite copied the draft on every image"


def test_rollout_rewards_and_canvas_agree_with_decode():
    dictionary, targets = _dictionary(), _targets()
    out = rollout(_policy(dictionary), targets, dictionary, GEOMETRY, 5, generator=torch.Generator().manual_seed(0))
    values, support = dictionary.patches()
    canvas = decode(out.actions, values.detach(), support, dictionary.num_levels, GEOMETRY)
    assert torch.allclose(out.canvas, canvas, atol=1e-6)
    blank, final = targets.square().flatten(1).sum(1), (targets - canvas).square().flatten(1).sum(1)
    assert torch.allclose(out.rewards.sum(1), blank - final, atol=1e-4)


@pytest.mark.parametrize("passes", [1, 2])
def test_scoring_given_programs_reproduces_the_sampled_log_probabilities(passes):
    dictionary, targets = _dictionary(), _targets()
    policy = _policy(dictionary, passes=passes)
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


@pytest.mark.parametrize("passes", [1, 2])
def test_first_action_frequencies_match_the_policy_probabilities(passes):
    """Sampling is exact: chi-square of 4000 first actions of one image against exp(log_prob)."""
    dictionary = _dictionary()
    policy = _policy(dictionary, passes=passes)
    policy.log_position_scale.data.fill_(0.0)
    policy.log_patch_scale.data.fill_(0.0)
    targets = _targets(1).expand(4000, -1, -1, -1)
    with torch.no_grad():
        out = rollout(policy, targets, dictionary, GEOMETRY, 2, generator=torch.Generator().manual_seed(5))
    codes = out.actions[:, 0] @ torch.tensor([1000, 100, 10, 1])
    unique, counts = codes.unique(return_counts=True)
    first = torch.cat([(codes == u).nonzero()[:1, 0] for u in unique])
    expected = out.log_probs[first, 0].exp() * 4000
    keep = expected > 5
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    assert float(out.log_probs[first, 0].exp().sum()) <= 1 + 1e-4
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, f"chi2 {chi2:.1f} with {dof} degrees of freedom"


@pytest.mark.parametrize("passes", [1, 2])
def test_env_rollout_agrees_with_the_kernel_rollout(passes, small_painter):
    env = gymnasium.make_vec("Painter-v0", num_envs=5, **small_painter).unwrapped
    dictionary, steps = env.painter.dictionary, env.painter.max_steps
    torch.manual_seed(0)
    sizes = dict(hidden_size=16, passes=passes)
    policy = policy_for(env.painter.geometry, dictionary, **sizes)
    with torch.no_grad():
        targets, from_env = env_rollout(policy, env, indices=torch.arange(5), mode="greedy")
        direct = rollout(policy, targets, dictionary, env.painter.geometry, steps, mode="greedy")
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
