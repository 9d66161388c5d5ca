"""Rate-distortion table: every encoder of the toolkit at its bits per image, on one split.

    python -m benchmarks.rate_distortion --data-root ../shared/data/mnist --json rd.json --plot rd.png
    python -m benchmarks.rate_distortion --data-root DIR --policy-checkpoint runs/checkpoints/RUN/checkpoint.pt
    python -m benchmarks.rate_distortion --data-root DIR --quick        # a smoke run in well under a minute

Fits on ``--split`` (default ``test[:8000]``) and scores ``--eval-split`` (``test[8000:]``).
Rows: mean image; PCA (E = 5, 10, 20, 50; codes counted as 32-bit floats); k-means (K = 10, 64,
256); LLGAE (K=11, E=20); CGAE-Gibbs (H = 8, 16); the greedy painter (T = 8, 16) and its Gibbs
refinement; the policy painter and its Gibbs refinement (from ``--policy-checkpoint``, through
``python -m train.evaluate`` in a subprocess; skipped with a note otherwise); a VQ-VAE at about
the 16-step painter's bits; VAEs at several KL weights. Columns: bits per image, SSE, PSNR,
encode images/s, fit wall seconds. Trained models get ``--minutes`` each. Also measures the cost
of one CGAE Gibbs conditional against one conv2d (same batch, same dictionary, same process).
Prints markdown tables, writes ``--json`` and draws ``--plot`` (PNG, matplotlib Agg backend).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from agents.gibbs import refine_programs
from agents.greedy import greedy_programs
from decoders.cgae import cgae_from_images
from decoders.dictionary import kmeans_plus_plus
from decoders.kernel import decode
from painter_env.config import PainterConfig, build_painter, device_of
from painter_env.datasets import load_images
from train import cgae as cgae_trainer
from train import llgae as llgae_trainer
from train import vqvae as vqvae_trainer
from train.common.config import arg, parse_args
from train.common.metrics import program_bits, reconstruction_metrics

QUICK_FIT_SPLIT = "test[:300]"
QUICK_MINUTES = 0.01


@dataclass
class Args:
    dataset: str = arg("mnist", "dataset: mnist, fashion-mnist or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files", type=str)
    split: str = arg("test[:8000]", "split every model is fitted on")
    eval_split: str = arg("test[8000:]", "split every model is scored on")
    eval_images: int = arg(None, "score only the first N images of --eval-split", type=int)
    minutes: float = arg(3.0, "training minutes per trained model (LLGAE, CGAE, VQ-VAE, each VAE)")
    gibbs_sweeps: int = arg(4, "sweeps of Gibbs refinement of painter programs")
    kl_betas: str = arg("1.0,0.1,0.02", "comma-separated VAE KL weights (one row each)")
    policy_checkpoint: str = arg(None, "train.reinforce checkpoint for the policy-painter rows", type=str)
    quick: bool = arg(
        False, f"smoke run: fit on {QUICK_FIT_SPLIT}, 16 held-out images, about one iteration per model, 1 Gibbs sweep"
    )
    seed: int = arg(0, "random seed")
    device: str = arg("cpu", "cpu or cuda")
    json: str = arg(None, "write the rows as JSON to this path", type=str)
    plot: str = arg(None, "draw the rate-distortion plot (PNG) to this path", type=str)


def row(name: str, family: str, metrics: dict, fit_seconds: float | None, note: str = "") -> dict:
    keys = ("bits_per_image", "sse", "psnr", "images_per_second")
    return {
        "name": name,
        "family": family,
        **{key: float(metrics[key]) for key in keys},
        "fit_seconds": fit_seconds,
        "note": note,
    }


def timed(function, *inputs):
    began = time.perf_counter()
    result = function(*inputs)
    return result, time.perf_counter() - began


def classical_rows(train: torch.Tensor, test: torch.Tensor, quick: bool, seed: int) -> list[dict]:
    """Mean image, PCA and k-means, fitted in torch."""
    rows = []
    flat, shape = train.flatten(1), test.shape
    mean, fit = timed(lambda: flat.mean(0))
    metrics, seconds = timed(lambda: reconstruction_metrics(test, mean.expand(len(test), -1).view(shape), 0.0, 1.0))
    rows.append(row("mean image", "mean", {**metrics, "images_per_second": len(test) / seconds}, fit))
    (_, _, right), fit = timed(lambda: torch.linalg.svd(flat - mean, full_matrices=False))
    for dims in (5, 10, 20, 50):
        basis = right[:dims].T
        began = time.perf_counter()
        reconstruction = mean + ((test.flatten(1) - mean) @ basis) @ basis.T
        metrics = reconstruction_metrics(test, reconstruction.view(shape), 32.0 * dims, time.perf_counter() - began)
        rows.append(row(f"PCA E={dims}", "PCA", metrics, fit, "codes as float32"))
    for count in (10, 64, 256):
        generator = torch.Generator().manual_seed(seed)
        (centres, _), fit = timed(lambda: kmeans_plus_plus(flat, count, generator, iterations=5 if quick else 25))
        began = time.perf_counter()
        reconstruction = centres[torch.cdist(test.flatten(1), centres).argmin(1)]
        metrics = reconstruction_metrics(
            test, reconstruction.view(shape), math.log2(count), time.perf_counter() - began
        )
        rows.append(row(f"k-means K={count}", "k-means", metrics, fit))
    return rows


@torch.no_grad()
def painter_rows(args: Args, fit_split: str, test: torch.Tensor, device: torch.device) -> list[dict]:
    """Greedy painter (T = 8, 16) and its Gibbs refinement, with a k-means++ dictionary."""
    painter, fit = timed(
        lambda: build_painter(
            PainterConfig(dataset=args.dataset, data_root=args.data_root, split=fit_split, seed=args.seed)
        )
    )
    dictionary, geometry = painter.dictionary.to(device), painter.geometry
    values, support = dictionary.patches()
    num_actions = geometry.num_moves**2 * dictionary.num_patches
    generator = torch.Generator(device=device).manual_seed(args.seed)
    rows = []
    for steps in (8, 16):
        programs, greedy_seconds, refined, refine_seconds = [], 0.0, [], 0.0
        for start in tqdm(range(0, len(test), 256), desc=f"painter T={steps}", leave=False):
            batch = test[start : start + 256]
            (actions, _), seconds = timed(greedy_programs, batch, dictionary, geometry, steps)
            greedy_seconds += seconds
            better, seconds = timed(
                lambda: refine_programs(batch, actions, dictionary, geometry, args.gibbs_sweeps, generator=generator)
            )
            refine_seconds += seconds
            programs.append(actions)
            refined.append(better)
        bits = program_bits(steps, num_actions)
        for name, actions, seconds in (
            ("greedy painter", programs, greedy_seconds),
            ("greedy + Gibbs painter", refined, greedy_seconds + refine_seconds),
        ):
            canvas = decode(torch.cat(actions), values, support, dictionary.num_levels, geometry)
            metrics = reconstruction_metrics(test, canvas, bits, seconds)
            rows.append(row(f"{name} T={steps}", "painter", metrics, fit, "K=32 k-means++ patches, L=3, R=7"))
    return rows


def policy_rows(args: Args, test_count: int) -> tuple[list[dict], list[str]]:
    """The policy painter and its Gibbs refinement, evaluated by ``train.evaluate`` in a subprocess."""
    if args.policy_checkpoint is None:
        return [], ["policy painter rows skipped: no --policy-checkpoint given"]
    rows, notes = [], []
    for encoder, name in (("policy", "policy painter"), ("gibbs", "policy + Gibbs painter")):
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "metrics.json"
            command = [
                sys.executable,
                "-m",
                "train.evaluate",
                "--checkpoint",
                args.policy_checkpoint,
                "--encoder",
                encoder,
                "--split",
                args.eval_split,
                "--num-images",
                str(test_count),
                "--gibbs-sweeps",
                str(args.gibbs_sweeps),
                "--device",
                args.device,
                "--metrics-json",
                str(output),
            ]
            if args.data_root:
                command += ["--data-root", args.data_root]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0 or not output.exists():
                notes.append(f"{name} row skipped: train.evaluate failed ({done.stderr.strip().splitlines()[-1:]})")
                continue
            metrics = json.loads(output.read_text())
        rows.append(row(f"{name} T={metrics.get('steps', '?')}", "painter", metrics, None, "from --policy-checkpoint"))
    return rows, notes


def trained_rows(args: Args, fit_split: str, test_count: int, logdir: str) -> list[dict]:
    """LLGAE, CGAE (H = 8, 16), VQ-VAE and VAEs, each trained for ``--minutes``."""
    common = dict(
        dataset=args.dataset,
        data_root=args.data_root,
        split=fit_split,
        eval_split=args.eval_split,
        device=args.device,
        logdir=logdir,
        checkpoint_dir=logdir,
        seed=args.seed + 1,
    )
    quick = args.quick
    minutes = QUICK_MINUTES if quick else args.minutes
    jobs = [
        (
            "LLGAE K=11 E=20",
            "LLGAE",
            llgae_trainer,
            dict(epochs=1 if quick else 10000, minutes=minutes, eval_images=test_count),
        )
    ]
    for components in (8, 16):
        jobs.append(
            (
                f"CGAE-Gibbs H={components}",
                "CGAE",
                cgae_trainer,
                dict(
                    components=components,
                    minutes=minutes,
                    epochs=1 if quick else 100,
                    eval_images=test_count,
                    **(dict(chains=1, sweeps=1, eval_sweeps=1, image_every=1000) if quick else {}),
                ),
            )
        )
    painter_bits = program_bits(16, (2 * 21 + 1) ** 2 * 32 * 3)
    jobs.append(
        (
            "VQ-VAE 7x7",
            "VQ-VAE",
            vqvae_trainer,
            dict(
                model="vqvae",
                match_bits=painter_bits,
                epochs=1 if quick else 1000,
                minutes=minutes,
                eval_images=test_count,
            ),
        )
    )
    for beta in [float(value) for value in args.kl_betas.split(",")][: 1 if quick else None]:
        jobs.append(
            (
                f"VAE kl-beta={beta:g}",
                "VAE",
                vqvae_trainer,
                dict(model="vae", kl_beta=beta, epochs=1 if quick else 1000, minutes=minutes, eval_images=test_count),
            )
        )
    rows = []
    for name, family, trainer, settings in jobs:
        _, metrics = trainer.train(trainer.Args(**common, **settings))
        note = ""
        if family == "LLGAE":
            note = f"seed figure {metrics['seed_figure']:.0f}; {metrics['epochs']} epochs"
        elif family == "CGAE":
            note = f"{metrics['prototypes_used']}/{metrics['num_prototypes']} prototypes, usage entropy {metrics['usage_entropy_bits']:.2f} bits"
        elif family == "VQ-VAE":
            note = f"K={metrics['num_codes']}"
        rows.append(row(name, family, metrics, metrics["wall_seconds"], note))
    return rows


@torch.no_grad()
def conditional_cost(images: torch.Tensor, repeats: int, batch_size: int = 256) -> dict:
    """Median seconds of one CGAE Gibbs conditional step and of one conv2d, same batch and dictionary."""
    model = cgae_from_images(images, 32, 7, components=16, num_samples=2000)
    batch = images[:batch_size].clone()
    codes = torch.full((len(batch), 16), model.null_code, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    prototypes = model.prototypes.detach()
    conv, step = [], []
    for repeat in range(repeats + 1):
        _, seconds = timed(F.conv2d, batch, prototypes)
        conv.append(seconds)
        _, seconds = timed(model.gibbs_step, batch, codes, repeat % 16, 10.0, generator)
        step.append(seconds)
    conv, step = statistics.median(conv[1:]), statistics.median(step[1:])
    return {"batch": len(batch), "conv2d_ms": 1e3 * conv, "gibbs_step_ms": 1e3 * step, "ratio": step / conv}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | bits/image | SSE | PSNR | encode images/s | fit s | note |", "|---|---|---|---|---|---|---|"]
    for entry in rows:
        fit = "-" if entry["fit_seconds"] is None else f"{entry['fit_seconds']:.1f}"
        lines.append(
            f"| {entry['name']} | {entry['bits_per_image']:.0f} | {entry['sse']:.2f} | {entry['psnr']:.2f} "
            f"| {entry['images_per_second']:.0f} | {fit} | {entry['note']} |"
        )
    return "\n".join(lines)


def draw(rows: list[dict], path: str, title: str) -> None:
    """SSE against bits per image (log scale), one marker style per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    for family in dict.fromkeys(entry["family"] for entry in rows):
        members = [entry for entry in rows if entry["family"] == family]
        bits = [max(entry["bits_per_image"], 1.0) for entry in members]
        axes.plot(bits, [entry["sse"] for entry in members], "o", label=family)
        for entry, x in zip(members, bits):
            axes.annotate(entry["name"], (x, entry["sse"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("bits per image (0 plotted at 1)")
    axes.set_ylabel("SSE per image (pixels in [0, 1])")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    device = device_of(args.device)
    fit_split = QUICK_FIT_SPLIT if args.quick else args.split
    eval_images = args.eval_images or (16 if args.quick else None)
    if args.quick:
        args.gibbs_sweeps = 1
    train = load_images(args.dataset, fit_split, args.data_root).images.to(device)
    test = load_images(args.dataset, args.eval_split, args.data_root).images[:eval_images].to(device)
    rows = classical_rows(train, test, args.quick, args.seed)
    rows += painter_rows(args, fit_split, test, device)
    extra, notes = policy_rows(args, len(test))
    rows += extra
    with tempfile.TemporaryDirectory() as logdir:
        rows += trained_rows(args, fit_split, len(test), logdir)
    cost = conditional_cost(train.cpu(), repeats=3 if args.quick else 15, batch_size=64 if args.quick else 256)
    print(f"\nRate-distortion on {args.dataset}: fit {fit_split}, score {args.eval_split} ({len(test)} images)\n")
    print(markdown(rows))
    for note in notes:
        print(f"\n- {note}")
    print(
        "\n| Gibbs conditional (CGAE, K=32, R=7) | batch | conv2d ms | Gibbs step ms | ratio |\n|---|---|---|---|---|"
    )
    print(
        f"| one step vs one conv2d | {cost['batch']} | {cost['conv2d_ms']:.2f} | {cost['gibbs_step_ms']:.2f} | {cost['ratio']:.2f} |"
    )
    result = {
        "dataset": args.dataset,
        "split": fit_split,
        "eval_split": args.eval_split,
        "num_images": len(test),
        "rows": rows,
        "notes": notes,
        "gibbs_conditional_cost": cost,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        draw(rows, args.plot, f"{args.dataset}: fit {fit_split}, score {args.eval_split}")
    return result


if __name__ == "__main__":
    main()
