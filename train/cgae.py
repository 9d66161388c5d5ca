"""Fit the CGAE additive model (:mod:`decoders.cgae`) with its batched Gibbs sampler.

    python -m train.cgae                                              # shapes, H=16, K=32, R=7
    python -m train.cgae --dataset mnist --data-root DIR --split "test[:8000]" --eval-split "test[8000:]"
    python -m train.cgae --components 8 --minutes 3 --metrics-json cgae.json

Each iteration draws a batch of images, runs ``--chains`` annealed Gibbs chains per image
(``--sweeps`` sweeps, beta from ``--beta-start`` to ``--beta-end``) with the prototypes fixed,
then takes one gradient step on the prototypes with the sampled placements fixed. The chains are
weighted by the softmax of their log-likelihood ``-weight_beta * SSE`` (detached): self-normalised
posterior weights, so the step follows the chains that explain their image and a chain stuck in
a poor placement hardly moves the prototypes. Prototype usage and its entropy are logged; every
``--reseed-every`` iterations prototypes nobody used are reseeded from patches of missing ink.

The run trains for ``--minutes`` (``--epochs`` caps it; the clock is read before every batch),
saving a checkpoint after every full pass. Then the held-out ``--eval-split`` is encoded (best of
``--chains`` chains per image) and scored; bits per image = H log2(K * rows * cols + 1).
Prototypes have the images' channels, so colour images work as grey ones do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from decoders.cgae import CGAE, cgae_from_images, prototype_usage, reseed_unused, usage_entropy
from painter_env.animation import add_gif
from painter_env.rendering import render_frame, tile_frames
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

CHECKPOINT_KIND = "cgae"


@dataclass
class Args(EpochArgs):
    components: int = arg(16, "H, components (placed prototypes) per image", at_least=1)
    prototypes: int = arg(32, "K, number of prototypes", at_least=1)
    patch_size: int = arg(7, "R, prototype size (at most the image size)", at_least=1)
    chains: int = arg(4, "Gibbs chains per image", at_least=1)
    sweeps: int = arg(4, "Gibbs sweeps per batch (each resamples every component once)", at_least=1)
    eval_sweeps: int = arg(4, "Gibbs sweeps when encoding the held-out split", at_least=1)
    beta_start: float = arg(1.0, "inverse temperature (per unit of SSE) of the first sweep", above=0)
    beta_end: float = arg(100.0, "inverse temperature of the last sweep (annealed geometrically)", above=0)
    weight_beta: float = arg(
        1.0, "chains are weighted by softmax(-weight_beta * SSE) in the prototype loss", at_least=0
    )
    batch_size: int = arg(64, "images per iteration", at_least=1)
    lr: float = arg(3e-3, "Adam learning rate of the prototypes", above=0)
    reseed_every: int = arg(25, "iterations between reseeding unused prototypes (0: never)", at_least=0)
    log_every: int = arg(10, "iterations between scalar logs and progress-bar updates", at_least=1)
    image_every: int = arg(50, "iterations between prototype, reconstruction and Gibbs-animation logs", at_least=1)


@dataclass
class Trainer:
    """What the loop carries from one batch to the next; ``iteration`` batches are done."""

    args: Args
    model: CGAE
    images: torch.Tensor
    run: Run
    budget: Budget
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the Gibbs draws, on the device
    cpu_generator: torch.Generator  # data order and reseeding
    usage: torch.Tensor
    iteration: int = 0
    figures: dict = field(default_factory=dict)  # the latest figures, shown on the progress bar

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.images) // self.args.batch_size)


def set_up(args: Args) -> Trainer:
    """Load the data, start the prototypes from data patches and open the run; a bad flag or missing
    data is one error line."""
    with user_errors():
        device = apply_threads_and_seed(args)
        options = {"image_size": args.image_size, "patch_size": args.patch_size}
        images = load_split(args, args.split, **options)
        held_out_images(args, "cpu", **options)  # a missing held-out split stops the run now
        if args.patch_size > min(images.shape[-2:]):
            size = "x".join(map(str, images.shape[-2:]))
            raise ValueError(f"--patch-size {args.patch_size} is larger than the images ({size})")
        model = cgae_from_images(images, args.prototypes, args.patch_size, args.components, seed=args.seed)
        budget = Budget(args.minutes, args.epochs, "--epochs", unit="epoch")
        run = start_run(args, CHECKPOINT_KIND, f"H{args.components}")
    model = model.to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    cpu_generator = torch.Generator().manual_seed(args.seed)
    usage = torch.zeros(args.prototypes, dtype=torch.long, device=device)
    return Trainer(args, model, images.to(device), run, budget, optimizer, generator, cpu_generator, usage)


def train(trainer: Trainer) -> None:
    """Epochs until the budget is spent, a checkpoint after each full one; Ctrl-C saves and exits 130."""
    model, run = trainer.model, trainer.run

    def epoch() -> None:
        if train_epoch(trainer):
            run.save(model, model.config(), iteration=trainer.iteration)

    run.train_epochs(model, model.config(), trainer.budget, epoch)


def train_epoch(trainer: Trainer) -> bool:
    """One shuffled pass over the fitting images; False when the time ran out before its end."""
    args, images = trainer.args, trainer.images
    order = torch.randperm(len(images), generator=trainer.cpu_generator).to(images.device)
    for start in range(0, len(images), args.batch_size):
        if trainer.budget.out_of_time():
            return False
        train_iteration(trainer, images[order[start : start + args.batch_size]])
    trainer.budget.advance(1, **trainer.figures)
    return True


def train_iteration(trainer: Trainer, batch: torch.Tensor) -> None:
    """Gibbs chains with the prototypes fixed, then one prototype step with the placements fixed."""
    args, model, writer = trainer.args, trainer.model, trainer.run.writer
    record = 4 if trainer.iteration % args.image_every == 0 else 0
    codes, frames = model.gibbs(
        batch, args.chains, args.sweeps, args.beta_start, args.beta_end, trainer.generator, record=record
    )
    sse = model.chain_sse(batch, codes)
    weights = torch.softmax(-args.weight_beta * sse.detach(), dim=1)
    loss = (weights * sse).sum(1).mean()
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    trainer.usage += prototype_usage(codes, model)
    trainer.iteration += 1
    step, usage = trainer.iteration, trainer.usage
    if step % args.log_every == 0:
        best_sse, entropy = sse.min(1).values.mean().item(), usage_entropy(usage)
        writer.add_scalar("losses/weighted_sse", loss.item(), step)
        writer.add_scalar("charts/best_chain_sse", best_sse, step)
        writer.add_scalar("charts/usage_entropy_bits", entropy, step)
        writer.add_scalar("charts/unused_prototypes", int((usage == 0).sum()), step)
        writer.add_scalar("charts/empty_components", (codes == model.null_code).float().mean().item(), step)
        trainer.figures = {"sse": f"{best_sse:.2f}", "entropy": f"{entropy:.2f}"}
        trainer.budget.advance(0, **trainer.figures)
    if args.reseed_every and step % args.reseed_every == 0:
        residual = batch - model.reconstruct(codes[:, 0]).detach()
        writer.add_scalar("charts/reseeded", reseed_unused(model, usage, residual, trainer.cpu_generator), step)
        usage.zero_()
    if record:
        log_image_grid(writer, "cgae/prototypes", prototype_images(model), step)
        add_gif(writer, "cgae/gibbs_sweeps", sweep_frames(batch[:record], frames, args.patch_size), step)


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


def prototype_images(model: CGAE) -> torch.Tensor:
    """Prototypes scaled to [0, 1] each and enlarged 4x, for the image log."""
    prototypes = model.prototypes.detach()
    low = prototypes.amin(dim=(1, 2, 3), keepdim=True)
    high = prototypes.amax(dim=(1, 2, 3), keepdim=True)
    return F.interpolate((prototypes - low) / (high - low).clamp_min(1e-6), scale_factor=4, mode="nearest")


@torch.no_grad()
def encode(
    model: CGAE, images: torch.Tensor, args: Args, generator: torch.Generator, batch_size: int = 32
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


def finish(trainer: Trainer) -> dict:
    """Encode and score the held-out images, log them and save the final checkpoint; returns the figures."""
    args, model, run = trainer.args, trainer.model, trainer.run
    wall_seconds = trainer.budget.elapsed
    held_out = held_out_images(args, run.device, image_size=args.image_size, patch_size=args.patch_size)
    codes, seconds = encode(model, held_out, args, trainer.generator)
    with torch.no_grad():
        reconstructions = model.reconstruct(codes)
    eval_usage = prototype_usage(codes, model)
    metrics = reconstruction_metrics(held_out, reconstructions, model.bits_per_image, seconds)
    metrics.update(
        wall_seconds=wall_seconds,
        epochs=round(trainer.iteration / trainer.batches_per_epoch, 2),
        iterations=trainer.iteration,
        usage_entropy_bits=usage_entropy(eval_usage),
        prototypes_used=int((eval_usage > 0).sum()),
        num_prototypes=args.prototypes,
        empty_components=float((codes == model.null_code).float().mean()),
    )
    step = trainer.iteration
    return run.finish(held_out, reconstructions, metrics, step, model, model.config(), iteration=step)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    trainer = set_up(args)
    train(trainer)
    metrics = finish(trainer)
    usage = {"prototypes used": f"{metrics['prototypes_used']}/{args.prototypes}"}
    usage["usage entropy (bits)"] = f"{metrics['usage_entropy_bits']:.2f}"
    return report(args, metrics, epoch_row(f"CGAE H={args.components}", metrics, **usage))


if __name__ == "__main__":
    main()
