"""Fit the CGAE additive model (seed 000) with its batched Gibbs sampler.

    python -m train.cgae --data-root /work/shared/data/mnist            # MNIST, ~12 minutes on 2 cores
    python -m train.cgae --components 8 --minutes 3 --metrics-json cgae.json

Each iteration draws a batch of images, runs ``--chains`` annealed Gibbs chains per image
(``--sweeps`` sweeps, beta from ``--beta-start`` to ``--beta-end``) with the prototypes fixed,
then takes one gradient step on the prototypes with the sampled placements fixed. The chains are
weighted by the softmax of their log-likelihood ``-weight_beta * SSE`` (detached), as in the
seed's ``logp.softmax(0).detach() * logp``. Prototype usage and its entropy are logged; every
``--reseed-every`` iterations prototypes nobody used are reseeded from patches of missing ink.
At the end the held-out ``--eval-split`` is encoded (best of ``--chains`` chains per image) and
scored; bits per image = H log2(K * rows * cols + 1).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from decoders.cgae import CGAE, cgae_from_images, prototype_usage, reseed_unused, usage_entropy
from painter_env.config import device_of
from painter_env.datasets import load_images
from painter_env.rendering import render_frame, tile_frames
from train.common.checkpoint import save_checkpoint
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics, write_metrics_json
from train.common.tensorboard import add_gif, log_hparams_text, log_image_grid, make_writer

CHECKPOINT_KIND = "cgae"


@dataclass
class Args:
    dataset: str = arg("mnist", "mnist, fashion-mnist, shapes or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files", type=str)
    download: bool = arg(False, "fetch mnist / fashion-mnist into --data-root with torchvision if missing")
    split: str = arg("test[:8000]", "split to fit")
    eval_split: str = arg("test[8000:]", "held-out split scored at the end")
    eval_images: int = arg(2000, "number of held-out images scored at the end")
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
    minutes: float = arg(8.0, "stop training after this many minutes (the evaluation comes after)")
    lr: float = arg(3e-3, "Adam learning rate of the prototypes")
    reseed_every: int = arg(25, "iterations between reseeding unused prototypes (0: never)")
    log_every: int = arg(10, "iterations between scalar logs")
    image_every: int = arg(50, "iterations between prototype, reconstruction and Gibbs-animation logs")
    seed: int = arg(1, "random seed (initialisation, data order, sampling)")
    device: str = arg("cpu", "cpu or cuda")
    logdir: str = arg("runs", "TensorBoard folder (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "checkpoint folder (one sub-folder per run)")
    run_name: str = arg(None, "name of the run (default: cgae, dataset, H, seed and time)", type=str)
    metrics_json: str = arg(None, "write the final figures (on --eval-split) as JSON here", type=str)


def sweep_frames(images: torch.Tensor, frames: list[torch.Tensor], patch_size: int) -> list[np.ndarray]:
    """Target | reconstruction | residual after each sweep, the images stacked vertically."""
    return [
        tile_frames([render_frame(target.numpy(), canvas.numpy(), None, patch_size, 4)
                     for target, canvas in zip(images.cpu(), frame.cpu())])
        for frame in frames
    ]


@torch.no_grad()
def encode(model: CGAE, images: torch.Tensor, args: Args, generator: torch.Generator, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """Best-of-chains codes ``(N, H)`` of ``images`` and the seconds spent encoding."""
    best, seconds = [], 0.0
    for start in tqdm(range(0, len(images), batch_size), desc="encoding", leave=False):
        batch = images[start:start + batch_size]
        began = time.perf_counter()
        codes, _ = model.gibbs(batch, args.chains, args.eval_sweeps, args.beta_start, args.beta_end, generator)
        choice = model.chain_sse(batch, codes).argmin(1)
        best.append(codes[torch.arange(len(batch), device=codes.device), choice])
        seconds += time.perf_counter() - began
    return torch.cat(best), seconds


def train(args: Args) -> tuple[CGAE, dict]:
    """Fit on ``args.split``, score on ``args.eval_split``; returns the model and the figures."""
    device = device_of(args.device)
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    cpu_generator = torch.Generator().manual_seed(args.seed)
    images = load_images(args.dataset, args.split, args.data_root, args.download, patch_size=args.patch_size).images
    model = cgae_from_images(images, args.prototypes, args.patch_size, args.components, seed=args.seed).to(device)
    images = images.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    run_name = args.run_name or f"cgae__{args.dataset}__H{args.components}__s{args.seed}__{int(time.time())}"
    writer = make_writer(args.logdir, run_name)
    log_hparams_text(writer, {**dataclasses.asdict(args), "run_name": run_name})
    checkpoint_path = Path(args.checkpoint_dir) / run_name / "checkpoint.pt"
    usage = torch.zeros(args.prototypes, dtype=torch.long, device=device)
    began, iteration = time.perf_counter(), 0
    total = args.epochs * -(-len(images) // args.batch_size)
    progress = tqdm(total=total, desc="cgae")
    for _ in range(args.epochs):
        order = torch.randperm(len(images), generator=cpu_generator).to(device)
        for start in range(0, len(images), args.batch_size):
            if time.perf_counter() - began > 60 * args.minutes:
                break
            batch = images[order[start:start + args.batch_size]]
            record = 4 if iteration % args.image_every == 0 else 0
            codes, frames = model.gibbs(batch, args.chains, args.sweeps, args.beta_start, args.beta_end, generator, record=record)
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
                writer.add_scalar("charts/empty_components", (codes == model.null_code).float().mean().item(), iteration)
                progress.set_postfix(sse=f"{sse.min(1).values.mean().item():.2f}", entropy=f"{usage_entropy(usage):.2f}")
            if args.reseed_every and iteration % args.reseed_every == 0:
                residual = batch - model.reconstruct(codes[:, 0]).detach()
                writer.add_scalar("charts/reseeded", reseed_unused(model, usage, residual, cpu_generator), iteration)
                usage.zero_()
            if record:
                log_image_grid(writer, "cgae/prototypes", prototype_images(model), iteration)
                add_gif(writer, "cgae/gibbs_sweeps", sweep_frames(batch[:record], frames, args.patch_size), iteration)
        save_checkpoint(checkpoint_payload(model, args, run_name, iteration), checkpoint_path)
    progress.close()
    wall_seconds = time.perf_counter() - began
    held_out = load_images(args.dataset, args.eval_split, args.data_root, args.download, patch_size=args.patch_size).images
    held_out = held_out[: args.eval_images].to(device)
    codes, seconds = encode(model, held_out, args, generator)
    with torch.no_grad():
        reconstructions = model.reconstruct(codes)
    eval_usage = prototype_usage(codes, model)
    metrics = reconstruction_metrics(held_out, reconstructions, model.bits_per_image, seconds)
    metrics.update(wall_seconds=wall_seconds, iterations=iteration, usage_entropy_bits=usage_entropy(eval_usage),
                   prototypes_used=int((eval_usage > 0).sum()), num_prototypes=args.prototypes,
                   empty_components=float((codes == model.null_code).float().mean()))
    if args.dataset == "shapes":  # the optimal return of a shapes image is its blank-canvas SSE
        metrics["optimal_return_fraction"] = 1.0 - metrics["sse"] / float(held_out.square().flatten(1).sum(1).mean())
    log_image_grid(writer, "eval/targets_and_reconstructions", torch.cat([held_out[:8], reconstructions[:8].clamp(0, 1)]), iteration)
    for name, value in metrics.items():
        writer.add_scalar(f"eval/{name}", value, iteration)
    writer.close()
    save_checkpoint(checkpoint_payload(model, args, run_name, iteration), checkpoint_path)
    return model, metrics


def prototype_images(model: CGAE) -> torch.Tensor:
    """Prototypes scaled to [0, 1] each and enlarged 4x, for the image log."""
    prototypes = model.prototypes.detach()
    low = prototypes.amin(dim=(1, 2, 3), keepdim=True)
    high = prototypes.amax(dim=(1, 2, 3), keepdim=True)
    return F.interpolate((prototypes - low) / (high - low).clamp_min(1e-6), scale_factor=4, mode="nearest")


def checkpoint_payload(model: CGAE, args: Args, run_name: str, iteration: int) -> dict:
    return {"kind": CHECKPOINT_KIND, "version": 1, "run_name": run_name, "iteration": iteration,
            "config": model.config(), "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "args": dataclasses.asdict(args)}


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    _, metrics = train(args)
    write_metrics_json(args.metrics_json, metrics)
    print("| model | bits/image | SSE | PSNR | prototypes used | usage entropy (bits) | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| CGAE H={args.components} | {metrics['bits_per_image']:.0f} | {metrics['sse']:.2f} | {metrics['psnr']:.2f} "
          f"| {metrics['prototypes_used']}/{args.prototypes} | {metrics['usage_entropy_bits']:.2f} | {metrics['wall_seconds']:.0f} |")
    return metrics


if __name__ == "__main__":
    main()
