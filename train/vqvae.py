"""Train a VQ-VAE (``--model vqvae``) or a VAE (``--model vae``) with the same conv encoder/decoder.

    python -m train.vqvae --data-root ../shared/data/mnist                    # VQ-VAE, 7x7 grid, 52 codes
    python -m train.vqvae --match-bits 139 --grid 4                               # K chosen for ~139 bits/image
    python -m train.vqvae --model vae --kl-beta 0.3 --metrics-json vae.json      # a VAE at one rate

The loss is the SSE per image plus, for the VQ-VAE, the codebook loss and ``--commitment`` times
the commitment loss (straight-through gradients to the encoder); for the VAE ``--kl-beta``
times the KL in nats. The VQ-VAE codebook starts from k-means++ over the first batch's encoder
outputs, and codes unused during an epoch are moved to random encoder outputs. Bits per image:
VQ-VAE m^2 log2 K; VAE the mean KL on the held-out split, in bits (``--kl-beta`` sweeps it).
The default 52 codes on a 7x7 grid give 279 bits, the bits of a 16-step painter program on
MNIST (K=32 prototypes, 3 levels, moves across the whole canvas).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from decoders.autoencoders import KINDS, Autoencoder, codes_for_bits
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics
from train.common.run import CommonArgs, held_out_images, load_split, report, start_run, user_errors


@dataclass
class Args(CommonArgs):
    model: str = arg("vqvae", "vqvae (discrete codes) or vae (Gaussian codes)", choices=KINDS)
    grid: int = arg(7, "m, the code is an m x m grid of vectors (m <= image size / 4)")
    dim: int = arg(16, "D, dimensions of each grid vector")
    codes: int = arg(52, "K, VQ-VAE codebook size")
    match_bits: float = arg(None, "choose K so that m^2 log2 K is closest to these bits per image", type=float)
    commitment: float = arg(0.25, "weight of the VQ-VAE commitment loss (gamma)")
    kl_beta: float = arg(1.0, "weight of the VAE's KL term (sweeps its rate)")
    hidden: int = arg(64, "channels of the conv layers")
    batch_size: int = arg(64, "images per iteration")
    epochs: int = arg(15, "passes over the fitting split")
    lr: float = arg(1e-3, "Adam learning rate")
    log_every: int = arg(50, "iterations between scalar logs")


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


def train(args: Args) -> tuple[Autoencoder, dict]:
    """Fit on ``args.split``, score on ``args.eval_split``; returns the model and the figures."""
    with user_errors():
        codes = codes_for_bits(args.match_bits, args.grid) if args.match_bits else args.codes
        images = load_split(args, args.split)
        held_out_images(args, "cpu")  # a missing held-out split stops the run before training, not after
        run = start_run(args, args.model, num_codes=codes)
    device, writer = run.device, run.writer
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.Generator(device=device).manual_seed(args.seed)
    images = images.to(device)
    model = Autoencoder(
        args.model, images.shape[1], images.shape[-1], args.grid, args.dim, codes, args.commitment, args.hidden
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    began, iteration = time.perf_counter(), 0
    epochs = 0
    with run.interruptible(model, model.settings):
        for _ in (progress := tqdm(range(args.epochs), desc=args.model)):
            if time.perf_counter() - began > 60 * args.minutes:
                break
            epochs += 1
            order = torch.randperm(len(images), generator=generator).to(device)
            usage = torch.zeros(codes, dtype=torch.long, device=device)
            for start in range(0, len(images), args.batch_size):
                batch = images[order[start : start + args.batch_size]]
                if model.kind == "vqvae" and iteration == 0:
                    with torch.no_grad():
                        features = model.encoder(batch)
                    model.bottleneck.reseed(features.permute(0, 2, 3, 1).reshape(-1, args.dim), None, generator)
                out = model(batch, noise)
                sse = (batch - out["reconstruction"]).square().flatten(1).sum(1).mean()
                penalty = out["penalty"].mean()
                loss = sse + (args.kl_beta * penalty if model.kind == "vae" else penalty)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                iteration += 1
                if model.kind == "vqvae":
                    usage += torch.bincount(out["codes"].reshape(-1), minlength=codes)
                    last_features = out["features"].detach().permute(0, 2, 3, 1).reshape(-1, args.dim)
                if iteration % args.log_every == 0:
                    writer.add_scalar("losses/sse", sse.item(), iteration)
                    writer.add_scalar("losses/penalty", penalty.item(), iteration)
                progress.set_postfix(sse=f"{sse.item():.2f}", penalty=f"{penalty.item():.2f}")
            if model.kind == "vqvae":
                writer.add_scalar("charts/codes_used", int((usage > 0).sum()), iteration)
                writer.add_scalar(
                    "charts/dead_codes_reseeded", model.bottleneck.reseed(last_features, usage, generator), iteration
                )
    wall_seconds = time.perf_counter() - began
    held_out = held_out_images(args, device)
    metrics, reconstructions = evaluate(model, held_out)
    metrics.update(
        wall_seconds=wall_seconds, epochs=epochs, iterations=iteration, num_codes=codes, kl_beta=args.kl_beta
    )
    run.finish(held_out, reconstructions, metrics, iteration, model, model.settings)
    return model, metrics


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    _, metrics = train(args)
    return report(
        args,
        metrics,
        {
            "model": args.model,
            "bits/image": f"{metrics['bits_per_image']:.0f}",
            "SSE": f"{metrics['sse']:.2f}",
            "PSNR": f"{metrics['psnr']:.2f}",
            "images/s": f"{metrics['images_per_second']:.0f}",
            "epochs": str(metrics["epochs"]),
            "wall s": f"{metrics['wall_seconds']:.0f}",
        },
    )


if __name__ == "__main__":
    main()
