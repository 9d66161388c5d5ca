"""TensorBoard helpers: one writer per run, hyperparameters as text, image grids, the dictionary,
and animated painting rollouts (``painter_env.animation.add_gif``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry
from painter_env.animation import add_gif, rollout_frames


def claim_run_name(base: str, logdir: str | Path, checkpoint_dir: str | Path) -> str:
    """``base``, else ``base_2``, ``base_3``, ...: the first name whose log directory this call
    creates and whose checkpoint directory does not exist yet.

    The directory is created exclusively, so two runs started in the same second (whose default
    names, made from the clock, are equal) never share logs or a checkpoint.
    """
    name, number = base, 1
    while True:
        if not (Path(checkpoint_dir) / name).exists():
            try:
                (Path(logdir) / name).mkdir(parents=True, exist_ok=False)
                return name
            except FileExistsError:
                pass
        number += 1
        name = f"{base}_{number}"


def make_writer(logdir: str | Path, run_name: str) -> SummaryWriter:
    """A writer for one run: ``logdir/run_name`` (created if needed)."""
    path = Path(logdir) / run_name
    path.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(path))


def log_hparams_text(writer: SummaryWriter, hparams: dict) -> None:
    """Hyperparameters as a markdown table under the Text tab (CleanRL's convention)."""
    rows = "\n".join(f"|{key}|{value}|" for key, value in hparams.items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)


def log_image_grid(writer: SummaryWriter, tag: str, images: torch.Tensor, step: int, columns: int = 8) -> None:
    """Images ``(N, C, H, W)`` in [0, 1] as one grid."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, pad_value=0.5)
    writer.add_image(tag, grid, step)


def log_dictionary(
    writer: SummaryWriter, dictionary: PatchDictionary, step: int, tag: str = "dictionary/patches"
) -> None:
    """Every (k, b) patch of the dictionary, one prototype per row, levels side by side."""
    with torch.no_grad():
        values, _ = dictionary.patches()
    size = dictionary.patch_size
    patches = values.view(-1, dictionary.channels, size, size)
    log_image_grid(
        writer,
        tag,
        F.interpolate(patches, scale_factor=4, mode="nearest"),
        step,
        columns=dictionary.num_levels * max(1, 12 // dictionary.num_levels),
    )


def log_rollout_gif(
    writer: SummaryWriter,
    tag: str,
    targets: torch.Tensor,
    actions: torch.Tensor,
    dictionary: PatchDictionary,
    geometry: CanvasGeometry,
    step: int,
) -> None:
    """An animated painting rollout (every image of ``targets`` side by side) under the Images tab."""
    add_gif(writer, tag, rollout_frames(targets, actions, dictionary, geometry), step)


def log_samples(
    writer: SummaryWriter,
    targets: torch.Tensor,
    canvases: torch.Tensor,
    programs: torch.Tensor,
    dictionary: PatchDictionary,
    geometry: CanvasGeometry,
    step: int,
) -> None:
    """Targets, their reconstructions, the dictionary and an animated rollout of the programs."""
    log_image_grid(writer, "images/targets", targets, step)
    log_image_grid(writer, "images/reconstructions", canvases, step)
    log_dictionary(writer, dictionary, step)
    log_rollout_gif(writer, "rollouts/painting", targets, programs, dictionary, geometry, step)
