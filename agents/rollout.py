"""Batched rollouts of the policy: directly with the painting kernel, or on the native vector env.

Both paths act with the kernel's ``act_``, so they agree action for action (tested). The
kernel path is what training uses: no env bookkeeping, and it can score given programs
(teacher forcing), which the exact-gradient tests and ``train.evaluate`` need.

A policy with ``passes`` > 1 first writes its draft (:func:`draft`, the earlier passes, each the
most likely program given the one before); the rollout is the last pass, which rewrites it. The
draft is a deterministic function of the image, so q_e(z|x) is the last pass's distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.estimators import SampleBatch
from agents.gibbs import program_sse
from agents.policy import PainterPolicy
from agents.scorers import make_scorer
from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry, act_, patch_ids


@dataclass
class Rollout:
    """Programs of a batch of episodes and what the policy and the painter said about them.

    ``actions`` ``(B, T, 4)``; ``log_probs``, ``entropy``, ``values`` ``(B, T)`` (with gradient
    to the policy); ``rewards`` ``(B, T)`` (the SSE decrease of each step, detached);
    ``canvas`` ``(B, C, H, W)`` the final canvases (detached).
    """

    actions: torch.Tensor
    log_probs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    canvas: torch.Tensor


def _stack(actions, log_probs, entropy, values, rewards, canvas) -> Rollout:
    return Rollout(
        torch.stack(actions, 1),
        torch.stack(log_probs, 1),
        torch.stack(entropy, 1),
        torch.stack(values, 1),
        torch.stack(rewards, 1),
        canvas,
    )


def draft(
    policy: PainterPolicy, targets: torch.Tensor, dictionary: PatchDictionary, geometry: CanvasGeometry, steps: int
) -> torch.Tensor | None:
    """The program ``(B, T, 4)`` the policy's last pass rewrites (None with one pass): its earlier
    passes in turn, each the most likely program given the previous one."""
    plan = None
    with torch.no_grad():
        for _ in range(policy.config.passes - 1):
            plan = _one_pass(policy, targets, dictionary, geometry, steps, None, "greedy", None, plan).actions
    return plan


def rollout(
    policy: PainterPolicy,
    targets: torch.Tensor,
    dictionary: PatchDictionary,
    geometry: CanvasGeometry,
    steps: int,
    actions: torch.Tensor | None = None,
    mode: str = "sample",
    generator: torch.Generator | None = None,
    plan: torch.Tensor | None = None,
) -> Rollout:
    """Run the policy on targets ``(B, C, H, W)`` for ``steps`` steps, painting with the kernel.

    With ``actions`` ``(B, T, 4)`` the policy scores those programs instead of choosing its own.
    A policy with several passes rewrites ``plan``, by default its :func:`draft` of the targets.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if actions is not None and (
        actions.dim() != 3 or actions.shape[0] != targets.shape[0] or actions.shape[1] != steps
    ):
        raise ValueError(f"actions must have shape ({targets.shape[0]}, {steps}, 4), got {tuple(actions.shape)}")
    if plan is None:
        plan = draft(policy, targets, dictionary, geometry, steps)
    return _one_pass(policy, targets, dictionary, geometry, steps, actions, mode, generator, plan)


def _one_pass(policy, targets, dictionary, geometry, steps, actions, mode, generator, plan) -> Rollout:
    """One pass of the policy over the steps, rewriting ``plan`` if given."""
    batch, channels = targets.shape[:2]
    device = targets.device
    with torch.no_grad():
        values, support = (tensor.to(device) for tensor in dictionary.patches())
    target_flat = targets.reshape(batch, channels, -1)
    start = dictionary.start_canvas(targets)
    canvas = start.reshape(batch, channels, -1).clone()
    cursor = torch.tensor(geometry.start, device=device).repeat(batch, 1)
    hidden, previous = policy.initial_state(batch, device)
    with torch.no_grad():
        scorer = make_scorer(targets, values, support, dictionary.num_levels, geometry, plan, start=start)
    record = ([], [], [], [], [])
    for t in range(steps):
        out = policy.step(
            targets,
            canvas.view_as(targets),
            cursor,
            hidden,
            previous,
            t / steps,
            scorer,
            action=None if actions is None else actions[:, t],
            mode=mode,
            generator=generator,
        )
        cursor, reward = act_(canvas, target_flat, cursor, out.action, values, support, dictionary.num_levels, geometry)
        with torch.no_grad():
            scorer.painted(canvas.view_as(targets), cursor)
        previous = patch_ids(out.action, dictionary.num_levels)
        hidden = out.hidden
        for store, value in zip(record, (out.action, out.log_prob, out.entropy, out.value, reward)):
            store.append(value)
    return _stack(*record, canvas.view_as(targets))


