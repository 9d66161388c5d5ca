"""A features extractor for the painter's small images (SB3's ``NatureCNN`` needs at least 36x36).

Usage, one line::

    PPO("MultiInputPolicy", env, policy_kwargs=painter_policy_kwargs())

The CNN sees target, canvas, residual (target - canvas) and a map of the patch window under the
cursor, stacked as channels, so it can relate the cursor to what is left to paint. Its output is
concatenated with the one-hot cursor and step (SB3 one-hot encodes ``MultiDiscrete`` and
``Discrete`` observations before the extractor sees them).

With ``egocentric=True`` the CNN sees target, canvas and residual from the cursor instead: shifted
so that the cursor sits at a fixed place of a zero-padded ``(H + rows - 1) x (W + cols - 1)``
frame. The painter's moves are relative, and in that frame a shape at offset (di, dj) from the
cursor appears at the same place wherever the cursor is. It costs about four times as much.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


def band(positions: int, pixels: int) -> torch.Tensor:
    """``(positions, pixels)``: 1 where a patch of size ``pixels - positions + 1`` at a position covers a pixel."""
    start = torch.arange(positions)[:, None]
    pixel = torch.arange(pixels)[None, :]
    return ((pixel >= start) & (pixel < start + pixels - positions + 1)).float()


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
    """Small CNN over ``[target, canvas, target - canvas, cursor window]`` plus one-hot cursor and step.

    ``cnn_features`` is the width of the CNN's linear output; ``channels`` the first conv's width
    (the second uses twice as many). Both convs have stride 2, which keeps a forward pass cheap
    next to the env step (about 0.5 M multiply-adds for a 28x28 image). Works for any image size
    and channel count. Images may come as ``(C, H, W)`` or flattened ``(C*H*W,)``; flat ones are taken as square
    with 1 or 3 channels unless ``image_shape`` says otherwise.
    """

    def __init__(self, observation_space: spaces.Dict, cnn_features: int = 128, channels: int = 16,
                 image_shape: tuple[int, int, int] | None = None, egocentric: bool = False):
        for key in ("target", "canvas", "cursor", "step"):
            if key not in observation_space.spaces:
                raise ValueError(f"PainterExtractor needs the painter's Dict observation, missing {key!r}")
        self.image_shape = tuple(image_shape or image_shape_of(observation_space["target"]))
        image_channels, height, width = self.image_shape
        rows, cols = (int(n) for n in observation_space["cursor"].nvec)
        steps = int(observation_space["step"].n)
        super().__init__(observation_space, cnn_features + rows + cols + steps)
        self.rows, self.cols, self.is_egocentric = rows, cols, egocentric
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
        cursor = observations["cursor"]
        images = torch.cat([target, canvas, target - canvas], dim=1)
        if self.is_egocentric:
            images = self.egocentric(images, cursor)
        else:
            images = torch.cat([images, self.cursor_window(cursor)], dim=1)
        # The rollout buffer stores a Discrete observation as (B, 1): its one-hot is (B, 1, n).
        return torch.cat([self.linear(self.cnn(images)), cursor, observations["step"].flatten(1)], dim=1)


def painter_policy_kwargs(cnn_features: int = 128, channels: int = 16, net_arch=None, image_shape=None,
                          egocentric: bool = False) -> dict:
    """``policy_kwargs`` for ``MultiInputPolicy`` (PPO, A2C, DQN) on ``Painter-v0``."""
    kwargs = {
        "features_extractor_class": PainterExtractor,
        "features_extractor_kwargs": {"cnn_features": cnn_features, "channels": channels,
                                      "image_shape": image_shape, "egocentric": egocentric},
    }
    if net_arch is not None:
        kwargs["net_arch"] = net_arch
    return kwargs
