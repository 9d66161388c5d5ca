"""Action masks of ``Painter-v0``: one action per reachable position.

A move ``(di, dj)`` takes the cursor to ``(row + di - M, col + dj - M)`` clamped to the canvas, so
near an edge several moves land on the same position: every move past the edge lands where the
move onto the edge does. The mask keeps, of each such group, only the move that is not clamped.
Rows and columns are clamped independently, so the mask factorises over the two move components
and comes in the flat per-component layout of sb3-contrib's ``MaskablePPO``: for
``MultiDiscrete([2M+1, 2M+1, K, L])`` the ``2(2M+1) + K + L`` booleans of ``di``, ``dj``, ``k``
and ``b`` one after the other (every prototype and level stays allowed).
"""

from __future__ import annotations

import torch

from decoders.kernel import CanvasGeometry


def move_masks(cursor: torch.Tensor, geometry: CanvasGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 2M+1)`` bool masks of the row moves and of the column moves from cursors ``(B, 2)``:
    True where the move is not clamped by the canvas edge."""
    offsets = torch.arange(-geometry.move_radius, geometry.move_radius + 1, device=cursor.device)
    row = cursor[:, :1] + offsets
    col = cursor[:, 1:] + offsets
    return (row >= 0) & (row < geometry.rows), (col >= 0) & (col < geometry.cols)


def action_masks(cursor: torch.Tensor, geometry: CanvasGeometry, num_prototypes: int, num_levels: int) -> torch.Tensor:
    """``(B, 2(2M+1) + K + L)`` bool: the flat per-component action mask for cursors ``(B, 2)``."""
    rows, cols = move_masks(cursor, geometry)
    patches = torch.ones(cursor.shape[0], num_prototypes + num_levels, dtype=torch.bool, device=cursor.device)
    return torch.cat([rows, cols, patches], dim=1)
