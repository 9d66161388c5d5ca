"""Every SB3 / sb3-contrib algorithm on the painter after the same training time, beside references.

    python -m benchmarks.sb3_algorithms --minutes 20 --json sb3_algorithms.json \\
        --reference greedy=greedy_shapes.json

Each ``--algos`` entry is trained by ``python -m train.sb3`` (its ``train/configs/ALGO.toml``) for
``--minutes`` on each of ``--datasets``: ``shapes`` (train split, scored on test: the fraction of
the optimal return) and ``mnist`` (fitted on ``test[:8000]``, scored on ``test[8000:]``: the SSE,
T=16). Run ``ALGO`` on ``DATASET`` is named ``sb3_algorithms_ALGO_DATASET`` (``_2``, ``_3``, ... when
taken): its logs are in ``--logdir/RUN``, its agent in ``--checkpoint-dir/RUN/model.zip``.
``--reference NAME=METRICS.json`` adds rows from other encoders' metrics files (``train.evaluate
--encoder greedy --metrics-json``, ``train.reinforce --metrics-json``). Prints a markdown table and
writes every row to ``--json`` (after each run, and on Ctrl-C, which stops with status 130).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from agents.sb3.algorithms import ALGORITHMS, algorithm_class
from painter_env.datasets import load_images
from train import sb3
from train.common.config import arg, parse_args
from train.common.metrics import write_metrics_json
from train.common.run import INTERRUPTED, user_errors
from train.common.tensorboard import claim_run_name

DATASET_FLAGS = {
    "shapes": ["--dataset", "shapes", "--split", "train", "--eval-split", "test"],
    "mnist": ["--dataset", "mnist", "--split", "test[:8000]", "--eval-split", "test[8000:]"],
}
COLUMNS = ["encoder", "dataset", "optimal_return_fraction", "sse", "psnr", "total_timesteps", "wall_seconds"]


@dataclass
class Args:
    algos: list = arg(list(ALGORITHMS), "algorithms to train", type=str, choices=list(ALGORITHMS))
    datasets: list = arg(["shapes", "mnist"], "datasets to train on", type=str, choices=list(DATASET_FLAGS))
    minutes: float = arg(20.0, "training time of each run (one per algorithm and dataset)", above=0)
    data_root: str = arg(None, "folder of the MNIST files (default: train.sb3's)", type=str)
    threads: int = arg(1, "torch CPU threads of each run", at_least=1)
    seed: int = arg(1, "seed of every run")
    logdir: str = arg("runs", "TensorBoard folder of the runs (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "folder of the agents (one sub-folder per run)")
    reference: list = arg([], "NAME=METRICS.json rows of other encoders to list beside the agents", type=str)
    json: str = arg(None, "write all rows to this JSON file", type=str)


def train_row(args: Args, algo: str, dataset: str) -> dict:
    """One ``train.sb3`` run for ``--minutes``; its final figures."""
    flags = [*DATASET_FLAGS[dataset], *(["--data-root", args.data_root] if args.data_root else [])]
    name = claim_run_name(f"sb3_algorithms_{algo}_{dataset}", args.logdir, args.checkpoint_dir)
    metrics = sb3.main(
        [
            "--algo",
            algo,
            *flags,
            "--minutes",
            str(args.minutes),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--logdir",
            args.logdir,
            "--checkpoint-dir",
            args.checkpoint_dir,
            "--run-name",
            name,
            "--no-progress",
        ]
    )
    return {"encoder": f"SB3 {algo}", **metrics}


def reference_rows(items: list[str]) -> list[dict]:
    """The rows of ``--reference NAME=METRICS.json`` items; ``ValueError`` or ``OSError`` for a bad one."""
    rows = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"argument --reference: takes NAME=METRICS.json, got {item!r}")
        try:
            metrics = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"argument --reference: cannot read {path}: {error}") from error
        if not isinstance(metrics, dict):
            raise ValueError(f"argument --reference: {path} holds no metrics (a JSON object)")
        rows.append({**metrics, "encoder": name})  # NAME, not the file's encoder
    return rows


def check_data(args: Args) -> None:
    """Fail before the first run, not after hours of them, when a dataset's files are missing."""
    for dataset in args.datasets:
        if dataset != "shapes":
            load_images(dataset, "test[:1]", args.data_root)


def markdown(rows: list[dict]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows])


def main(argv: list[str] | None = None) -> list[dict]:
    """Bad input is one ``error:`` line and status 2 before any run; Ctrl-C keeps the finished rows."""
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with user_errors():
        rows = reference_rows(args.reference)
        for algo in args.algos:
            algorithm_class(algo)  # names the extra when sb3-contrib is missing
        check_data(args)
    try:
        for dataset in args.datasets:
            for algo in args.algos:
                rows.append(train_row(args, algo, dataset))
                write_metrics_json(args.json, {"rows": rows})  # after every run: a long benchmark keeps what it has
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code != INTERRUPTED:
            raise
        write_metrics_json(args.json, {"rows": rows})
        print(markdown(rows))
        kept = f", written to {args.json}" if args.json else ""
        print(f"\ninterrupted: {len(rows)} rows finished so far{kept}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    print(markdown(rows))
    write_metrics_json(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
