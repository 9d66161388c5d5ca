"""Fit the CGAE additive model with its batched Gibbs sampler.

    python -m train.cgae --data-root ../shared/data/mnist            # MNIST, H=16, K=32, R=7
    python -m train.cgae --components 8 --minutes 3 --metrics-json cgae.json

Each iteration draws a batch of images, runs ``--chains`` annealed Gibbs chains per image
(``--sweeps`` sweeps, beta from ``--beta-start`` to ``--beta-end``) with the prototypes fixed,
then takes one gradient step on the prototypes with the sampled placements fixed. The chains are
weighted by the softmax of their log-likelihood ``-weight_beta * SSE`` (detached), as the
design note's ``logp.softmax(0).detach() * logp`` does. Prototype usage and its entropy are
logged; every ``--reseed-every`` iterations prototypes nobody used are reseeded from patches of
missing ink.
At the end the held-out ``--eval-split`` is encoded (best of ``--chains`` chains per image) and
scored; bits per image = H log2(K * rows * cols + 1).

References:

- the CGAE design note (卷积生成式自编码器 CGAE, draft); the model is in :mod:`decoders.cgae`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from decoders.cgae import CGAE, cgae_from_images, prototype_usage, reseed_unused, usage_entropy
from painter_env.animation import add_gif
from painter_env.rendering import render_frame, tile_frames
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics
from train.common.run import CommonArgs, held_out_images, load_split, report, start_run, user_errors
from train.common.tensorboard import log_image_grid

CHECKPOINT_KIND = "cgae"


@dataclass
class Args(CommonArgs):
    eval_images: int = arg(2000, "number of held-out images scored at the end")
    minutes: float = arg(8.0, "stop training after this many minutes (the evaluation comes after)")
    components: int = arg(16, "H, components (placed prototypes) per image")
    prototypes: int = arg(32, "K, number of prototypes")
    patch_size: int = arg(7, "R, prototype size")
    chains: int = arg(4, "Gibbs chains per image")
    sweeps: int = arg(4, "Gibbs sweeps per batch (each resamples every component once)")
    eval_sweeps: int = arg(4, "Gibbs sweeps when encoding the held-out split")
    beta_start: float = arg(1.0, "inverse temperature (per unit of SSE) of the first sweep")
    beta_end: float = arg(100.0, "inverse temperature of the last sweep (annealed geometrically)")
    weight_beta: float = arg(1.0, "chains are weighted by softmax(-weight_beta * SSE) in the prototype loss")
    batch_size: int = arg(64, "images per iteration")
    epochs: int = arg(3, "passes over the fitting split")
    lr: float = arg(3e-3, "Adam learning rate of the prototypes")
    reseed_every: int = arg(25, "iterations between reseeding unused prototypes (0: never)")
    log_every: int = arg(10, "iterations between scalar logs")
    image_every: int = arg(50, "iterations between prototype, reconstruction and Gibbs-animation logs")


def sweep_frames(images: torch.Tensor, frames: list[torch.Tensor], patch_size: int) -> list[np.ndarray]:
    """Target | reconstruction | residual after each sweep, the images stacked vertically."""
    return [
        tile_frames(
            [
                render_frame(target.numpy(), canvas.numpy(), None, patch_size, 4)
                for target, canvas in zip(images.cpu(), frame.cpu())
            ]
        )
        for frame in frames
    ]


@torch.no_grad()
def encode(
    model: CGAE, images: torch.Tensor, args: Args, generator: torch.Generator, batch_size: int = 256
) -> tuple[torch.Tensor, float]:
    """Best-of-chains codes ``(N, H)`` of ``images`` and the seconds spent encoding."""
    best, seconds = [], 0.0
    for start in tqdm(range(0, len(images), batch_size), desc="encoding", leave=False):
        batch = images[start : start + batch_size]
        began = time.perf_counter()
        codes, _ = model.gibbs(batch, args.chains, args.eval_sweeps, args.beta_start, args.beta_end, generator)
        choice = model.chain_sse(batch, codes).argmin(1)
        best.append(codes[torch.arange(len(batch), device=codes.device), choice])
        seconds += time.perf_counter() - began
    return torch.cat(best), seconds


def train(args: Args) -> tuple[CGAE, dict]:
    """Fit on ``args.split``, score on ``args.eval_split``; returns the model and the figures."""
    with user_errors():
        images = load_split(args, args.split, patch_size=args.patch_size)
        held_out_images(args, "cpu", patch_size=args.patch_size)  # a missing held-out split stops the run now
        run = start_run(args, CHECKPOINT_KIND, f"H{args.components}")
    device, writer = run.device, run.writer
    generator = torch.Generator(device=device).manual_seed(args.seed)
    cpu_generator = torch.Generator().manual_seed(args.seed)
    model = cgae_from_images(images, args.prototypes, args.patch_size, args.components, seed=args.seed).to(device)
    images = images.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    usage = torch.zeros(args.prototypes, dtype=torch.long, device=device)
    began, iteration = time.perf_counter(), 0
    total = args.epochs * -(-len(images) // args.batch_size)
    progress = tqdm(total=total, desc="cgae")
    with run.interruptible(model, model.config()):
        for _ in range(args.epochs):
            order = torch.randperm(len(images), generator=cpu_generator).to(device)
            for start in range(0, len(images), args.batch_size):
                if time.perf_counter() - began > 60 * args.minutes:
                    break
                batch = images[order[start : start + args.batch_size]]
                record = 4 if iteration % args.image_every == 0 else 0
                codes, frames = model.gibbs(
                    batch, args.chains, args.sweeps, args.beta_start, args.beta_end, generator, record=record
                )
                sse = model.chain_sse(batch, codes)
                weights = torch.softmax(-args.weight_beta * sse.detach(), dim=1)
                loss = (weights * sse).sum(1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                usage += prototype_usage(codes, model)
                iteration += 1
                progress.update()
                if iteration % args.log_every == 0:
                    writer.add_scalar("losses/weighted_sse", loss.item(), iteration)
                    writer.add_scalar("charts/best_chain_sse", sse.min(1).values.mean().item(), iteration)
                    writer.add_scalar("charts/usage_entropy_bits", usage_entropy(usage), iteration)
                    writer.add_scalar("charts/unused_prototypes", int((usage == 0).sum()), iteration)
                    writer.add_scalar(
                        "charts/empty_components", (codes == model.null_code).float().mean().item(), iteration
                    )
                    progress.set_postfix(
                        sse=f"{sse.min(1).values.mean().item():.2f}", entropy=f"{usage_entropy(usage):.2f}"
                    )
                if args.reseed_every and iteration % args.reseed_every == 0:
                    residual = batch - model.reconstruct(codes[:, 0]).detach()
                    writer.add_scalar(
                        "charts/reseeded", reseed_unused(model, usage, residual, cpu_generator), iteration
                    )
                    usage.zero_()
                if record:
                    log_image_grid(writer, "cgae/prototypes", prototype_images(model), iteration)
                    add_gif(
                        writer, "cgae/gibbs_sweeps", sweep_frames(batch[:record], frames, args.patch_size), iteration
                    )
            run.save(model, model.config(), iteration=iteration)
    progress.close()
    wall_seconds = time.perf_counter() - began
    held_out = held_out_images(args, device, patch_size=args.patch_size)
    codes, seconds = encode(model, held_out, args, generator)
    with torch.no_grad():
        reconstructions = model.reconstruct(codes)
    eval_usage = prototype_usage(codes, model)
    metrics = reconstruction_metrics(held_out, reconstructions, model.bits_per_image, seconds)
    metrics.update(
        wall_seconds=wall_seconds,
        iterations=iteration,
        usage_entropy_bits=usage_entropy(eval_usage),
        prototypes_used=int((eval_usage > 0).sum()),
        num_prototypes=args.prototypes,
        empty_components=float((codes == model.null_code).float().mean()),
    )
    run.finish(held_out, reconstructions, metrics, iteration, model, model.config(), iteration=iteration)
    return model, metrics


def prototype_images(model: CGAE) -> torch.Tensor:
    """Prototypes scaled to [0, 1] each and enlarged 4x, for the image log."""
    prototypes = model.prototypes.detach()
    low = prototypes.amin(dim=(1, 2, 3), keepdim=True)
    high = prototypes.amax(dim=(1, 2, 3), keepdim=True)
    return F.interpolate((prototypes - low) / (high - low).clamp_min(1e-6), scale_factor=4, mode="nearest")


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    _, metrics = train(args)
    return report(
        args,
        metrics,
        {
            "model": f"CGAE H={args.components}",
            "bits/image": f"{metrics['bits_per_image']:.0f}",
            "SSE": f"{metrics['sse']:.2f}",
            "PSNR": f"{metrics['psnr']:.2f}",
            "prototypes used": f"{metrics['prototypes_used']}/{args.prototypes}",
            "usage entropy (bits)": f"{metrics['usage_entropy_bits']:.2f}",
            "wall s": f"{metrics['wall_seconds']:.0f}",
        },
    )


if __name__ == "__main__":
    main()
