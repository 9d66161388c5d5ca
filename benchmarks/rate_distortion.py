"""Rate-distortion: the painter's encoders against VQ-VAE at matched bits, and reference coders.

    python -m benchmarks.rate_distortion --data-root ../shared/data/mnist --minutes 30 --jobs 2 \\
        --json rd.json --plot rd.png
    python -m benchmarks.rate_distortion --data-root DIR --quick        # a smoke run

At each rate of ``--bits`` (default about 70, 140 and 279 bits per image) a painter is trained by
``python -m train.reinforce --match-bits B`` (its defaults otherwise) and scored with four encoders
on the dictionary it learned: greedy search, greedy + Gibbs refinement, the policy's most likely
program, and the policy + refinement (``train.evaluate --encoder greedy|greedy-gibbs|policy|gibbs``).
Two rows say what learning made: the policy's untrained twin on the learned dictionary
(``--untrained``), and the untrained policy on a dictionary fitted by hard EM to its own programs
for the same minutes (``train.reinforce --hard-em``). A VQ-VAE is trained by
``python -m train.vqvae --match-bits B`` with the same ``--minutes``. Every
model fits ``--split`` and is scored on ``--eval-split``. Reference rows: the mean image, each
image's mean colour (8 bits a channel), PCA and k-means (fitted here), JPEG and WebP at
``--codec-qualities`` (bits of the image's own code, headers excluded: ``benchmarks.codecs``), and
with ``--baselines`` LLGAE, CGAE and VAEs (``--minutes`` each). ``--dataset`` takes any dataset of
the trainers (``cifar10``, ``folder:PATH`` with ``--image-size``).

Training and evaluation commands run as subprocesses, ``--jobs`` at a time with one thread each
(in this process when ``--jobs 1``). Prints a markdown table, writes ``--json`` and draws the
rate-distortion curves to ``--plot`` (PNG). Ctrl-C stops the running commands (a trainer saves its
checkpoint), prints and writes the rows finished so far (``"interrupted": true``) and exits 130;
the finished jobs' figures stay in the working folder (a temporary one is kept too), and the same
command with ``--workdir`` there runs only the jobs that are left.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.gibbs import SWEEPS as GIBBS_SWEEPS
from benchmarks.codecs import QUALITIES, codec_metrics
from benchmarks.jobs import Job, check_output, interrupted, run_jobs, setting_up, write_json
from decoders.dictionary import kmeans_plus_plus
from painter_env.config import device_of
from painter_env.datasets import load_images
from train.common.config import arg, parse_args
from train.common.metrics import reconstruction_metrics

QUICK = {"split": "test[:300]", "eval_images": 16, "minutes": 0.02, "bits": [70.0, 140.0]}
# (training run, encoder, extra flags) -> the family of the rows
EVALUATIONS = {
    ("painter", "greedy", ()): "painter: greedy",
    ("painter", "greedy-gibbs", ()): "painter: greedy + Gibbs",
    ("painter", "policy", ()): "painter: policy",
    ("painter", "gibbs", ()): "painter: policy + Gibbs",
    ("painter", "policy", ("--untrained",)): "painter: untrained policy",
    ("hard-em", "policy", ()): "painter, hard EM: untrained policy",
    ("hard-em", "greedy", ()): "painter, hard EM: greedy",
}
TRAININGS = {"painter": [], "hard-em": ["--hard-em"]}
KMEANS_SIZES = (10, 64, 256)  # codebook sizes of the k-means rows


@dataclass
class Args:
    dataset: str = arg("mnist", "dataset: mnist, fashion-mnist, shapes or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files (default: $PAINTER_DATA_ROOT or ./data)", type=str)
    download: bool = arg(False, "fetch mnist, fashion-mnist or cifar10 into --data-root with torchvision if missing")
    image_size: int = arg(None, "resize images to S x S (default: the images' own size)", type=int, at_least=1)
    split: str = arg("test[:8000]", "split every model is fitted on")
    eval_split: str = arg("test[8000:]", "split every model is scored on")
    eval_images: int = arg(None, "score only the first N images of --eval-split (default: all)", type=int, at_least=1)
    bits: list = arg([70.0, 140.0, 279.0], "bits per image of the matched-rate rows", type=float, above=0)
    models: list = arg(
        ["painter", "hard-em", "vqvae"],
        "the matched-rate models to train and score (hard-em: a painter whose dictionary alone is fitted, by hard EM)",
        type=str,
        choices=("painter", "hard-em", "vqvae"),
    )
    minutes: float = arg(30.0, "training minutes of every trained model (painter, VQ-VAE, baselines)", above=0)
    jobs: int = arg(2, "commands run at once, one thread each (1: in this process, one after another)", at_least=1)
    gibbs_sweeps: int = arg(GIBBS_SWEEPS, "sweeps of Gibbs refinement of the greedy and policy programs", at_least=0)
    codec_qualities: list = arg(
        list(QUALITIES), "qualities of the JPEG and WebP rows (none: no codec rows)", type=int, at_least=0
    )
    baselines: bool = arg(False, "also train LLGAE, CGAE and VAEs (--minutes each)")
    kl_betas: list = arg([1.0, 0.1, 0.02], "KL weights of the VAE rows (with --baselines)", type=float, at_least=0)
    quick: bool = arg(
        False,
        "smoke run; where not given otherwise: fit on test[:300], score 16 images, rates 70 and 140, "
        "about a second of training per model",
    )
    seed: int = arg(1, "random seed of every model")
    device: str = arg("cpu", "cpu or cuda")
    workdir: str = arg(
        None,
        "keep the runs (checkpoints, logs, metrics) here (default: a temporary folder, removed at the end "
        "unless the run is interrupted); a run whose figures are there already is not run again",
        type=str,
    )
    json: str = arg(None, "write the rows as JSON to this path", type=str)
    plot: str = arg(None, "draw the rate-distortion curves (PNG) to this path", type=str)


def data_flags(args: Args) -> list[str]:
    flags = ["--dataset", args.dataset, "--device", args.device]
    flags += ["--image-size", str(args.image_size)] if args.image_size else []
    flags += ["--download"] if args.download else []
    return flags + (["--data-root", args.data_root] if args.data_root else [])


def trainer_flags(args: Args, run: str, workdir: Path) -> list[str]:
    """The flags every trainer takes: data, splits, budget, seed, logs and checkpoints under ``workdir``."""
    flags = data_flags(args) + ["--split", args.split, "--eval-split", args.eval_split, "--minutes", str(args.minutes)]
    flags += ["--seed", str(args.seed), "--threads", "1", "--run-name", run]
    flags += ["--logdir", str(workdir / "runs"), "--checkpoint-dir", str(workdir / "checkpoints")]
    return flags + (["--eval-images", str(args.eval_images)] if args.eval_images else [])


def painter_jobs(args: Args, workdir: Path) -> tuple[list[Job], list[Job]]:
    """Per rate, the painters' training jobs (joint, hard EM) and the evaluations of their checkpoints."""
    training, evaluation = [], []
    for bits in args.bits:
        for kind, extra in TRAININGS.items():
            if kind not in args.models:
                continue
            run = f"{kind}-{bits:g}bits"
            flags = trainer_flags(args, run, workdir) + ["--match-bits", str(bits), *extra]
            training.append(Job(run, f"{kind} training", "train.reinforce", flags, workdir / f"{run}.json"))
        for (kind, encoder, extra), family in EVALUATIONS.items():
            if kind not in args.models:
                continue
            run = f"{kind}-{bits:g}bits"
            argv = ["--checkpoint", str(workdir / "checkpoints" / run / "checkpoint.pt"), "--encoder", encoder, *extra]
            argv += ["--eval-split", args.eval_split, *data_flags(args), "--threads", "1"]
            argv += ["--gibbs-sweeps", str(args.gibbs_sweeps), "--seed", str(args.seed)]
            argv += ["--eval-images", str(args.eval_images)] if args.eval_images else []
            label = "-".join([run, encoder, *(flag.strip("-") for flag in extra)])
            evaluation.append(
                Job(f"{family}, {bits:g} bits", family, "train.evaluate", argv, workdir / f"{label}.json")
            )
    return training, evaluation


