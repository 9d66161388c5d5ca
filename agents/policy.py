"""The RNN encoder q_e(z|x): a recurrent policy that writes a painting program one action at a time.

Each step it looks at the residual x - c and the canvas through two cheap lenses, both laid out
on the grid of cursor positions (``rows x cols``):

- *matched filters*: the reward of painting every dictionary patch at every position (the
  kernel's ``placement_rewards`` identity, no gradient; :class:`PlacementScorer` keeps it up to
  date step by step). The encoder uses the decoder to compute the residual, as the CGAE design
  note suggests, and the greedy choice is easy to represent, so learning starts from a sensible
  policy;
- a small CNN over the residual and the canvas, average-pooled over each patch window, which
  lets the policy see beyond the immediate reward (what a stroke will occlude, what is left).

With ``passes`` > 1 the encoder plans: a first pass writes a draft, and each further pass
rewrites the previous pass's program step by step, scoring every stroke only on the pixels that
the draft's later strokes leave visible (:class:`PlacementScorer` with a plan). That is the
conditional a Gibbs move uses, with the draft standing in for the rest of the program: the
encoder sees what its next strokes will occlude. Each pass is one forward pass per step; there is
no search.

A GRU carries the history (previous patch, cursor, step) into the decision. The action is
sampled autoregressively, as the design note describes the local RNN encoder: the row move
``di``, then the column move ``dj`` given ``di``, then the prototype ``k`` and code ``b`` of the
patch at the new position (``k`` first, then ``b`` given ``k``). Every factor is a
``torch.distributions.Categorical``. Moves that the canvas edge would clamp onto an
already-reachable position get probability zero, so each position has exactly one action.

References:
    the CGAE design note (卷积生成式自编码器 CGAE, draft: the encoder that calls the decoder, the
    local RNN moves); Xia et al., Deliberation Networks: Sequence Generation Beyond One-Pass
    Decoding, 2017 (a second decoding pass that reads the first pass's draft).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from agents.greedy import reachable
from decoders.kernel import (
    CanvasGeometry,
    cursor_path,
    move_cursor,
    ownership,
    placement_rewards,
    row_blocks,
    window_rows,
)

NEGATIVE = -1e9


@dataclass(frozen=True)
class PolicyConfig:
    """Shapes of the action space and sizes of the network (stored in checkpoints)."""

    channels: int
    height: int
    width: int
    patch_size: int
    move_radius: int
    num_prototypes: int
    num_levels: int
    hidden_size: int = 64
    feature_size: int = 16
    cnn_channels: int = 8
    score_scale: float = 50.0
    passes: int = 1

    def __post_init__(self):
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")

    @property
    def geometry(self) -> CanvasGeometry:
        return CanvasGeometry(self.height, self.width, self.patch_size, self.move_radius)

    @property
    def num_patches(self) -> int:
        return self.num_prototypes * self.num_levels

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepOutput:
    """One step of the policy: the action ``(B, 4)``, its log-probability, entropy and value ``(B,)``."""

    action: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor
    hidden: torch.Tensor


def _pick(logits: torch.Tensor, given: torch.Tensor | None, generator: torch.Generator | None):
    """Choose from ``Categorical(logits)`` (the given choice, or a sample); return it, its log-prob
    and the entropy."""
    dist = Categorical(logits=logits)
    if given is None:
        given = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
    return given, dist.log_prob(given), dist.entropy()


def _pick_pair(logits: torch.Tensor, given: tuple | None, mode: str, generator: torch.Generator | None):
    """Choose a pair (first, second) from joint logits ``(B, n1, n2)``, autoregressively: the first
    from its marginal, the second given the first. ``mode="greedy"`` takes the joint argmax (the
    most likely pair, which the two marginal argmaxes need not be)."""
    if given is None and mode == "greedy":
        best = logits.flatten(1).argmax(1)
        given = (best // logits.shape[2], best % logits.shape[2])
    rows = torch.arange(logits.shape[0], device=logits.device)
    first, first_log_prob, first_entropy = _pick(logits.logsumexp(2), None if given is None else given[0], generator)
    second, second_log_prob, second_entropy = _pick(logits[rows, first], None if given is None else given[1], generator)
    return first, second, first_log_prob + second_log_prob, first_entropy + second_entropy


class PlacementScorer:
    """The reward of painting every patch at every position, kept up to date cheaply.

    By the kernel's identity (see ``placement_rewards``) the reward of patch p with support m at a
    window is ``<m, c^2 - 2 x c> + [2 <x, p> - <1, p^2>]`` over the window (x target, c canvas).
    The bracket does not depend on the canvas: it is ``placement_rewards`` on a blank canvas,
    computed once per episode. The first term, ``terms``, is zero on the blank canvas. A step
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
        self._best = self._base_best.amax(1, keepdim=True)
        self._terms = torch.zeros_like(self._base_best)
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
                bracket = self._block(torch.cat([self.visible * self.targets, self.visible], 1), corner,
                                      self.bracket_filters)  # fmt: skip
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

    def __init__(self, targets: torch.Tensor, values: torch.Tensor, support: torch.Tensor, owner: torch.Tensor):
        self.targets, self.values, self.support = targets, values, support
        self.owner = owner.view(targets.shape[0], 1, *targets.shape[-2:])
        self.size = int(round(support.shape[-1] ** 0.5))
        self.step, self.canvas, self._rewards = 0, torch.zeros_like(targets), None

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
) -> PlacementScorer | PlanScorer:
    """The scorer of an encoding pass: of the whole canvas, or with a plan ``(B, T, 4)`` to rewrite,
    updated block by block or (``block_updates=False``; by default when the two blocks of a step
    would hold more positions than the map) over the whole map."""
    if plan is None:
        return PlacementScorer(targets, values, support, num_levels)
    owner, _ = ownership(plan, support, num_levels, geometry)
    if block_updates is None:
        block_updates = 2 * (2 * geometry.patch_size - 1) ** 2 < geometry.rows * geometry.cols
    if not block_updates:
        return PlanScorer(targets, values, support, owner)
    return PlacementScorer(targets, values, support, num_levels, owner, cursor_path(plan, geometry))


