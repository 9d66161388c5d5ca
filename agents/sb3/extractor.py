"""A features extractor for the painter's small images (SB3's ``NatureCNN`` needs at least 36x36).

Usage, one line::

    PPO("MultiInputPolicy", env, policy_kwargs=painter_policy_kwargs())

The CNN sees target, canvas, residual (target - canvas) and a map of the patch window under the
cursor, stacked as channels, so it can relate the cursor to what is left to paint. Its output is
concatenated with the one-hot cursor and step (SB3 one-hot encodes the ``Discrete`` step; the
cursor, a ``Box`` of two coordinates, is one-hot encoded here).

With ``egocentric=True`` the CNN sees target, canvas and residual from the cursor instead: shifted
so that the cursor sits at a fixed place of a zero-padded ``(H + rows - 1) x (W + cols - 1)``
frame. The painter's moves are relative, and in that frame a shape at offset (di, dj) from the
cursor appears at the same place wherever the cursor is.

With the painter's dictionary (``painter_policy_kwargs(painter=env.unwrapped.painter)``) the
extractor adds a **matched-filter branch**, the inductive bias of the project's RNN policy (whose
logits start from the kernel's placement rewards): ``decoders.kernel.placement_rewards`` gives the
SSE decrease of every patch at every position, and the branch reduces it to one number per value
of each action component, for the current cursor: per move ``di`` the best reward over ``dj, k, b``
at the row it leads to (clamped at the border as ``move_cursor`` does), likewise per ``dj``, per
``k`` the best over reachable positions and ``b``, per ``b`` the best over positions and ``k``.
Their argmaxes are greedy search's joint argmax (when the best placement is unique; with two
equally good ones the factorised argmaxes may mix them), so a *linear* action head (``net_arch``
with ``pi=[]``) can represent greedy search with factorised logits. ``start_from_matched_filter``
starts the head there, and PPO then learns corrections to greedy search rather than the task
from scratch. The rewards are divided by the image's blank-canvas SSE and multiplied by
``matched_scale``. This hands the agent one-step lookahead through the known decoder and its
dictionary: it is not learned from pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from decoders.kernel import placement_rewards


def band(positions: int, pixels: int) -> torch.Tensor:
    """``(positions, pixels)``: 1 where a patch of size ``pixels - positions + 1`` at a position covers a pixel."""
    start = torch.arange(positions)[:, None]
    pixel = torch.arange(pixels)[None, :]
    return ((pixel >= start) & (pixel < start + pixels - positions + 1)).float()


def cursor_grid(space: spaces.Space) -> tuple[int, int]:
    """``(rows, cols)`` of the cursor positions: from a ``Box`` of two coordinates or a ``MultiDiscrete``."""
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec[0]), int(space.nvec[1])
    return int(space.high[0]) + 1, int(space.high[1]) + 1


def image_shape_of(space: spaces.Box) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image space, or of a flat one holding a square 1- or 3-channel image."""
    if len(space.shape) == 3:
        return space.shape
    size = int(np.prod(space.shape))
    for channels in (1, 3):
        side = math.isqrt(size // channels)
        if channels * side * side == size:
            return channels, side, side
    raise ValueError(f"cannot read a square 1- or 3-channel image from shape {space.shape}: pass image_shape")


class PainterExtractor(BaseFeaturesExtractor):
    """Small CNN over ``[target, canvas, target - canvas, cursor window]`` plus one-hot cursor and step,
    and optionally the matched-filter features (see the module docstring).

    ``cnn_features`` is the width of the CNN's linear output; ``channels`` the first conv's width
    (the second uses twice as many); both have stride 2. Works for any image size and channel count.
    Images may come as ``(C, H, W)`` or flattened ``(C*H*W,)``; flat ones are taken as square with 1
    or 3 channels unless ``image_shape`` says otherwise.

    The matched-filter branch is on when ``patch_values`` ``(K*L, C, R*R)`` and ``patch_support``
    ``(K*L, 1, R*R)`` (the dictionary's ``patches()``) are given, with ``num_levels`` L and the
    painter's ``move_radius`` M. Its ``2(2M+1) + K + L`` features come after the CNN's, cursor's and
    step's, in the action's order ``(di, dj, k, b)``. The patches are buffers: they are saved with
    the policy.

    ``append_observation=True`` appends the flat target, canvas and cursor (``observation_dim``
    numbers) at the very end, for an action head that looks at the observation itself (see
    ``agents.sb3.autoregressive``).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        cnn_features: int = 128,
        channels: int = 16,
        image_shape: tuple[int, int, int] | None = None,
        egocentric: bool = False,
        patch_values: torch.Tensor | None = None,
        patch_support: torch.Tensor | None = None,
        num_levels: int = 1,
        move_radius: int | None = None,
        matched_scale: float = 50.0,
        append_observation: bool = False,
    ):
        for key in ("target", "canvas", "cursor", "step"):
            if key not in observation_space.spaces:
                raise ValueError(f"PainterExtractor needs the painter's Dict observation, missing {key!r}")
        self.image_shape = tuple(image_shape or image_shape_of(observation_space["target"]))
        image_channels, height, width = self.image_shape
        rows, cols = cursor_grid(observation_space["cursor"])
        steps = int(observation_space["step"].n)
        matched_dim = 0
        if patch_values is not None:
            if patch_support is None or move_radius is None:
                raise ValueError("the matched-filter branch needs patch_values, patch_support and move_radius")
            if patch_values.shape[0] % num_levels:
                raise ValueError(f"{patch_values.shape[0]} patches are not a whole number of {num_levels} levels")
            matched_dim = 2 * (2 * move_radius + 1) + patch_values.shape[0] // num_levels + num_levels
        self.observation_dim = 2 * image_channels * height * width + 2 if append_observation else 0
        super().__init__(observation_space, cnn_features + rows + cols + steps + matched_dim + self.observation_dim)
        self.rows, self.cols, self.is_egocentric, self.matched_dim = rows, cols, egocentric, matched_dim
        self.cursor_is_one_hot = isinstance(observation_space["cursor"], spaces.MultiDiscrete)
        if self.matched_dim:
            self.register_buffer("patch_values", torch.as_tensor(patch_values, dtype=torch.float32).detach().clone())
            self.register_buffer("patch_support", torch.as_tensor(patch_support, dtype=torch.float32).clone())
            self.num_levels, self.move_radius, self.matched_scale = num_levels, move_radius, matched_scale
            self.patch_size = math.isqrt(patch_values.shape[-1])
        self.frame = (height + rows - 1, width + cols - 1) if egocentric else (height, width)
        inputs = 3 * image_channels if egocentric else 3 * image_channels + 1
        # band[i, y] = 1 when a patch at cursor row i covers pixel row y (same for columns).
        self.register_buffer("row_band", band(rows, height), persistent=False)
        self.register_buffer("col_band", band(cols, width), persistent=False)
        self.cnn = nn.Sequential(
            nn.Conv2d(inputs, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, inputs, *self.frame)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, cnn_features), nn.ReLU())

    def cursor_window(self, cursor: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` map of the pixels under the patch at the cursor, from its one-hot ``(B, rows+cols)``."""
        rows = cursor[:, : self.rows] @ self.row_band
        cols = cursor[:, self.rows :] @ self.col_band
        return (rows[:, :, None] * cols[:, None, :]).unsqueeze(1)

    def egocentric(self, images: torch.Tensor, cursor: torch.Tensor) -> torch.Tensor:
        """``(B, C, H + rows - 1, W + cols - 1)``: frame pixel ``(u, v)`` is image pixel
        ``(i + u - rows + 1, j + v - cols + 1)`` for the cursor ``(i, j)`` (zero off the image)."""
        row, col = cursor[:, : self.rows].argmax(1), cursor[:, self.rows :].argmax(1)
        padded = nn.functional.pad(images, (self.cols - 1, self.cols - 1, self.rows - 1, self.rows - 1))
        rows = row[:, None] + torch.arange(self.frame[0], device=images.device)
        cols = col[:, None] + torch.arange(self.frame[1], device=images.device)
        batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def forward(self, observations: dict) -> torch.Tensor:
        shape = (-1, *self.image_shape)
        target, canvas = observations["target"].view(shape), observations["canvas"].view(shape)
        cursor = observations["cursor"] if self.cursor_is_one_hot else self.one_hot(observations["cursor"])
        images = torch.cat([target, canvas, target - canvas], dim=1)
        if self.is_egocentric:
            images = self.egocentric(images, cursor)
        else:
            images = torch.cat([images, self.cursor_window(cursor)], dim=1)
        # The rollout buffer stores a Discrete observation as (B, 1): its one-hot is (B, 1, n).
        # Channels-last convolutions are faster on CPU and give the same numbers.
        features = self.linear(self.cnn(images.contiguous(memory_format=torch.channels_last)))
        parts = [features, cursor, observations["step"].flatten(1)]
        if self.matched_dim:
            parts.append(self.matched(target, canvas, cursor))
        if self.observation_dim:
            position = torch.stack([cursor[:, : self.rows].argmax(1), cursor[:, self.rows :].argmax(1)], 1)
            parts += [target.flatten(1), canvas.flatten(1), position.float()]
        return torch.cat(parts, dim=1)

    def one_hot(self, cursor: torch.Tensor) -> torch.Tensor:
        """``(B, rows + cols)``: the one-hot row and column of cursors ``(B, 2)``."""
        cursor = cursor.long()
        rows = nn.functional.one_hot(cursor[:, 0], self.rows)
        cols = nn.functional.one_hot(cursor[:, 1], self.cols)
        return torch.cat([rows, cols], dim=1).float()

    @torch.no_grad()
    def matched(self, target: torch.Tensor, canvas: torch.Tensor, cursor: torch.Tensor) -> torch.Tensor:
        """``(B, 2(2M+1) + K + L)``: the best placement reward reachable with each value of each action
        component from the cursor (one-hot ``(B, rows+cols)``), over the blank SSE, times ``matched_scale``."""
        batch, radius = target.shape[0], self.move_radius
        rewards = placement_rewards(target, canvas, self.patch_values, self.patch_support, self.patch_size)
        rewards = rewards.view(batch, -1, self.num_levels, self.rows, self.cols)
        row, col = cursor[:, : self.rows].argmax(1), cursor[:, self.rows :].argmax(1)
        offsets = torch.arange(-radius, radius + 1, device=target.device)
        # The row (column) each move component value leads to, clamped as move_cursor clamps.
        to_row = (row[:, None] + offsets).clamp(0, self.rows - 1)
        to_col = (col[:, None] + offsets).clamp(0, self.cols - 1)
        if radius < max(self.rows, self.cols) - 1:  # some positions are out of reach
            near_row = (torch.arange(self.rows, device=target.device) - row[:, None]).abs() <= radius
            near_col = (torch.arange(self.cols, device=target.device) - col[:, None]).abs() <= radius
            reachable = near_row[:, None, None, :, None] & near_col[:, None, None, None, :]
            rewards = rewards.masked_fill(~reachable, float("-inf"))
        best_place = rewards.amax(dim=(1, 2))  # (B, rows, cols)
        best_patch = rewards.flatten(3).amax(3)  # (B, K, L)
        features = torch.cat(
            [
                best_place.amax(2).gather(1, to_row),
                best_place.amax(1).gather(1, to_col),
                best_patch.amax(2),
                best_patch.amax(1),
            ],
            dim=1,
        )
        blank = target.square().flatten(1).sum(1, keepdim=True).clamp_min(1e-6)
        return features * (self.matched_scale / blank)


def start_from_matched_filter(policy) -> None:
    """Make the action head's logits start as the matched-filter features (identity weights on them), or
    zero the learned terms of ``PainterMultiInputPolicy``'s autoregressive head.

    The RNN policy's logits start from the placement rewards; this gives an SB3 ``ActorCriticPolicy``
    the same start, so its untrained deterministic action is greedy search's (up to ties between
    equally good placements) and PPO/A2C learn corrections to it. Needs a linear action head over the
    extractor's features (``net_arch=dict(pi=[], ...)``) and the factorised ``MultiDiscrete`` action.
    """
    extractor, head = policy.features_extractor, policy.action_net
    if hasattr(head, "start_from_matched_filter"):  # the autoregressive head (agents.sb3.autoregressive)
        head.start_from_matched_filter()
        return
    size = getattr(extractor, "matched_dim", 0)
    if not size:
        raise ValueError("the policy's extractor has no matched-filter branch: pass painter= to painter_policy_kwargs")
    if head.in_features != extractor.features_dim or head.out_features != size:
        raise ValueError(
            f"the action head maps {head.in_features} inputs to {head.out_features} logits; starting from "
            f"the matched filter needs net_arch pi=[] and the (di, dj, k, b) action ({size} logits)"
        )
    with torch.no_grad():
        head.weight[:, -size:] = torch.eye(size, device=head.weight.device)


def painter_policy_kwargs(
    cnn_features: int = 128,
    channels: int = 16,
    net_arch=None,
    image_shape=None,
    egocentric: bool = False,
    painter=None,
    matched_scale: float = 50.0,
) -> dict:
    """``policy_kwargs`` for ``MultiInputPolicy`` (PPO, A2C, DQN, ...) on ``Painter-v0``.

    ``painter`` (``env.unwrapped.painter`` or ``PainterVecEnv.painter``) turns on the
    matched-filter branch with its dictionary and move radius.
    """
    extractor = {
        "cnn_features": cnn_features,
        "channels": channels,
        "image_shape": image_shape,
        "egocentric": egocentric,
    }
    if painter is not None:
        values, support = painter.dictionary.patches()
        extractor.update(
            patch_values=values.detach().cpu(),
            patch_support=support.detach().cpu(),
            num_levels=painter.dictionary.num_levels,
            move_radius=painter.geometry.move_radius,
            matched_scale=matched_scale,
        )
    kwargs = {"features_extractor_class": PainterExtractor, "features_extractor_kwargs": extractor}
    if net_arch is not None:
        kwargs["net_arch"] = net_arch
    return kwargs