def baseline_jobs(args: Args, workdir: Path) -> list[Job]:
    """VQ-VAE at each rate, and with ``--baselines`` LLGAE, CGAE and VAEs."""
    jobs = []
    if "vqvae" in args.models:
        for bits in args.bits:
            run = f"vqvae-{bits:g}bits"
            flags = trainer_flags(args, run, workdir) + ["--match-bits", str(bits)]
            jobs.append(Job(f"VQ-VAE, {bits:g} bits", "VQ-VAE", "train.vqvae", flags, workdir / f"{run}.json"))
    if args.baselines:
        flags = trainer_flags(args, "llgae", workdir)
        jobs.append(Job("LLGAE K=11 E=20", "LLGAE", "train.llgae", flags, workdir / "llgae.json"))
        for components in (8, 16):
            run = f"cgae-H{components}"
            flags = trainer_flags(args, run, workdir) + ["--components", str(components)]
            jobs.append(Job(f"CGAE-Gibbs H={components}", "CGAE", "train.cgae", flags, workdir / f"{run}.json"))
        for beta in args.kl_betas:
            run = f"vae-{beta:g}"
            flags = trainer_flags(args, run, workdir) + ["--model", "vae", "--kl-beta", str(beta)]
            jobs.append(Job(f"VAE kl-beta={beta:g}", "VAE", "train.vqvae", flags, workdir / f"{run}.json"))
    return jobs