def _window(images: torch.Tensor, cursor: torch.Tensor, grid: CanvasGeometry, new: torch.Tensor | None = None):
    """The kernel's window copy on a flat map ``(B, n, H*W)`` of ``grid``'s size: read the window at
    each ``cursor`` ``(B, 2)`` as rows ``(B*n*R, R)``, or write ``new`` there."""
    blocks = row_blocks(images, grid.patch_size)
    rows = window_rows(images, cursor[:, 0] * grid.width + cursor[:, 1], grid)
    return blocks.index_select(0, rows) if new is None else blocks.index_copy_(0, rows, new)


class PainterPolicy(nn.Module):
    """Recurrent encoder: ``step`` maps (target, canvas, cursor, history) to the next action."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        c, f, hidden = config.channels, config.feature_size, config.hidden_size
        patches = config.num_patches
        # One R x R convolution: its output is already on the grid of cursor positions.
        self.residual_cnn = nn.Conv2d(2 * c, config.cnn_channels, config.patch_size)
        self.position_features = nn.Sequential(nn.Conv2d(1 + config.cnn_channels, f, 1), nn.ReLU())
        self.patch_embedding = nn.Embedding(patches + 1, 16)
        self.gru = nn.GRUCell(2 * f + 16 + 3, hidden)
        self.position_head = nn.Conv2d(f, 1, 1)
        self.position_film = nn.Linear(hidden, f)
        self.patch_head = nn.Sequential(nn.Linear(hidden + f, hidden), nn.ReLU(), nn.Linear(hidden, patches))
        self.value_head = nn.Linear(hidden, 1)
        # Inverse temperatures of the matched-filter logits (log-parametrised, learned). They start
        # at ``score_scale``: at the default 50 the untrained policy's most likely program is greedy
        # search's and its samples stay near it, so training improves on greedy rather than first
        # having to find it (starting at 4 on MNIST, the most likely program ended worse than greedy).
        start = torch.tensor(float(config.score_scale)).log()
        self.log_position_scale = nn.Parameter(start.clone())
        self.log_patch_scale = nn.Parameter(start.clone())

    def initial_state(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state ``(B, hidden)`` and "previous patch" (the start token) for a new episode."""
        hidden = torch.zeros(batch, self.config.hidden_size, device=device)
        return hidden, torch.full((batch,), self.config.num_patches, dtype=torch.long, device=device)

    def step(
        self,
        target: torch.Tensor,
        canvas: torch.Tensor,
        cursor: torch.Tensor,
        hidden: torch.Tensor,
        previous_patch: torch.Tensor,
        step_fraction: float,
        scorer: PlacementScorer | PlanScorer,
        action: torch.Tensor | None = None,
        mode: str = "sample",
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Choose (or, given ``action``, score) the next action for images ``(B, C, H, W)``.

        ``scorer`` (made once per episode by :func:`make_scorer` and told of every step with
        ``painted``) supplies the matched-filter rewards of ``canvas``, without gradient: the encoder
        treats the decoder as part of its input. ``mode`` is ``"sample"`` or ``"greedy"``.
        """
        if mode not in ("sample", "greedy"):
            raise ValueError(f"mode must be 'sample' or 'greedy', got {mode!r}")
        config, geometry = self.config, self.config.geometry
        batch = target.shape[0]
        with torch.no_grad():
            best = scorer.best().unsqueeze(1)
        residual = F.relu(self.residual_cnn(torch.cat([target - canvas, canvas], dim=1)))
        features = self.position_features(torch.cat([best / config.patch_size**2, residual], dim=1))

        history = torch.cat(
            [
                self.patch_embedding(previous_patch),
                cursor.float()
                / torch.tensor([max(geometry.rows - 1, 1), max(geometry.cols - 1, 1)], device=cursor.device),
                torch.full((batch, 1), step_fraction, device=cursor.device),
            ],
            dim=1,
        )
        global_features = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        hidden = self.gru(torch.cat([global_features, history], dim=1), hidden)

        # The 1x1 position head and the FiLM term in one weighted sum over the features.
        weights = self.position_film(hidden) + self.position_head.weight.view(1, -1)
        position_logits = (
            self.log_position_scale.exp() * best.squeeze(1)
            + (features * weights[:, :, None, None]).sum(1)
            + self.position_head.bias
        )
        position_logits = position_logits.masked_fill(~reachable(cursor, geometry), NEGATIVE)
        given_position = given_patch = None
        if action is not None:  # a clamped move is scored as the position it reaches
            given_position = move_cursor(cursor, action[:, :2], geometry).unbind(1)
            given_patch = (action[:, 2], action[:, 3])
        row, col, position_log_prob, position_entropy = _pick_pair(position_logits, given_position, mode, generator)

        rows = torch.arange(batch, device=target.device)
        with torch.no_grad():
            patch_scores = scorer.at(row, col)
        patch_logits = self.log_patch_scale.exp() * patch_scores + self.patch_head(
            torch.cat([hidden, features[rows, :, row, col]], dim=1)
        )
        patch_logits = patch_logits.view(batch, config.num_prototypes, config.num_levels)
        k, b, patch_log_prob, patch_entropy = _pick_pair(patch_logits, given_patch, mode, generator)

        chosen = torch.stack(
            [row - cursor[:, 0] + geometry.move_radius, col - cursor[:, 1] + geometry.move_radius, k, b], dim=1
        )
        return StepOutput(
            action=chosen,
            log_prob=position_log_prob + patch_log_prob,
            entropy=position_entropy + patch_entropy,
            value=self.value_head(hidden).squeeze(1),
            hidden=hidden,
        )


def policy_for(
    painter_geometry: CanvasGeometry, channels: int, num_prototypes: int, num_levels: int, **sizes
) -> PainterPolicy:
    """A policy for a canvas geometry and dictionary shape; ``sizes`` override the network sizes."""
    config = PolicyConfig(
        channels,
        painter_geometry.height,
        painter_geometry.width,
        painter_geometry.patch_size,
        painter_geometry.move_radius,
        num_prototypes,
        num_levels,
        **sizes,
    )
    return PainterPolicy(config)
