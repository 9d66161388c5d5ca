"""Train a VQ-VAE (``--model vqvae``) or a VAE (``--model vae``) with the same conv encoder/decoder.

    python -m train.vqvae --data-root /work/shared/data/mnist                    # VQ-VAE, 7x7 grid, 52 codes
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

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from decoders.autoencoders import KINDS, Autoencoder, codes_for_bits
from painter_env.config import device_of
from painter_env.datasets import load_images
from train.common.checkpoint import save_checkpoint
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics, write_metrics_json
from train.common.tensorboard import log_hparams_text, log_image_grid, make_writer


@dataclass
class Args:
    model: str = arg("vqvae", "vqvae (discrete codes) or vae (Gaussian codes)", choices=KINDS)
    dataset: str = arg("mnist", "mnist, fashion-mnist, shapes or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files", type=str)
    download: bool = arg(False, "fetch mnist / fashion-mnist into --data-root with torchvision if missing")
    split: str = arg("test[:8000]", "split to fit")
    eval_split: str = arg("test[8000:]", "held-out split scored at the end")
    eval_images: int = arg(None, "score only the first N held-out images (default: all)", type=int)
    grid: int = arg(7, "m, the code is an m x m grid of vectors (m <= image size / 4)")
    dim: int = arg(16, "D, dimensions of each grid vector")
    codes: int = arg(52, "K, VQ-VAE codebook size")
    match_bits: float = arg(None, "choose K so that m^2 log2 K is closest to these bits per image", type=float)
    commitment: float = arg(0.25, "weight of the VQ-VAE commitment loss (gamma)")
    kl_beta: float = arg(1.0, "weight of the VAE's KL term (sweeps its rate)")
    hidden: int = arg(64, "channels of the conv layers")
    batch_size: int = arg(64, "images per iteration")
    epochs: int = arg(15, "passes over the fitting split")
    minutes: float = arg(10.0, "stop training after this many minutes (the evaluation comes after)")
    lr: float = arg(1e-3, "Adam learning rate")
    log_every: int = arg(50, "iterations between scalar logs")
    seed: int = arg(1, "random seed (initialisation, data order, VAE noise)")
    device: str = arg("cpu", "cpu or cuda")
    logdir: str = arg("runs", "TensorBoard folder (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "checkpoint folder (one sub-folder per run)")
    run_name: str = arg(None, "name of the run (default: model, dataset, seed and time)", type=str)
    metrics_json: str = arg(None, "write the final figures (on --eval-split) as JSON here", type=str)


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> dict:
    """Standard figures of ``images``; VAE codes are the posterior means, their rate the KL."""
    model.eval()
    parts, penalties, seconds = [], [], 0.0
    for start in range(0, len(images), batch_size):
        began = time.perf_counter()
        out = model(images[start:start + batch_size])
        seconds += time.perf_counter() - began
        parts.append(out["reconstruction"])
        penalties.append(out["penalty"])
    model.train()
    penalty = torch.cat(penalties)
    bits = model.bits_per_image(penalty if model.kind == "vae" else None)
    return reconstruction_metrics(images, torch.cat(parts), bits, seconds)


def train(args: Args) -> tuple[Autoencoder, dict]:
    """Fit on ``args.split``, score on ``args.eval_split``; returns the model and the figures."""
    device = device_of(args.device)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.Generator(device=device).manual_seed(args.seed)
    images = load_images(args.dataset, args.split, args.data_root, args.download).images.to(device)
    codes = codes_for_bits(args.match_bits, args.grid) if args.match_bits else args.codes
    model = Autoencoder(args.model, images.shape[1], images.shape[-1], args.grid, args.dim, codes,
                        args.commitment, args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    run_name = args.run_name or f"{args.model}__{args.dataset}__s{args.seed}__{int(time.time())}"
    writer = make_writer(args.logdir, run_name)
    log_hparams_text(writer, {**dataclasses.asdict(args), "run_name": run_name, "num_codes": codes})
    began, iteration = time.perf_counter(), 0
    for epoch in (progress := tqdm(range(args.epochs), desc=args.model)):
        if time.perf_counter() - began > 60 * args.minutes:
            break
        order = torch.randperm(len(images), generator=generator).to(device)
        usage = torch.zeros(codes, dtype=torch.long, device=device)
        for start in range(0, len(images), args.batch_size):
            batch = images[order[start:start + args.batch_size]]
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
            writer.add_scalar("charts/dead_codes_reseeded", model.bottleneck.reseed(last_features, usage, generator), iteration)
    wall_seconds = time.perf_counter() - began
    held_out = load_images(args.dataset, args.eval_split, args.data_root, args.download).images[: args.eval_images].to(device)
    metrics = evaluate(model, held_out)
    metrics.update(wall_seconds=wall_seconds, epochs=epoch + 1, iterations=iteration, num_codes=codes, kl_beta=args.kl_beta)
    if args.dataset == "shapes":  # the optimal return of a shapes image is its blank-canvas SSE
        metrics["optimal_return_fraction"] = 1.0 - metrics["sse"] / float(held_out.square().flatten(1).sum(1).mean())
    with torch.no_grad():
        model.eval()
        log_image_grid(writer, "eval/targets_and_reconstructions",
                       torch.cat([held_out[:8], model(held_out[:8])["reconstruction"]]), iteration)
    for name, value in metrics.items():
        writer.add_scalar(f"eval/{name}", value, iteration)
    writer.close()
    save_checkpoint({"kind": args.model, "version": 1, "run_name": run_name, "config": model.settings,
                     "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     "args": dataclasses.asdict(args)}, Path(args.checkpoint_dir) / run_name / "checkpoint.pt")
    return model, metrics


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    _, metrics = train(args)
    write_metrics_json(args.metrics_json, metrics)
    print("| model | bits/image | SSE | PSNR | images/s | epochs | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {metrics['bits_per_image']:.0f} | {metrics['sse']:.2f} | {metrics['psnr']:.2f} "
          f"| {metrics['images_per_second']:.0f} | {metrics['epochs']} | {metrics['wall_seconds']:.0f} |")
    return metrics


if __name__ == "__main__":
    main()
