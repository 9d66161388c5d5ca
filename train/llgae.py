"""Fit LLGAE (K > 1) or LGAE (K = 1): linear decoders with codes found by inner steps.

    python -m train.llgae --data-root ../shared/data/mnist          # K=11, E=20 on MNIST
    python -m train.llgae --dataset fashion-mnist --data-root DIR --split train --eval-split test \\
        --epochs 600 --minutes 0 --init random                        # the LLGAE note's settings

Each iteration encodes a batch (``--n-step`` inner steps of size ``--beta`` with the decay term,
for every component), keeps the best component per image and takes an RMSprop step on its
squared error, differentiated through the inner steps. Images are centred by their own mean
(``--no-center`` to switch off), as the LLGAE note does. At the end ``--eval-split`` is scored:
SSE on [0, 1] pixels and the note's own figure, ``seed_figure`` (per-pixel MSE on the 0..255
scale of centred images), comparable with the table of the note. Bits per image count the
component index and the codes as float32: log2 K + 32 E (+ 32 for the per-image mean when
centring).

References:

- the LLGAE note: CATSMILE-1022, Locally Linear Generative Autoencoder,
  http://catsmile.info/1022-llgae.html; the model is in :mod:`decoders.llgae`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from decoders.llgae import LLGAE, center_images, llgae_from_points, seed_figure
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics
from train.common.run import CommonArgs, held_out_images, load_split, report, start_run, user_errors
from train.common.tensorboard import log_image_grid

CHECKPOINT_KIND = "llgae"


@dataclass
class Args(CommonArgs):
    minutes: float = arg(10.0, "stop training after this many minutes (0: no limit)")
    components: int = arg(11, "K, linear components (1 = LGAE)")
    code_size: int = arg(20, "E, code dimensions per component")
    beta: float = arg(0.01, "inner step size")
    n_step: int = arg(5, "inner steps per encoding")
    center: bool = arg(True, "centre every image by its own mean, as the LLGAE note does")
    init: str = arg(
        "kmeans",
        "kmeans: k-means++ centres and per-cluster PCA; random: data images as means, random bases",
        choices=("kmeans", "random"),
    )
    batch_size: int = arg(100, "images per iteration")
    epochs: int = arg(100, "passes over the fitting split")
    lr: float = arg(1e-3, "RMSprop learning rate")
    log_every: int = arg(50, "iterations between scalar logs")


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


@torch.no_grad()
def reconstruct(model: LLGAE, images: torch.Tensor, center: bool, batch_size: int = 500) -> tuple[torch.Tensor, float]:
    """Reconstructions ``(N, C, H, W)`` and the seconds spent encoding and decoding."""
    began, parts = time.perf_counter(), []
    for start in range(0, len(images), batch_size):
        points, offsets = prepare(images[start : start + batch_size], center)
        parts.append(model(points)[0] + offsets)
    return torch.cat(parts).view_as(images), time.perf_counter() - began


def train(args: Args) -> tuple[LLGAE, dict]:
    """Fit on ``args.split``, score on ``args.eval_split``; returns the model and the figures."""
    with user_errors():
        images = load_split(args, args.split)
        held_out_images(args, "cpu")  # a missing held-out split stops the run before training, not after
        run = start_run(args, CHECKPOINT_KIND, f"K{args.components}E{args.code_size}")
    device, writer = run.device, run.writer
    generator = torch.Generator().manual_seed(args.seed)
    points, _ = prepare(images, args.center)
    model = initial_model(points, args).to(device)
    points = points.to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    began, iteration = time.perf_counter(), 0
    epochs = 0
    with run.interruptible(model, model.config()):
        for _ in (progress := tqdm(range(args.epochs), desc="llgae")):
            if args.minutes and time.perf_counter() - began > 60 * args.minutes:
                break
            epochs += 1
            order = torch.randperm(len(points), generator=generator).to(device)
            total = 0.0
            for start in range(0, len(points), args.batch_size):
                batch = points[order[start : start + args.batch_size]]
                reconstruction, best, _ = model(batch)
                loss = (batch - reconstruction).square().sum(1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
                iteration += 1
                if iteration % args.log_every == 0:
                    writer.add_scalar("losses/sse", loss.item(), iteration)
                    writer.add_scalar("charts/components_used", best.unique().numel(), iteration)
            progress.set_postfix(sse=f"{total / len(points):.2f}")
            writer.add_scalar("charts/epoch_sse", total / len(points), iteration)
    wall_seconds = time.perf_counter() - began
    held_out = held_out_images(args, device)
    reconstructions, seconds = reconstruct(model, held_out, args.center)
    bits = math.log2(args.components) + 32 * args.code_size + (32 if args.center else 0)
    metrics = reconstruction_metrics(held_out, reconstructions, bits, seconds)
    metrics.update(
        wall_seconds=wall_seconds,
        epochs=epochs,
        iterations=iteration,
        seed_figure=seed_figure(metrics["sse"], held_out[0].numel()),
    )
    side = held_out.shape[-1]
    means = model.mean.detach().view(-1, held_out.shape[1], side, side)
    log_image_grid(writer, "llgae/component_means", (means - means.amin()) / (means.amax() - means.amin()), iteration)
    run.finish(held_out, reconstructions, metrics, iteration, model, model.config())
    return model, metrics


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    _, metrics = train(args)
    return report(
        args,
        metrics,
        {
            "model": f"LLGAE K={args.components} E={args.code_size}",
            "bits/image": f"{metrics['bits_per_image']:.0f}",
            "SSE": f"{metrics['sse']:.2f}",
            "PSNR": f"{metrics['psnr']:.2f}",
            "seed figure (MSE 0..255, centred)": f"{metrics['seed_figure']:.1f}",
            "epochs": str(metrics["epochs"]),
            "wall s": f"{metrics['wall_seconds']:.0f}",
        },
    )


if __name__ == "__main__":
    main()