def job_rows(jobs: list[Job]) -> list[dict]:
    rows = []
    for job in jobs:
        if job.metrics.exists():
            metrics = json.loads(job.metrics.read_text())
            note = job.note or metrics_note(metrics)
            rows.append(row(job.name, job.family, metrics, metrics.get("wall_seconds"), note))
    return rows


def metrics_note(metrics: dict) -> str:
    """What a reader needs to know of a trained row: its size and its training."""
    if "num_codes" in metrics:
        return f"K={metrics['num_codes']}, {metrics.get('epochs', '?')} epochs"
    if "steps" in metrics:
        return f"T={metrics['steps']}"
    if "iterations" in metrics:
        return f"{metrics['iterations']} iterations"
    return ""


def row(name: str, family: str, metrics: dict, fit_seconds: float | None, note: str = "") -> dict:
    keys = ("bits_per_image", "sse", "psnr", "images_per_second")
    figures = {key: float(metrics[key]) for key in keys}
    return {"name": name, "family": family, **figures, "fit_seconds": fit_seconds, "note": note}


def timed(function):
    began = time.perf_counter()
    result = function()
    return result, time.perf_counter() - began


def classical_rows(train: torch.Tensor, test: torch.Tensor, quick: bool, seed: int) -> list[dict]:
    """Mean image, PCA (codes as 32-bit floats) and k-means, fitted in torch."""
    flat, shape = train.flatten(1), test.shape
    mean, fit = timed(lambda: flat.mean(0))
    metrics, seconds = timed(lambda: reconstruction_metrics(test, mean.expand(len(test), -1).view(shape), 0.0, 1.0))
    rows = [row("mean image", "mean", {**metrics, "images_per_second": len(test) / seconds}, fit)]
    colours, seconds = timed(lambda: test.mean((2, 3), keepdim=True).mul(255).round().div(255).expand_as(test))
    metrics = reconstruction_metrics(test, colours, 8.0 * test.shape[1], seconds)
    rows.append(row("mean colour of each image", "mean", metrics, None, "8 bits a channel"))
    (_, _, right), fit = timed(lambda: torch.linalg.svd(flat - mean, full_matrices=False))
    for dims in (5, 10, 20, 50):
        basis = right[:dims].T
        codes, seconds = timed(lambda basis=basis: mean + ((test.flatten(1) - mean) @ basis) @ basis.T)
        metrics = reconstruction_metrics(test, codes.view(shape), 32.0 * dims, seconds)
        rows.append(row(f"PCA E={dims}", "PCA", metrics, fit, "codes as float32"))
    for count in KMEANS_SIZES:
        generator = torch.Generator().manual_seed(seed)
        fitting = lambda count=count, generator=generator: kmeans_plus_plus(  # noqa: E731
            flat, count, generator, iterations=5 if quick else 25
        )
        (centres, _), fit = timed(fitting)
        nearest, seconds = timed(lambda centres=centres: centres[torch.cdist(test.flatten(1), centres).argmin(1)])
        metrics = reconstruction_metrics(test, nearest.view(shape), math.log2(count), seconds)
        rows.append(row(f"k-means K={count}", "k-means", metrics, fit))
    return rows


def codec_rows(test: torch.Tensor, qualities: list[int]) -> list[dict]:
    """JPEG and WebP at each quality (``benchmarks.codecs``)."""
    rows = []
    for codec, family in (("JPEG", "JPEG"), ("WEBP", "WebP")):
        for quality in qualities:
            metrics = codec_metrics(test, codec, quality)
            rows.append(row(f"{family} quality {quality}", family, metrics, None, "headers not counted"))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | bits/image | SSE | PSNR | encode images/s | fit s | note |", "|---|---|---|---|---|---|---|"]
    for entry in rows:
        fit = "-" if entry["fit_seconds"] is None else f"{entry['fit_seconds']:.0f}"
        lines.append(
            f"| {entry['name']} | {entry['bits_per_image']:.0f} | {entry['sse']:.3f} | {entry['psnr']:.2f} "
            f"| {entry['images_per_second']:.0f} | {fit} | {entry['note']} |"
        )
    return "\n".join(lines)


CURVES = ("VQ-VAE", *EVALUATIONS.values())


