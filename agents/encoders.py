"""Encoders by name: callables that turn images ``(B, C, H, W)`` into programs ``(B, T, 4)``.

``build_encoder(name, checkpoint, painter, device)`` with ``name``:

- ``"policy"``: the trained RNN policy of a ``train.reinforce`` checkpoint, decoding each factor
  of the action by its most likely value; a Stable-Baselines3 ``.zip`` agent goes through
  ``agents.sb3.encoder.sb3_programs``;
- ``"greedy"``: greedy search (beta -> infinity) with the painter's dictionary;
- ``"gibbs"``: Gibbs refinement (``agents.gibbs.refine_programs``) of the policy's programs when
  the checkpoint has a policy, of greedy's otherwise;
- ``"greedy-gibbs"``: Gibbs refinement of greedy search's programs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from agents.gibbs import SWEEPS as GIBBS_SWEEPS
from agents.gibbs import refine_programs
from agents.policy import PainterPolicy, PolicyConfig
from agents.rollout import rollout
from decoders.greedy import greedy_programs
from decoders.storage import load_checkpoint
from painter_env.config import Painter

ENCODERS = ("policy", "greedy", "gibbs", "greedy-gibbs")
CHECKPOINT_KIND = "painter-reinforce"

Encoder = Callable[[torch.Tensor], torch.Tensor]


def load_policy(checkpoint: dict, device: torch.device | str) -> PainterPolicy:
    """The policy stored in a ``train.reinforce`` checkpoint, in eval mode on ``device``; a new,
    untrained one of the same configuration when the checkpoint's ``policy`` is None."""
    policy = PainterPolicy(PolicyConfig(**checkpoint["policy_config"]))
    if checkpoint["policy"] is not None:
        policy.load_state_dict(checkpoint["policy"])
    return policy.to(device).eval()


def policy_encoder(policy: PainterPolicy, painter: Painter, samples: int = 1, seed: int = 0) -> Encoder:
    """Programs written by the policy: the most likely value of each factor of each action, or with
    ``samples`` > 1 the best (lowest SSE) of that program and ``samples - 1`` sampled ones.

    The decoder is exact and cheap, so the encoder can check its candidates: best-of-N is a small
    search with the policy as proposal, N times slower.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    config, geometry = policy.config, painter.geometry
    wanted = (
        config.height,
        config.width,
        config.patch_size,
        config.move_radius,
        config.num_prototypes,
        config.num_levels,
    )
    have = (
        geometry.height,
        geometry.width,
        geometry.patch_size,
        geometry.move_radius,
        painter.dictionary.num_prototypes,
        painter.dictionary.num_levels,
    )
    if wanted != have:
        raise ValueError(f"the policy was trained for (H, W, R, M, K, L) = {wanted} but the painter has {have}")

    generator = torch.Generator(images_device(policy)).manual_seed(seed)

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        best = rollout(policy, images, painter.dictionary, geometry, painter.max_steps, mode="greedy")
        best_sse = (images - best.canvas).square().flatten(1).sum(1)
        actions = best.actions
        for _ in range(samples - 1):
            other = rollout(policy, images, painter.dictionary, geometry, painter.max_steps, generator=generator)
            sse = (images - other.canvas).square().flatten(1).sum(1)
            better = sse < best_sse
            actions = torch.where(better[:, None, None], other.actions, actions)
            best_sse = torch.minimum(sse, best_sse)
        return actions

    return encode


def images_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def build_encoder(
    name: str,
    checkpoint: str | Path | dict | None,
    painter: Painter,
    device: torch.device | str,
    gibbs_sweeps: int = GIBBS_SWEEPS,
    policy_samples: int = 1,
) -> Encoder:
    """The encoder ``name`` for ``painter`` (its dictionary, geometry and number of steps);
    ``policy_samples`` > 1 makes the policy keep the best of that many programs per image."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}: choose one of {ENCODERS}")
    if name == "policy" and isinstance(checkpoint, (str, Path)) and str(checkpoint).endswith(".zip"):
        from agents.sb3.encoder import sb3_programs

        return lambda images: sb3_programs(str(checkpoint), images, painter, device)
    payload = load_checkpoint(checkpoint, CHECKPOINT_KIND) if isinstance(checkpoint, (str, Path)) else checkpoint
    has_policy = isinstance(payload, dict) and "policy_config" in payload
    if name == "policy" and not has_policy:
        raise ValueError("the policy encoder needs a train.reinforce checkpoint (--checkpoint)")
    greedy = lambda images: greedy_programs(images, painter.dictionary, painter.geometry, painter.max_steps)[0]  # noqa: E731
    proposal = policy_encoder(load_policy(payload, device), painter, policy_samples) if has_policy else greedy
    if name in ("policy", "greedy"):
        return proposal if name == "policy" else greedy
    if name == "greedy-gibbs":
        proposal = greedy
    generator = torch.Generator(device).manual_seed(0)  # Gibbs sampling is reproducible run to run

    def gibbs(images: torch.Tensor) -> torch.Tensor:
        return refine_programs(
            images, proposal(images), painter.dictionary, painter.geometry, sweeps=gibbs_sweeps, generator=generator
        )

    return gibbs
