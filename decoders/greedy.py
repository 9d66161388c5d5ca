"""Greedy search, the beta -> infinity encoder: at each step take the action with the best reward.

All actions are scored at once with the kernel's ``placement_rewards`` (conv2d over the batch)
and the chosen one is carried out with the kernel's ``act_``, so greedy and the environment agree
on every action. Greedy is myopic: under last-write-wins occlusion the order of strokes matters.
"""

from __future__ import annotations

import torch

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry, act_, placement_rewards


def reachable(cursor: torch.Tensor, geometry: CanvasGeometry) -> torch.Tensor:
    """``(B, rows, cols)`` bool: positions one move of radius M away from each cursor."""
    rows = torch.arange(geometry.rows, device=cursor.device)
    cols = torch.arange(geometry.cols, device=cursor.device)
    near_row = (rows[None, :] - cursor[:, :1]).abs() <= geometry.move_radius
    near_col = (cols[None, :] - cursor[:, 1:]).abs() <= geometry.move_radius
    return near_row[:, :, None] & near_col[:, None, :]


@torch.no_grad()
def greedy_programs(
    targets: torch.Tensor, dictionary: PatchDictionary, geometry: CanvasGeometry, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy programs ``(B, T, 4)`` for targets ``(B, C, H, W)`` and their final canvases."""
    batch, channels = targets.shape[:2]
    device = targets.device
    values, support = (tensor.to(device) for tensor in dictionary.patches())
    levels = dictionary.num_levels
    target_flat = targets.reshape(batch, channels, -1)
    canvas = dictionary.start_canvas(targets).reshape(batch, channels, -1)
    cursor = torch.tensor(geometry.start, device=device).repeat(batch, 1)
    actions = []
    for _ in range(steps):
        scores = placement_rewards(targets, canvas.view_as(targets), values, support, geometry.patch_size)
        scores = scores.masked_fill(~reachable(cursor, geometry).unsqueeze(1), float("-inf"))
        best = scores.flatten(1).argmax(1)
        patch, place = best // (geometry.rows * geometry.cols), best % (geometry.rows * geometry.cols)
        goal = torch.stack((place // geometry.cols, place % geometry.cols), dim=1)
        action = torch.cat(
            [goal - cursor + geometry.move_radius, (patch // levels)[:, None], (patch % levels)[:, None]], 1
        )
        cursor, _ = act_(canvas, target_flat, cursor, action, values, support, levels, geometry)
        actions.append(action)
    return torch.stack(actions, dim=1), canvas.view_as(targets)