def draw(rows: list[dict], path: str, title: str) -> None:
    """SSE against bits per image (log scale): the matched-rate families as curves, the rest as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    for family in dict.fromkeys(entry["family"] for entry in rows):
        members = sorted((entry for entry in rows if entry["family"] == family), key=lambda e: e["bits_per_image"])
        bits = [max(entry["bits_per_image"], 1.0) for entry in members]
        sse = [entry["sse"] for entry in members]
        if family in CURVES:
            axes.plot(bits, sse, "o-", label=family, linewidth=2)
            continue
        axes.plot(bits, sse, "x", label=family, alpha=0.7)
        for entry, x in zip(members, bits):
            axes.annotate(entry["name"], (x, entry["sse"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("bits per image (0 plotted at 1)")
    axes.set_ylabel("SSE per image (pixels in [0, 1])")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def apply_quick(args: Args) -> None:
    """``--quick``: the smoke-run values of :data:`QUICK`, for the flags left at their defaults."""
    defaults = Args()
    for key, value in QUICK.items():
        if getattr(args, key) == getattr(defaults, key):
            setattr(args, key, value)


def set_up(args: Args) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """Check the flags and load the images (fitting and held-out) before any work; the working folder."""
    check_output(args.json, "--json")
    check_output(args.plot, "--plot")
    if not args.bits:
        raise ValueError("argument --bits: give at least one rate (bits per image)")
    try:
        device_of(args.device)
    except ValueError as error:
        raise ValueError(f"argument --device: {error}") from None
    except RuntimeError:  # torch's error for a string that names no device
        raise ValueError(f"argument --device: give cpu or cuda (cuda:N), got {args.device!r}") from None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            raise ImportError(f"argument --plot: drawing needs matplotlib ({error})") from None
    train = load_images(args.dataset, args.split, args.data_root, args.download, args.image_size).images
    if len(train) < max(KMEANS_SIZES):
        raise ValueError(
            f"argument --split: the k-means rows need {max(KMEANS_SIZES)} images, {args.split} has {len(train)}"
        )
    test = load_images(args.dataset, args.eval_split, args.data_root, args.download, args.image_size).images
    test = test[: args.eval_images]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rate_distortion_"))
    workdir.mkdir(parents=True, exist_ok=True)
    return train, test, workdir


def all_jobs(args: Args, workdir: Path) -> tuple[list[Job], list[Job], list[Job]]:
    """The painters' training jobs, their evaluations, and the other models' jobs (each trains and scores)."""
    training, evaluation = painter_jobs(args, workdir)
    return training, evaluation, baseline_jobs(args, workdir)


def benchmark(args: Args, train: torch.Tensor, test: torch.Tensor, workdir: Path, result: dict) -> None:
    """Fit and score everything: the rows, and notes of what failed, go into ``result`` as they come."""
    training, evaluation, baselines = all_jobs(args, workdir)
    try:
        result["rows"] += classical_rows(train, test, args.quick, args.seed)
        result["rows"] += codec_rows(test, args.codec_qualities)
        result["notes"] += run_jobs(training + baselines, args.jobs, "training")
        result["notes"] += run_jobs(evaluation, args.jobs, "evaluating")
    finally:  # the rows of every finished job, also after Ctrl-C
        result["rows"] += job_rows(evaluation + baselines)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    if args.quick:
        apply_quick(args)
    with setting_up():
        train, test, workdir = set_up(args)
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "eval_split": args.eval_split,
        "num_images": len(test),
        "minutes": args.minutes,
        "interrupted": False,
        "rows": [],
        "notes": [],
    }
    try:
        benchmark(args, train, test, workdir, result)
    except KeyboardInterrupt:
        result["interrupted"] = True
        if result["rows"]:
            print(markdown(result["rows"]))
        jobs = [job for group in all_jobs(args, workdir) for job in group]
        finished = sum(job.metrics.exists() for job in jobs)
        where = f"with {finished} of {len(jobs)} jobs finished; the same command with --workdir {workdir} skips them"
        interrupted(args.json, result, where)
    finally:
        if args.workdir is None and not result["interrupted"]:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nRate-distortion on {args.dataset}: fit {args.split}, score {args.eval_split} ({result['num_images']} "
        f"images), {args.minutes:g} minutes of training per model\n"
    )
    print(markdown(result["rows"]))
    for note in result["notes"]:
        print(f"\n- {note}")
    write_json(args.json, result)
    if args.plot:
        draw(result["rows"], args.plot, f"{args.dataset}: fit {args.split}, score {args.eval_split}")
    return result


if __name__ == "__main__":
    main()
