"""Fit LLGAE (K > 1) or LGAE (K = 1): linear decoders with codes found by inner steps.

    python -m train.llgae                                             # shapes, K=11, E=20
    python -m train.llgae --dataset mnist --data-root DIR --split "test[:8000]" --eval-split "test[8000:]"
    python -m train.llgae --dataset fashion-mnist --data-root DIR --split train --eval-split test \\
        --epochs 600 --minutes 0 --init random                        # the LLGAE note's settings

Each iteration encodes a batch (``--n-step`` inner steps of size ``--beta`` with the decay term,
for every component), keeps the best component per image and takes an RMSprop step on its
squared error, differentiated through the inner steps. Images are centred by their own mean
(``--no-center`` to switch off), as the LLGAE note does. The run trains for ``--minutes``
(``--epochs`` caps it; ``--minutes 0 --epochs N`` trains exactly N passes; the clock is read
before every batch). At the end ``--eval-split`` is scored: SSE on [0, 1] pixels and the note's
own figure, ``seed_figure`` (per-pixel MSE on the 0..255 scale of centred images), comparable
with the table of the note. Bits per image count the component index and the codes as float32:
log2 K + 32 E (+ 32 for the per-image mean when centring). Images are flattened, so colour
images work as grey ones do.

References:

- the LLGAE note: CATSMILE-1022, Locally Linear Generative Autoencoder,
  http://catsmile.info/1022-llgae.html; the model is in :mod:`decoders.llgae`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from decoders.llgae import LLGAE, center_images, llgae_from_points, seed_figure
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics
from train.common.run import (
    Budget,
    EpochArgs,
    Run,
    apply_threads_and_seed,
    epoch_row,
    held_out_images,
    load_split,
    report,
    start_run,
    user_errors,
)
from train.common.tensorboard import log_image_grid

CHECKPOINT_KIND = "llgae"


@dataclass
class Args(EpochArgs):
    components: int = arg(11, "K, linear components (1 = LGAE; at most the number of --split images)", at_least=1)
    code_size: int = arg(20, "E, code dimensions per component", at_least=1)
    beta: float = arg(0.01, "inner step size", above=0)
    n_step: int = arg(5, "inner steps per encoding", at_least=0)
    center: bool = arg(True, "centre every image by its own mean, as the LLGAE note does")
    init: str = arg(
        "kmeans",
        "kmeans: k-means++ centres and per-cluster PCA; random: data images as means, random bases",
        choices=("kmeans", "random"),
    )
    batch_size: int = arg(100, "images per iteration", at_least=1)
    lr: float = arg(1e-3, "RMSprop learning rate", above=0)
    log_every: int = arg(50, "iterations between scalar logs and progress-bar updates", at_least=1)


@dataclass
class Trainer:
    """What the loop carries from one batch to the next; ``iteration`` batches are done."""

    args: Args
    model: LLGAE
    points: torch.Tensor
    run: Run
    budget: Budget
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    iteration: int = 0
    figures: dict = field(default_factory=dict)  # the latest figures, shown on the progress bar

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.points) // self.args.batch_size)


def prepare(images: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat points the model fits and the per-image offsets to add back."""
    if center:
        return center_images(images)
    return images.flatten(1), images.new_zeros(images.shape[0], 1)


