"""TensorBoard helpers: animated GIF image summaries (played by the Images tab).

``SummaryWriter.add_video`` needs moviepy 1.x and silently writes nothing with moviepy 2.x, so
rollouts are written as GIF-encoded image summaries, made with Pillow.
"""

from __future__ import annotations

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from painter_env.rendering import gif_bytes


def add_gif(writer: SummaryWriter, tag: str, frames: list[np.ndarray], step: int, frame_seconds: float = 0.4) -> None:
    """Write RGB frames ``(H, W, 3)`` uint8 as one animated image summary."""
    height, width = frames[0].shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_bytes(frames, frame_seconds))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
