"""Train a VQ-VAE (``--model vqvae``) or a VAE (``--model vae``) with the same conv encoder/decoder.

    python -m train.vqvae                                                  # VQ-VAE on shapes, 7x7 grid, 52 codes
    python -m train.vqvae --dataset mnist --data-root DIR --split "test[:8000]" --eval-split "test[8000:]"
    python -m train.vqvae --match-bits 139 --grid 4                        # K chosen for about 139 bits/image
    python -m train.vqvae --model vae --kl-beta 0.3 --metrics-json vae.json   # a VAE at one rate

The loss is the SSE per image plus, for the VQ-VAE, the codebook loss and ``--commitment`` times
the commitment loss (straight-through gradients to the encoder); for the VAE ``--kl-beta``
times the KL in nats. The VQ-VAE codebook starts from k-means++ over the first batch's encoder
outputs, and codes unused during an epoch are moved to random encoder outputs. Bits per image:
VQ-VAE m^2 log2 K; VAE the mean KL on the held-out split, in bits (``--kl-beta`` sweeps it).
The default 52 codes on a 7x7 grid give 49 log2 52 = 279 bits, the bits of a 16-step painter
program on MNIST (K=32 prototypes, 3 levels, moves across the whole canvas).

The run trains for ``--minutes`` (``--epochs`` caps it; the clock is read before every batch),
then scores ``--eval-split``. Images of any number of channels work; their size must be a
multiple of 4 and at least 4 ``--grid`` (``--image-size`` resizes them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from decoders.autoencoders import KINDS, Autoencoder, codes_for_bits
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


@dataclass
class Args(EpochArgs):
    model: str = arg("vqvae", "vqvae (discrete codes) or vae (Gaussian codes)", choices=KINDS)
    grid: int = arg(7, "m, the code is an m x m grid of vectors (m <= image size / 4)", at_least=1)
    dim: int = arg(16, "D, dimensions of each grid vector", at_least=1)
    codes: int = arg(52, "K, VQ-VAE codebook size", at_least=2)
    match_bits: float = arg(
        None, "choose K so that m^2 log2 K is closest to these bits per image (overrides --codes)", type=float, above=0
    )
    commitment: float = arg(0.25, "weight of the VQ-VAE commitment loss (gamma)", at_least=0)
    kl_beta: float = arg(1.0, "weight of the VAE's KL term (sweeps its rate)", at_least=0)
    hidden: int = arg(64, "channels of the conv layers", at_least=2)
    batch_size: int = arg(64, "images per iteration", at_least=1)
    lr: float = arg(1e-3, "Adam learning rate", above=0)
    log_every: int = arg(50, "iterations between scalar logs and progress-bar updates", at_least=1)


@dataclass
class Trainer:
    """What the loop carries from one batch to the next; ``iteration`` batches are done."""

    args: Args
    model: Autoencoder
    images: torch.Tensor
    run: Run
    budget: Budget
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    noise: torch.Generator
    iteration: int = 0
    figures: dict = field(default_factory=dict)  # the latest losses, shown on the progress bar

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.images) // self.args.batch_size)


def set_up(args: Args) -> Trainer:
    """Load the data, build the model and open the run; a bad flag or missing data is one error line."""
    with user_errors():
        apply_threads_and_seed(args)
        codes = codes_for_bits(args.match_bits, args.grid) if args.match_bits else args.codes
        images = load_split(args, args.split, image_size=args.image_size)
        held_out_images(args, "cpu", image_size=args.image_size)  # a missing held-out split stops the run now
        channels, size = images.shape[1], images.shape[-1]
        if size % 4 or args.grid > size // 4:
            raise ValueError(
                f"--grid {args.grid} needs images whose size is a multiple of 4 and at least {4 * args.grid}, "
                f"got {size} (resize them with --image-size)"
            )
        if args.model == "vqvae" and len(images) * args.grid**2 < codes:
            raise ValueError(
                f"{codes} codes need at least {codes} code vectors to start from, but {len(images)} fit images "
                f"of a {args.grid}x{args.grid} grid give {len(images) * args.grid**2}: use fewer codes or bits, "
                "a larger --grid or more images"
            )
        model = Autoencoder(args.model, channels, size, args.grid, args.dim, codes, args.commitment, args.hidden)
        budget = Budget(args.minutes, args.epochs, "--epochs", unit="epoch")
        run = start_run(args, args.model, num_codes=codes)
    model = model.to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.Generator(device=run.device).manual_seed(args.seed)
    return Trainer(args, model, images.to(run.device), run, budget, optimizer, generator, noise)


def seeding_images(trainer: Trainer) -> int:
    """How many images' code vectors start the codebook's k-means++: a batch, or enough for four a code."""
    needed = -(-4 * trainer.model.settings["num_codes"] // trainer.args.grid**2)
    return min(len(trainer.images), max(trainer.args.batch_size, needed))


def train_epoch(trainer: Trainer) -> None:
    """One shuffled pass (cut short when the time is up); dead VQ codes are reseeded after a full pass."""
    args, model, budget, writer = trainer.args, trainer.model, trainer.budget, trainer.run.writer
    images, device = trainer.images, trainer.images.device
    order = torch.randperm(len(images), generator=trainer.generator).to(device)
    usage = torch.zeros(model.settings["num_codes"], dtype=torch.long, device=device)
    for start in range(0, len(images), args.batch_size):
        if budget.out_of_time():
            return
        batch = images[order[start : start + args.batch_size]]
        if model.kind == "vqvae" and trainer.iteration == 0:
            with torch.no_grad():
                features = model.encoder(images[order[: seeding_images(trainer)]])
            model.bottleneck.reseed(features.permute(0, 2, 3, 1).reshape(-1, args.dim), None, trainer.generator)
        out = model(batch, trainer.noise)
        sse = (batch - out["reconstruction"]).square().flatten(1).sum(1).mean()
        penalty = out["penalty"].mean()
        loss = sse + (args.kl_beta * penalty if model.kind == "vae" else penalty)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        trainer.iteration += 1
        if model.kind == "vqvae":
            usage += torch.bincount(out["codes"].reshape(-1), minlength=len(usage))
            last_features = out["features"].detach().permute(0, 2, 3, 1).reshape(-1, args.dim)
        if trainer.iteration % args.log_every == 0:
            writer.add_scalar("losses/sse", sse.item(), trainer.iteration)
            writer.add_scalar("losses/penalty", penalty.item(), trainer.iteration)
            trainer.figures = {"sse": f"{sse.item():.2f}", "penalty": f"{penalty.item():.2f}"}
            budget.advance(0, **trainer.figures)
    budget.advance(1, **trainer.figures)
    if model.kind == "vqvae":
        writer.add_scalar("charts/codes_used", int((usage > 0).sum()), trainer.iteration)
        reseeded = model.bottleneck.reseed(last_features, usage, trainer.generator)
        writer.add_scalar("charts/dead_codes_reseeded", reseeded, trainer.iteration)


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> tuple[dict, torch.Tensor]:
    """Standard figures of ``images`` and the reconstructions; VAE codes are the posterior means, their rate the KL."""
    model.eval()
    parts, penalties, seconds = [], [], 0.0
    for start in range(0, len(images), batch_size):
        began = time.perf_counter()
        out = model(images[start : start + batch_size])
        seconds += time.perf_counter() - began
        parts.append(out["reconstruction"])
        penalties.append(out["penalty"])
    model.train()
    penalty = torch.cat(penalties)
    bits = model.bits_per_image(penalty if model.kind == "vae" else None)
    reconstructions = torch.cat(parts)
    return reconstruction_metrics(images, reconstructions, bits, seconds), reconstructions


def finish(trainer: Trainer) -> dict:
    """Score the held-out images, log them and save the final checkpoint; returns the figures."""
    args, model = trainer.args, trainer.model
    wall_seconds = trainer.budget.elapsed
    held_out = held_out_images(args, trainer.run.device, image_size=args.image_size)
    metrics, reconstructions = evaluate(model, held_out)
    metrics.update(
        wall_seconds=wall_seconds,
        epochs=round(trainer.iteration / trainer.batches_per_epoch, 2),
        iterations=trainer.iteration,
        num_codes=model.settings["num_codes"],
        kl_beta=args.kl_beta,
    )
    return trainer.run.finish(held_out, reconstructions, metrics, trainer.iteration, model, model.settings)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    trainer = set_up(args)
    trainer.run.train_epochs(trainer.model, trainer.model.settings, trainer.budget, lambda: train_epoch(trainer))
    metrics = finish(trainer)
    return report(args, metrics, epoch_row(args.model, metrics, **{"images/s": f"{metrics['images_per_second']:.0f}"}))


if __name__ == "__main__":
    main()