def env_rollout(
    policy: PainterPolicy,
    env,
    indices: torch.Tensor | None = None,
    mode: str = "sample",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Rollout]:
    """One episode of every env of a ``PainterVectorEnv`` (``gymnasium.make_vec(...).unwrapped``).

    Resets the env (on images ``indices`` if given) and returns the targets and the rollout.
    Observations are the env's buffers (flat images), so the policy reads them before the next
    step and the targets are cloned.
    """
    painter = env.painter
    shape = (env.num_envs,) + tuple(painter.data.images.shape[1:])
    observation, _ = env.reset(options=None if indices is None else {"indices": indices})
    targets = observation["target"].view(shape).clone()
    hidden, previous = policy.initial_state(env.num_envs, env.device)
    plan = draft(policy, targets, painter.dictionary, painter.geometry, painter.max_steps)
    with torch.no_grad():
        values, support = (tensor.to(env.device) for tensor in painter.dictionary.patches())
        start = observation["canvas"].view(shape).clone()
        scorer = make_scorer(
            targets, values, support, painter.dictionary.num_levels, painter.geometry, plan, start=start
        )
    record = ([], [], [], [], [])
    for t in range(painter.max_steps):
        out = policy.step(
            targets,
            observation["canvas"].view(shape),
            observation["cursor"],
            hidden,
            previous,
            t / painter.max_steps,
            scorer,
            mode=mode,
            generator=generator,
        )
        observation, reward, _, _, _ = env.step(out.action)
        with torch.no_grad():
            scorer.painted(observation["canvas"].view(shape), observation["cursor"])
        previous, hidden = patch_ids(out.action, painter.dictionary.num_levels), out.hidden
        for store, value in zip(record, (out.action, out.log_prob, out.entropy, out.value, reward)):
            store.append(value)
    return targets, _stack(*record, observation["canvas"].view(shape).clone())


def sample_batch(
    policy: PainterPolicy,
    dictionary: PatchDictionary,
    targets: torch.Tensor,
    geometry: CanvasGeometry,
    steps: int,
    samples: int,
    generator: torch.Generator | None = None,
    reference: bool = False,
    fit_dictionary: bool = True,
    mode: str = "sample",
) -> tuple[SampleBatch, Rollout]:
    """``samples`` programs per image of ``targets`` ``(N, C, H, W)``, as the estimators' input, and
    the rollout of all ``N * samples`` of them (image-major); ``mode="greedy"``: the most likely ones.

    A policy with several passes drafts each image once and every sample rewrites that draft.
    ``reference`` adds the step rewards of the policy's most likely program (the self-critical
    baseline); the SSE is differentiable in the dictionary when it is ``fit_dictionary``.
    """
    count = targets.shape[0]
    plan = draft(policy, targets, dictionary, geometry, steps)
    repeated = targets.repeat_interleave(samples, 0)
    repeated_plan = None if plan is None else plan.repeat_interleave(samples, 0)
    out = rollout(policy, repeated, dictionary, geometry, steps, mode=mode, generator=generator, plan=repeated_plan)
    reference_rewards = None
    if reference:
        with torch.no_grad():  # the most likely program: what the encoder will output at test time
            reference_rewards = rollout(policy, targets, dictionary, geometry, steps, mode="greedy", plan=plan).rewards
    values, support = dictionary.patches()
    values = values if fit_dictionary else values.detach()
    start = dictionary.start_canvas(repeated)
    sse = program_sse(repeated, out.actions, values, support, dictionary.num_levels, geometry, start)
    shape = (count, samples, steps)
    batch = SampleBatch(
        out.log_probs.view(shape),
        out.rewards.view(shape),
        sse.view(count, samples),
        out.entropy.view(shape),
        out.values.view(shape),
        reference_rewards,
    )
    return batch, out
