"""Amortise, then refine: what each ingredient gives, from the same training budget.

    python -m benchmarks.refinement_ablation --data-root ../shared/data/mnist --minutes 30 --jobs 2 --json ablation.json
    python -m benchmarks.refinement_ablation --data-root DIR --quick       # a smoke run

Trains ``train.reinforce`` four times for ``--minutes`` each (its defaults otherwise): with neither
ingredient (the defaults), with the dictionary fitted to the refined programs of the memory
(``--fit-dictionary memory``), with the encoder taught by them (``--imitation-coef``), and with
both. Each checkpoint is scored on ``--eval-split`` by the policy's most likely program, by greedy
search and by the policy + Gibbs refinement, all with the dictionary that run learned. Prints a
markdown table and writes ``--json``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.jobs import Job, run_jobs
from train.common.config import arg, parse_args

VARIANTS = {
    "neither": ["--fit-dictionary", "samples", "--imitation-coef", "0"],
    "dictionary fitted to refined programs": ["--fit-dictionary", "memory", "--imitation-coef", "0"],
    "encoder taught by refined programs": ["--fit-dictionary", "samples", "--imitation-coef", "IMITATION"],
    "both": ["--fit-dictionary", "memory", "--imitation-coef", "IMITATION"],
}
ENCODERS = ("policy", "greedy", "gibbs")


@dataclass
class Args:
    dataset: str = arg("mnist", "dataset: mnist, fashion-mnist, shapes or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files", type=str)
    split: str = arg("test[:8000]", "split every run is fitted on")
    eval_split: str = arg("test[8000:]", "split every run is scored on")
    eval_images: int = arg(None, "score only the first N images of --eval-split (default: all)", type=int)
    minutes: float = arg(30.0, "training minutes of every run")
    imitation_coef: float = arg(1.0, "--imitation-coef of the runs whose encoder is taught by refined programs")
    extra: list = arg([], "more train.reinforce flags for every run, e.g. --extra=--steps --extra=8", type=str)
    jobs: int = arg(2, "commands run at once, one thread each (1: in this process, one after another)")
    seed: int = arg(1, "random seed of every run")
    quick: bool = arg(False, "smoke run: fit on test[:300], 8 held-out images, 4-step programs, a second of training")
    workdir: str = arg(None, "keep the runs here (default: a temporary folder)", type=str)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def data_flags(args: Args) -> list[str]:
    return ["--dataset", args.dataset] + (["--data-root", args.data_root] if args.data_root else [])


def variant_jobs(args: Args, workdir: Path) -> tuple[list[Job], list[Job]]:
    training, evaluation = [], []
    for number, (variant, flags) in enumerate(VARIANTS.items()):
        run = f"variant{number}"
        flags = [str(args.imitation_coef) if flag == "IMITATION" else flag for flag in flags]
        argv = data_flags(args) + ["--split", args.split, "--eval-split", args.eval_split, "--minutes",
                                   str(args.minutes), "--iterations", "1000000000", "--seed", str(args.seed),
                                   "--threads", "1", "--run-name", run, "--logdir", str(workdir / "runs"),
                                   "--checkpoint-dir", str(workdir / "checkpoints"), *flags, *args.extra]  # fmt: skip
        training.append(Job(variant, "training", "train.reinforce", argv, workdir / f"{run}.json"))
        checkpoint = workdir / "checkpoints" / run / "checkpoint.pt"
        for encoder in ENCODERS:
            argv = ["--checkpoint", str(checkpoint), "--encoder", encoder, "--split", args.eval_split, "--threads", "1"]
            argv += data_flags(args) + (["--num-images", str(args.eval_images)] if args.eval_images else [])
            evaluation.append(Job(variant, encoder, "train.evaluate", argv, workdir / f"{run}-{encoder}.json"))
    return training, evaluation


def table(rows: list[dict]) -> str:
    header = "| variant | policy SSE | greedy SSE | policy / greedy | policy + Gibbs SSE | iterations |"
    lines = [header, "|---|---|---|---|---|---|"]
    for entry in rows:
        ratio = entry["policy"] / entry["greedy"]
        lines.append(f"| {entry['variant']} | {entry['policy']:.3f} | {entry['greedy']:.3f} | {ratio:.3f} | "
                     f"{entry['gibbs']:.3f} | {entry['iterations']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    if args.quick:
        args.split, args.eval_images, args.minutes = "test[:300]", 8, 0.02
        args.extra = [*args.extra, "--steps", "4", "--batch-size", "4", "--samples", "2"]
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        training, evaluation = variant_jobs(args, workdir)
        notes = run_jobs(training, args.jobs, "training") + run_jobs(evaluation, args.jobs, "evaluating")
        rows = []
        for job in training:
            scores = {e.family: json.loads(e.metrics.read_text()) for e in evaluation
                      if e.name == job.name and e.metrics.exists()}  # fmt: skip
            if job.metrics.exists() and len(scores) == len(ENCODERS):
                trained = json.loads(job.metrics.read_text())
                rows.append({"variant": job.name, "iterations": trained["iterations"],
                             "bits_per_image": scores["policy"]["bits_per_image"],
                             **{encoder: scores[encoder]["sse"] for encoder in ENCODERS}})  # fmt: skip
    print(f"\nAmortise, then refine on {args.dataset}: fit {args.split}, score {args.eval_split}, "
          f"{args.minutes:g} minutes of training per run\n")  # fmt: skip
    print(table(rows))
    for note in notes:
        print(f"\n- {note}")
    result = {"dataset": args.dataset, "split": args.split, "eval_split": args.eval_split, "minutes": args.minutes,
              "rows": rows, "notes": notes}  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
