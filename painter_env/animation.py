"""Animated painting rollouts: the canvas step by step, several images side by side, as GIF files
or TensorBoard image summaries.

``SummaryWriter.add_video`` needs moviepy 1.x and silently writes nothing with moviepy 2.x, so
rollouts go to TensorBoard as GIF-encoded image summaries (played by the Images tab), made with Pillow.
"""

from __future__ import annotations

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry, cursor_path, decode
from painter_env.rendering import gif_bytes, render_frame, tile_frames


@torch.no_grad()
def rollout_frames(
    targets: torch.Tensor,
    actions: torch.Tensor,
    dictionary: PatchDictionary,
    geometry: CanvasGeometry,
    scale: int = 4,
) -> list[np.ndarray]:
    """Frames ``0..T`` (the start canvas, then after each action) of programs ``(B, T, 4)``.

    Each frame stacks the B images' target | canvas | residual panels vertically. The canvases
    are painted by the kernel's ``decode`` of each prefix of the programs.
    """
    values, support = dictionary.patches()
    targets, actions = targets.detach().cpu(), actions.detach().cpu()
    values, support = values.cpu(), support.cpu()
    start = dictionary.start_canvas(targets)
    path = cursor_path(actions, geometry)
    frames = []
    for step in range(actions.shape[1] + 1):
        canvases = decode(actions[:, :step], values, support, dictionary.num_levels, geometry, start)
        panels = [
            render_frame(
                targets[b].numpy(),
                canvases[b].numpy(),
                tuple(path[b, step - 1].tolist()) if step else None,
                geometry.patch_size,
                scale,
            )
            for b in range(targets.shape[0])
        ]
        frames.append(tile_frames(panels, columns=1))
    return frames


def add_gif(writer: SummaryWriter, tag: str, frames: list[np.ndarray], step: int, frame_seconds: float = 0.4) -> None:
    """Write RGB frames ``(H, W, 3)`` uint8 as one animated image summary."""
    height, width = frames[0].shape[:2]
    image = Summary.Image(
        height=height, width=width, colorspace=3, encoded_image_string=gif_bytes(frames, frame_seconds)
    )
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
