"""Every SB3 / sb3-contrib algorithm on the painter after the same training budget, beside references.

    python -m benchmarks.sb3_algorithms --budget-seconds 1200 --json sb3_algorithms.json \
        --reference greedy=greedy_shapes.json

Each ``--algos`` entry is trained by ``python -m train.sb3`` (its ``train/configs/ALGO.toml``) for
``--budget-seconds`` on each of ``--datasets``: ``shapes`` (train split, scored on test: the
fraction of the optimal return) and ``mnist`` (fitted on ``test[:8000]``, scored on
``test[8000:]``: the SSE, T=16). ``--reference NAME=METRICS.json`` adds rows from other encoders'
metrics files (``train.evaluate --encoder greedy --metrics-json``, ``train.reinforce
--metrics-json``). Prints a markdown table and writes every row to ``--json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agents.sb3.algorithms import ALGORITHMS
from train import sb3
from train.common.config import arg, parse_args
from train.common.metrics import write_metrics_json

DATASET_FLAGS = {
    "shapes": ["--dataset", "shapes", "--split", "train", "--eval-split", "test"],
    "mnist": ["--dataset", "mnist", "--split", "test[:8000]", "--eval-split", "test[8000:]"],
}
COLUMNS = ["encoder", "dataset", "optimal_return_fraction", "sse", "psnr", "total_timesteps", "wall_seconds"]


@dataclass
class Args:
    algos: list = arg(list(ALGORITHMS), "algorithms to train", type=str, choices=list(ALGORITHMS))
    datasets: list = arg(["shapes", "mnist"], "datasets to train on", type=str, choices=list(DATASET_FLAGS))
    budget_seconds: float = arg(1200.0, "training budget of each run")
    data_root: str = arg(None, "folder of the MNIST files (default: train.sb3's)", type=str)
    threads: int = arg(1, "torch CPU threads of each run")
    seed: int = arg(0, "seed of every run")
    logdir: str = arg("runs", "TensorBoard folder of the runs (each saves its agent there)")
    reference: list = arg([], "NAME=METRICS.json rows of other encoders to list beside the agents", type=str)
    json: str = arg(None, "write all rows to this JSON file", type=str)


def train_row(args: Args, algo: str, dataset: str) -> dict:
    """One ``train.sb3`` run for the budget; its final figures."""
    flags = [*DATASET_FLAGS[dataset], *(["--data-root", args.data_root] if args.data_root else [])]
    metrics = sb3.main(
        [
            "--algo",
            algo,
            *flags,
            "--max-seconds",
            str(args.budget_seconds),
            "--total-timesteps",
            str(10**9),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--logdir",
            args.logdir,
            "--run-name",
            f"sb3_algorithms_{algo}_{dataset}",
            "--no-progress",
        ]
    )
    return {"encoder": f"SB3 {algo}", **metrics}


def reference_rows(items: list[str]) -> list[dict]:
    rows = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --reference takes NAME=METRICS.json, got {item!r}")
        rows.append({**json.loads(Path(path).read_text()), "encoder": name})  # NAME, not the file's encoder
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows])


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(Args, __doc__, argv)
    rows = reference_rows(args.reference)
    for dataset in args.datasets:
        for algo in args.algos:
            rows.append(train_row(args, algo, dataset))
            write_metrics_json(args.json, {"rows": rows})  # after every run: a long benchmark keeps what it measured
    print(markdown(rows))
    write_metrics_json(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
