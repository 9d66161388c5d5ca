"""Encoders compared: the trained policy (per estimator) against greedy search, same dictionary.

    python -m benchmarks.encoders --data-root /path/to/mnist --json encoders.json

For each estimator it trains ``train.reinforce`` on MNIST ``test[:8000]`` (T=16, capped at
``--mnist-minutes``) and on ``shapes`` (``--shapes-minutes``), then scores on the held-out split
(MNIST ``test[8000:]``, shapes ``test``) the policy and greedy search with the dictionary that
run learned (same action space). Prints a markdown table: SSE, PSNR, bits per image, images/s,
training wall time, the median gradient-variance estimate of training and, on shapes, the
fraction of the optimal return.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import train.evaluate as evaluate
import train.reinforce as reinforce

COLUMNS = (
    "sse",
    "psnr",
    "bits_per_image",
    "images_per_second",
    "wall_seconds",
    "gradient_variance",
    "optimal_return_fraction",
    "num_images",
)


def run_dataset(
    name: str, fit: list[str], score: list[str], estimators: list[str], minutes: float, workdir: Path, extra: list[str]
) -> list[dict]:
    """Train one policy per estimator on a dataset; score it and greedy with its dictionary."""
    rows = []
    for estimator in estimators:
        run = f"bench_{name}_{estimator.replace(':', '_')}"
        method, _, baseline = estimator.partition(":")
        trained = reinforce.main(
            fit
            + score
            + extra
            + [
                "--estimator",
                method,
                "--minutes",
                str(minutes),
                "--iterations",
                "100000",
                "--run-name",
                run,
                "--logdir",
                str(workdir / "runs"),
                "--checkpoint-dir",
                str(workdir / "checkpoints"),
            ]
            + (["--baseline", baseline] if baseline else [])
        )
        rows.append({**trained, "dataset": name, "encoder": f"policy ({estimator})"})
        checkpoint = workdir / "checkpoints" / run / "checkpoint.pt"
        split = score[score.index("--eval-split") + 1]
        greedy = evaluate.main(
            [
                "--checkpoint",
                str(checkpoint),
                "--encoder",
                "greedy",
                "--split",
                split,
                "--num-images",
                str(trained["num_images"]),
            ]
            + _data_root(fit)
        )
        rows.append({**greedy, "dataset": name, "encoder": f"greedy (dictionary of {estimator})"})
    return rows


def _data_root(argv: list[str]) -> list[str]:
    return argv[argv.index("--data-root") : argv.index("--data-root") + 2] if "--data-root" in argv else []


def table(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c in row for row in rows)]
    lines = ["| dataset | encoder | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), (int, float)) else "" for c in columns]
        lines.append(f"| {row['dataset']} | {row['encoder']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data", help="folder holding the MNIST IDX files")
    parser.add_argument(
        "--estimators",
        default="reinforce,iw,vimco",
        help="comma-separated estimators to train; ESTIMATOR:BASELINE picks REINFORCE's baseline, "
        "e.g. reinforce:self-critical",
    )
    parser.add_argument("--mnist-minutes", type=float, default=10.0, help="training budget per MNIST policy")
    parser.add_argument("--shapes-minutes", type=float, default=2.0, help="training budget per shapes policy")
    parser.add_argument("--datasets", default="shapes,mnist", help="comma-separated: shapes, mnist")
    parser.add_argument("--eval-images", type=int, default=2000, help="held-out images scored")
    parser.add_argument("--seed", type=int, default=1, help="training seed")
    parser.add_argument("--workdir", default=None, help="where runs and checkpoints go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write the rows as JSON to this path")
    args = parser.parse_args(argv)
    estimators = args.estimators.split(",")
    common = ["--eval-images", str(args.eval_images), "--seed", str(args.seed)]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_encoders_"))
    rows = []
    for dataset in args.datasets.split(","):
        if dataset == "shapes":
            rows += run_dataset(
                "shapes",
                ["--dataset", "shapes", "--split", "train"],
                ["--eval-split", "test"],
                estimators,
                args.shapes_minutes,
                workdir,
                common,
            )
        elif dataset == "mnist":
            rows += run_dataset(
                "mnist",
                ["--dataset", "mnist", "--data-root", args.data_root, "--split", "test[:8000]"],
                ["--eval-split", "test[8000:]"],
                estimators,
                args.mnist_minutes,
                workdir,
                common,
            )
        else:
            raise ValueError(f"unknown dataset {dataset!r}: choose shapes or mnist")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