def initial_model(points: torch.Tensor, args: Args) -> LLGAE:
    if args.init == "kmeans":
        return llgae_from_points(points, args.components, args.code_size, args.beta, args.n_step, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    dims = points.shape[1]
    mean = points[torch.randperm(len(points), generator=generator)[: args.components]].cpu()
    basis = torch.randn(args.components, dims, args.code_size, generator=generator) / math.sqrt(dims)
    return LLGAE(mean, basis, args.beta, args.n_step)


def set_up(args: Args) -> Trainer:
    """Load the data, initialise the components from it and open the run; a bad flag or missing data
    is one error line."""
    with user_errors():
        device = apply_threads_and_seed(args)
        images = load_split(args, args.split, image_size=args.image_size)
        held_out_images(args, "cpu", image_size=args.image_size)  # a missing held-out split stops the run now
        if args.components > len(images):
            raise ValueError(f"--components {args.components} needs as many --split images, got {len(images)}")
        points, _ = prepare(images, args.center)
        model = initial_model(points, args)
        budget = Budget(args.minutes, args.epochs, "--epochs", unit="epoch")
        run = start_run(args, CHECKPOINT_KIND, f"K{args.components}E{args.code_size}")
    model = model.to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    return Trainer(args, model, points.to(device), run, budget, optimizer, generator)


def train_epoch(trainer: Trainer) -> None:
    """One shuffled pass over the fitting points, cut short when the time is up."""
    args, model, points, writer = trainer.args, trainer.model, trainer.points, trainer.run.writer
    order = torch.randperm(len(points), generator=trainer.generator).to(points.device)
    total = 0.0
    for start in range(0, len(points), args.batch_size):
        if trainer.budget.out_of_time():
            return
        batch = points[order[start : start + args.batch_size]]
        reconstruction, best, _ = model(batch)
        loss = (batch - reconstruction).square().sum(1).mean()
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        total += loss.item() * len(batch)
        trainer.iteration += 1
        if trainer.iteration % args.log_every == 0:
            writer.add_scalar("losses/sse", loss.item(), trainer.iteration)
            writer.add_scalar("charts/components_used", best.unique().numel(), trainer.iteration)
            trainer.budget.advance(0, **trainer.figures, batch_sse=f"{loss.item():.2f}")
    trainer.figures = {"sse": f"{total / len(points):.2f}"}
    trainer.budget.advance(1, **trainer.figures)
    writer.add_scalar("charts/epoch_sse", total / len(points), trainer.iteration)


@torch.no_grad()
def reconstruct(model: LLGAE, images: torch.Tensor, center: bool, batch_size: int = 500) -> tuple[torch.Tensor, float]:
    """Reconstructions ``(N, C, H, W)`` and the seconds spent encoding and decoding."""
    began, parts = time.perf_counter(), []
    for start in range(0, len(images), batch_size):
        points, offsets = prepare(images[start : start + batch_size], center)
        parts.append(model(points)[0] + offsets)
    return torch.cat(parts).view_as(images), time.perf_counter() - began


def finish(trainer: Trainer) -> dict:
    """Score the held-out images, log them and the component means, save the final checkpoint;
    returns the figures."""
    args, model, run = trainer.args, trainer.model, trainer.run
    wall_seconds = trainer.budget.elapsed
    held_out = held_out_images(args, run.device, image_size=args.image_size)
    reconstructions, seconds = reconstruct(model, held_out, args.center)
    bits = math.log2(args.components) + 32 * args.code_size + (32 if args.center else 0)
    metrics = reconstruction_metrics(held_out, reconstructions, bits, seconds)
    metrics.update(
        wall_seconds=wall_seconds,
        epochs=round(trainer.iteration / trainer.batches_per_epoch, 2),
        iterations=trainer.iteration,
        seed_figure=seed_figure(metrics["sse"], held_out[0].numel()),
    )
    means = model.mean.detach().view(-1, *held_out.shape[1:])
    scaled = (means - means.amin()) / (means.amax() - means.amin()).clamp_min(1e-12)
    log_image_grid(run.writer, "llgae/component_means", scaled, trainer.iteration)
    return run.finish(held_out, reconstructions, metrics, trainer.iteration, model, model.config())


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    trainer = set_up(args)
    trainer.run.train_epochs(trainer.model, trainer.model.config(), trainer.budget, lambda: train_epoch(trainer))
    metrics = finish(trainer)
    name, figure = f"LLGAE K={args.components} E={args.code_size}", f"{metrics['seed_figure']:.1f}"
    return report(args, metrics, epoch_row(name, metrics, **{"seed figure (MSE 0..255, centred)": figure}))


if __name__ == "__main__":
    main()
