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

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import train.evaluate as evaluate
import train.reinforce as reinforce
from agents.estimators import BASELINES, ESTIMATORS
from train.common.config import arg, parse_args

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


@dataclass
class Args:
    data_root: str = arg(None, "folder holding the MNIST IDX files", type=str)
    estimators: list[str] = arg(
        ["reinforce", "iw", "vimco"],
        "estimators to train, one policy each; ESTIMATOR:BASELINE picks REINFORCE's baseline, "
        "e.g. reinforce:self-critical",
        type=str,
    )
    datasets: list[str] = arg(
        ["shapes", "mnist"], "datasets to train and score on", type=str, choices=("shapes", "mnist")
    )
    mnist_minutes: float = arg(10.0, "training budget per MNIST policy")
    shapes_minutes: float = arg(2.0, "training budget per shapes policy")
    eval_images: int = arg(2000, "held-out images scored")
    seed: int = arg(1, "training seed")
    workdir: str = arg(None, "where runs and checkpoints go (default: a temporary folder)", type=str)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


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
                "--eval-split",
                split,
                "--eval-images",
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


def check_estimators(estimators: list[str]) -> None:
    """A clear error for an ``ESTIMATOR[:BASELINE]`` spec that ``train.reinforce`` would reject."""
    for spec in estimators:
        method, _, baseline = spec.partition(":")
        if method not in ESTIMATORS or (baseline and (method != "reinforce" or baseline not in BASELINES)):
            raise ValueError(
                f"--estimators: bad spec {spec!r}; choose from {', '.join(ESTIMATORS)}, "
                f"or reinforce:BASELINE with BASELINE one of {', '.join(BASELINES)}"
            )


def main(argv=None) -> list[dict]:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    check_estimators(args.estimators)
    common = ["--eval-images", str(args.eval_images), "--seed", str(args.seed)]
    data_root = [] if args.data_root is None else ["--data-root", args.data_root]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_encoders_"))
    settings = {
        "shapes": (["--dataset", "shapes", "--split", "train"], ["--eval-split", "test"], args.shapes_minutes),
        "mnist": (
            ["--dataset", "mnist", *data_root, "--split", "test[:8000]"],
            ["--eval-split", "test[8000:]"],
            args.mnist_minutes,
        ),
    }
    rows = []
    for dataset in args.datasets:
        fit, score, minutes = settings[dataset]
        rows += run_dataset(dataset, fit, score, args.estimators, minutes, workdir, common)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
