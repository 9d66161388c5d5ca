"""Gibbs refinement of painter programs: resample one action at a time given all the others.

Starting from a program written by the policy or by greedy search, each sweep visits steps
t = 0..T-1 and redraws step t's (position, patch) from ``softmax(beta * reward)``, where the
reward of a candidate is the SSE decrease it gives *given every other step* under last-write-
wins compositing: the candidate paints over the canvas of steps 0..t-1, and pixels that a later
step covers do not count. All candidates are scored at once by the kernel's
``placement_rewards`` (one conv2d). beta is annealed from ``beta_start`` to ``beta_end`` over the
sweeps (large beta is greedy coordinate ascent).

A sweep costs one conv2d and one painting step per step: the canvas of steps 0..t-1 is painted
incrementally with the kernel's ``act_``, and which pixels later steps cover comes from one
``ownership`` call at the start of the sweep (a pixel is covered after step t iff its last painter
comes after t; the steps after t have not been visited yet, so this holds throughout the sweep).

Actions are relative moves. The program is worked on in absolute cursor positions (the
kernel's ``cursor_path``, so clamped moves are resolved exactly as the painter resolves them)
and re-expressed as moves after every sweep. Candidates for step t are restricted to positions
within one move (radius M) of both neighbours, so the re-expressed moves are always valid and
never clamped.

Every image keeps the best program seen (the input included), so the result is never worse.

References:
    Geman & Geman, Stochastic Relaxation, Gibbs Distributions, and the Bayesian Restoration of
    Images, 1984.
"""

from __future__ import annotations

import torch

from decoders.dictionary import PatchDictionary
from decoders.greedy import reachable
from decoders.kernel import CanvasGeometry, act_, cursor_path, decode, ownership, patch_ids, placement_rewards
from decoders.sampling import beta_schedule, sample_categorical

SWEEPS = 8  # the default number of sweeps, wherever programs are refined


def positions_to_actions(
    path: torch.Tensor, ids: torch.Tensor, num_levels: int, geometry: CanvasGeometry
) -> torch.Tensor:
    """Programs ``(B, T, 4)`` that visit absolute cursors ``path`` ``(B, T, 2)`` and paint patches ``ids``."""
    start = torch.tensor(geometry.start, device=path.device).expand(path.shape[0], 1, 2)
    previous = torch.cat([start, path[:, :-1]], dim=1)
    moves = path - previous + geometry.move_radius
    if ((moves < 0) | (moves > 2 * geometry.move_radius)).any():
        raise ValueError("cursor path has a jump longer than the move radius")
    return torch.cat([moves, (ids // num_levels).unsqueeze(-1), (ids % num_levels).unsqueeze(-1)], dim=-1)


def program_sse(
    targets: torch.Tensor,
    actions: torch.Tensor,
    values: torch.Tensor,
    support: torch.Tensor,
    num_levels: int,
    geometry: CanvasGeometry,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """SSE ``(B,)`` of each program's painting (on the ``start`` canvases, default black) against its target."""
    canvas = decode(actions, values, support, num_levels, geometry, start)
    return (targets - canvas).square().flatten(1).sum(1)


def _sweep(targets, start, path, ids, values, support, levels, geometry, beta, generator) -> None:
    """One Gibbs sweep over the steps of the programs ``path``/``ids`` (changed in place)."""
    batch, steps = ids.shape
    height, width = geometry.height, geometry.width
    owner, _ = ownership(positions_to_actions(path, ids, levels, geometry), support, levels, geometry)
    target_flat = targets.reshape(batch, targets.shape[1], -1)
    canvas = start.reshape(batch, targets.shape[1], -1).clone()
    cursor = torch.tensor(geometry.start, device=targets.device).expand(batch, 2)
    places = geometry.rows * geometry.cols
    for step in range(steps):
        visible = (owner <= step).to(targets.dtype).view(batch, 1, height, width)
        rewards = placement_rewards(targets, canvas.view_as(targets), values, support, geometry.patch_size, visible)
        allowed = reachable(cursor, geometry)
        if step + 1 < steps:
            allowed = allowed & reachable(path[:, step + 1], geometry)
        allowed = allowed.unsqueeze(1)
        logits = (beta * rewards).masked_fill_(~allowed, float("-inf")).flatten(1)
        choice = sample_categorical(logits, generator, consume=True)
        place = choice % places
        ids[:, step] = choice // places
        path[:, step] = torch.stack((place // geometry.cols, place % geometry.cols), dim=1)
        move = path[:, step] - cursor + geometry.move_radius
        action = torch.cat([move, (ids[:, step] // levels)[:, None], (ids[:, step] % levels)[:, None]], dim=1)
        cursor, _ = act_(canvas, target_flat, cursor, action, values, support, levels, geometry)


@torch.no_grad()
def refine_programs(
    targets: torch.Tensor,
    actions: torch.Tensor,
    dictionary: PatchDictionary,
    geometry: CanvasGeometry,
    sweeps: int = SWEEPS,
    beta_start: float = 1.0,
    beta_end: float = 100.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gibbs-refined programs ``(B, T, 4)`` for ``targets`` ``(B, C, H, W)``; per image never worse."""
    if actions.dim() != 3 or actions.shape[-1] != 4 or actions.shape[0] != targets.shape[0]:
        raise ValueError(f"actions must have shape (B, T, 4) with B = {targets.shape[0]}, got {tuple(actions.shape)}")
    if targets.shape[-2:] != (geometry.height, geometry.width):
        raise ValueError(
            f"targets are {tuple(targets.shape[-2:])} but the geometry is {geometry.height}x{geometry.width}"
        )
    if sweeps < 0:
        raise ValueError(f"sweeps must be >= 0, got {sweeps}")
    device = targets.device
    values, support = (tensor.to(device) for tensor in dictionary.patches())
    levels = dictionary.num_levels
    actions = actions.to(device)
    path, ids = cursor_path(actions, geometry), patch_ids(actions, levels)
    start = dictionary.start_canvas(targets)
    best = positions_to_actions(path, ids, levels, geometry)
    best_sse = program_sse(targets, best, values, support, levels, geometry, start)
    for beta in beta_schedule(beta_start, beta_end, sweeps):
        _sweep(targets, start, path, ids, values, support, levels, geometry, beta, generator)
        current = positions_to_actions(path, ids, levels, geometry)
        sse = program_sse(targets, current, values, support, levels, geometry, start)
        better = sse < best_sse
        best[better], best_sse = current[better], torch.where(better, sse, best_sse)
    return best
