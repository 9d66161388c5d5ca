"""SB3 callbacks for the painter: animated painting rollouts and the final SSE in TensorBoard."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat

from agents.sb3.encoder import policy_programs
from painter_env.animation import add_gif, rollout_frames
from painter_env.config import Painter


class PaintingGifCallback(BaseCallback):
    """Every ``every`` env steps (and at the end), an animated GIF of the agent painting ``images``.

    The animation is the one ``train.reinforce`` writes: ``rollout_frames`` of the agent's
    deterministic programs, written with ``add_gif`` under ``tag`` (TensorBoard's Images tab).
    Does nothing when the model logs no TensorBoard.
    """

    def __init__(
        self,
        images: torch.Tensor,
        painter: Painter,
        every: int = 20_000,
        tag: str = "rollouts/painting",
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if every < 1:
            raise ValueError(f"every must be a positive number of env steps, got {every}")
        self.images, self.painter, self.every, self.tag = images.cpu(), painter, every, tag
        self.writer = None
        self._next = 0

    def _init_callback(self) -> None:
        formats = [fmt for fmt in self.logger.output_formats if isinstance(fmt, TensorBoardOutputFormat)]
        self.writer = formats[0].writer if formats else None
        self._next = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.write()
            self._next = self.num_timesteps + self.every
        return True

    def _on_training_end(self) -> None:
        self.write()

    def write(self) -> None:
        """Roll out the current policy on the images and write the animation now."""
        if self.writer is None:
            return
        programs = policy_programs(self.model, self.images, self.painter)
        frames = rollout_frames(self.images, programs, self.painter.dictionary, self.painter.geometry)
        add_gif(self.writer, self.tag, frames, self.num_timesteps)
        self.writer.flush()


class FinalSSECallback(BaseCallback):
    """Logs ``rollout/final_sse``: the mean SSE of the canvases at the episode ends of each rollout."""

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self._finals: list[float] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and "sse" in info:
                self._finals.append(info["sse"])
        return True

    def _on_rollout_end(self) -> None:
        if self._finals:
            self.logger.record("rollout/final_sse", float(np.mean(self._finals)))
            self._finals = []
