"""Matched filters for the encoder: the reward of painting every patch at every position, kept up
to date step by step as an episode paints.

:func:`make_scorer` gives the scorer of one encoding pass: :class:`PlacementScorer` (block updates
around each painted window, with or without a plan to rewrite) or :class:`PlanScorer` (the whole
map recomputed, when a step's blocks would hold more positions than the map). Both answer
``best()`` (the best reward at each position), ``at(row, col)`` (every patch's reward at one
position) and ``painted(canvas, cursor)`` (one more step painted). They agree with the kernel's
``placement_rewards`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decoders.kernel import CanvasGeometry, cursor_path, ownership, placement_rewards, row_blocks, window_rows


class PlacementScorer:
    """The reward of painting every patch at every position, kept up to date cheaply.

    By the kernel's identity (see ``placement_rewards``) the reward of patch p with support m at a
    window is ``<m, c^2 - 2 x c> + [2 <x, p> - <1, p^2>]`` over the window (x target, c canvas).
    The bracket does not depend on the canvas: it is ``placement_rewards`` on a black canvas,
    computed once per episode. The first term, ``terms``, is zero on a black canvas and computed
    once over the whole map on a ``start`` canvas (a background colour). A step
    changes it only at the ``(2R-1)^2`` positions whose windows overlap the painted one, so
    :meth:`painted` recomputes that block (a small conv2d with the K distinct supports: the L code
    levels of a prototype share theirs) and the best reward there, and copies both in with the
    kernel's window copies: an encoding step costs less than with full-canvas maps.

    With a plan (the previous pass's program, see :func:`make_scorer`) a pixel counts only if the
    plan's later strokes leave it visible: at step t, ``v = owner <= t``, where ``owner`` says which
    plan step paints each pixel last (the kernel's ``ownership``, -1 for none). That is the reward
    a Gibbs move gives step t with the plan as the other steps. Both terms then carry ``v``: the
    bracket becomes ``2 <v x, p> - <v, p^2>``. Step t + 1 reveals pixels of the plan's window t + 1
    only, so :meth:`painted` also recomputes the block of positions around that window, for all
    K L patches.
    """

    def __init__(
        self,
        targets: torch.Tensor,
        values: torch.Tensor,
        support: torch.Tensor,
        num_levels: int,
        owner: torch.Tensor | None = None,
        plan_path: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ):
        batch, channels, height, width = targets.shape
        size = int(round(support.shape[-1] ** 0.5))
        self.targets, self.num_levels = targets, num_levels
        self.owner = None if owner is None else owner.view(batch, 1, height, width)
        self.plan_path, self.step = plan_path, 0
        self.visible = None if owner is None else (self.owner <= 0).to(targets.dtype)
        base = placement_rewards(targets, torch.zeros_like(targets), values, support, size, self.visible)
        rows, cols = base.shape[-2:]
        self.masks = support[::num_levels].to(targets.dtype).view(-1, 1, size, size)
        patch = values.reshape(-1, channels, size, size)
        self.bracket_filters = torch.cat([2 * patch, -patch.square().sum(1, keepdim=True)], dim=1)
        # The maps live on grids padded by R - 1 on each side, so that every update is a whole block:
        # energy pixels cursor..cursor+3R-3 feed the positions cursor-R+1..cursor+R-1.
        self._margin = margin = size - 1
        self._energy_grid = CanvasGeometry(height + 2 * margin, width + 2 * margin, 3 * size - 2, 0)
        self._grid = CanvasGeometry(rows + 2 * margin, cols + 2 * margin, 2 * size - 1, 0)
        self._base_best = F.pad(base.unflatten(1, (-1, num_levels)).amax(2), (margin,) * 4).flatten(2)
        self._terms = torch.zeros_like(self._base_best)
        if start is not None:
            energy = (start * (start - 2 * targets)).sum(1, keepdim=True)
            energy = energy if self.visible is None else energy * self.visible
            self._terms = F.pad(F.conv2d(energy, self.masks), (margin,) * 4).flatten(2)
        self._best = (self._base_best + self._terms).amax(1, keepdim=True)
        if owner is not None:  # the bracket changes block by block: pad it too
            self._base = F.pad(base, (margin,) * 4).flatten(2)
            base = self._real_positions(self._base)
        self.base, self.terms = base, self._real_positions(self._terms)

    def _real_positions(self, grid: torch.Tensor) -> torch.Tensor:
        """The view ``(B, n, rows, cols)`` of a padded flat map ``(B, n, padded rows * padded cols)``."""
        margin, padded = self._margin, self._grid
        square = grid.view(grid.shape[0], grid.shape[1], padded.height, padded.width)
        return square[:, :, margin : padded.height - margin, margin : padded.width - margin]

    def _block(self, images: torch.Tensor, corner: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """``(B, n, 2R-1, 2R-1)``: ``filters`` over the pixels that the windows of the positions
        around the window at ``corner`` ``(B, 2)`` cover, in ``images`` ``(B, C, H, W)``."""
        size = self._energy_grid.patch_size
        padded = F.pad(images, (self._margin,) * 4).flatten(2)
        region = _window(padded, corner, self._energy_grid).view(images.shape[0], images.shape[1], size, size)
        return F.conv2d(region, filters)

    def _write(self, grid: torch.Tensor, corner: torch.Tensor, block: torch.Tensor) -> None:
        _window(grid, corner, self._grid, block.reshape(-1, self._grid.patch_size))

    def _update_terms(self, energy: torch.Tensor, corner: torch.Tensor) -> None:
        """Recompute ``terms`` and the best reward at the positions around the window at ``corner``."""
        block = self._block(energy, corner, self.masks)
        self._write(self._terms, corner, block)
        base_best = _window(self._base_best, corner, self._grid).view_as(block)
        self._write(self._best, corner, (base_best + block).amax(1))

    def painted(self, canvas: torch.Tensor, cursor: torch.Tensor) -> None:
        """Bring the maps up to date with ``canvas`` ``(B, C, H, W)`` after one step painted the window
        whose top-left corner is ``cursor`` ``(B, 2)`` (and, with a plan, move on to the next step)."""
        energy = (canvas * (canvas - 2 * self.targets)).sum(1, keepdim=True)
        if self.owner is not None:
            self.step += 1
            self.visible = (self.owner <= self.step).to(energy.dtype)
            energy = energy * self.visible
            if self.step < self.plan_path.shape[1]:
                corner = self.plan_path[:, self.step]
                bracket = self._block(
                    torch.cat([self.visible * self.targets, self.visible], 1), corner, self.bracket_filters
                )
                self._write(self._base, corner, bracket)
                self._write(self._base_best, corner, bracket.unflatten(1, (-1, self.num_levels)).amax(2))
                self._update_terms(energy, corner)
        self._update_terms(energy, cursor)

    def best(self) -> torch.Tensor:
        """``(B, rows, cols)``: the reward of the best patch at each position (a copy: the next
        :meth:`painted` changes the map in place, and autograd may have saved this)."""
        return self._real_positions(self._best).squeeze(1).clone()

    def at(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """``(B, K*L)``: the reward of every patch at one position per batch element."""
        rows = torch.arange(row.shape[0], device=row.device)
        return self.base[rows, :, row, col] + self.terms[rows, :, row, col].repeat_interleave(self.num_levels, 1)

    def rewards(self) -> torch.Tensor:
        """``(B, K*L, rows, cols)``: the reward of every placement."""
        return self.base + self.terms.repeat_interleave(self.num_levels, 1)


class PlanScorer:
    """:class:`PlacementScorer`'s rewards with a plan, recomputed over the whole map at every step
    (one conv2d of the kernel's ``placement_rewards``, when first read): faster than its block
    updates when the two blocks of a step hold more positions than the map (large patches on a
    small canvas)."""

    def __init__(self, targets, values, support, owner: torch.Tensor, start: torch.Tensor | None = None):
        self.targets, self.values, self.support = targets, values, support
        self.owner = owner.view(targets.shape[0], 1, *targets.shape[-2:])
        self.size = int(round(support.shape[-1] ** 0.5))
        canvas = torch.zeros_like(targets) if start is None else start
        self.step, self.canvas, self._rewards = 0, canvas, None

    def painted(self, canvas: torch.Tensor, cursor: torch.Tensor) -> None:
        self.step, self.canvas, self._rewards = self.step + 1, canvas, None

    def rewards(self) -> torch.Tensor:
        if self._rewards is None:
            visible = (self.owner <= self.step).to(self.targets.dtype)
            self._rewards = placement_rewards(self.targets, self.canvas, self.values, self.support, self.size, visible)
        return self._rewards

    def best(self) -> torch.Tensor:
        return self.rewards().amax(1)

    def at(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return self.rewards()[torch.arange(row.shape[0], device=row.device), :, row, col]


def make_scorer(
    targets: torch.Tensor,
    values: torch.Tensor,
    support: torch.Tensor,
    num_levels: int,
    geometry: CanvasGeometry,
    plan: torch.Tensor | None = None,
    block_updates: bool | None = None,
    start: torch.Tensor | None = None,
) -> PlacementScorer | PlanScorer:
    """The scorer of an encoding pass that paints on ``start`` canvases (default black): of the
    whole canvas, or with a plan ``(B, T, 4)`` to rewrite, updated block by block or
    (``block_updates=False``; by default when the two blocks of a step would hold more positions
    than the map) over the whole map."""
    start = start if start is not None and bool(start.any()) else None  # black: nothing to add
    if plan is None:
        return PlacementScorer(targets, values, support, num_levels, start=start)
    owner, _ = ownership(plan, support, num_levels, geometry)
    if block_updates is None:
        block_updates = 2 * (2 * geometry.patch_size - 1) ** 2 < geometry.rows * geometry.cols
    if not block_updates:
        return PlanScorer(targets, values, support, owner, start)
    return PlacementScorer(targets, values, support, num_levels, owner, cursor_path(plan, geometry), start)


def _window(images: torch.Tensor, cursor: torch.Tensor, grid: CanvasGeometry, new: torch.Tensor | None = None):
    """The kernel's window copy on a flat map ``(B, n, H*W)`` of ``grid``'s size: read the window at
    each ``cursor`` ``(B, 2)`` as rows ``(B*n*R, R)``, or write ``new`` there."""
    blocks = row_blocks(images, grid.patch_size)
    rows = window_rows(images, cursor[:, 0] * grid.width + cursor[:, 1], grid)
    return blocks.index_select(0, rows) if new is None else blocks.index_copy_(0, rows, new)
