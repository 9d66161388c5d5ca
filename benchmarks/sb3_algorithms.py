"""Every SB3 / sb3-contrib algorithm on the painter after the same training time, beside references.

    python -m benchmarks.sb3_algorithms --minutes 20 --json sb3_algorithms.json \\
        --reference greedy=greedy_shapes.json

Each ``--algos`` entry is trained by ``python -m train.sb3`` (its ``train/configs/ALGO.toml``) for
``--minutes`` on each of ``--datasets``: ``shapes`` (train split, scored on test: the fraction of
the optimal return) and ``mnist`` (fitted on ``test[:8000]``, scored on ``test[8000:]``: the SSE,
T=16). Run ``ALGO`` on ``DATASET`` is named ``sb3_algorithms_ALGO_DATASET`` (``_2``, ``_3``, ... when
taken): its logs are in ``--logdir/RUN``, its agent in ``--checkpoint-dir/RUN/model.zip``, its
figures (with the ``--minutes`` and ``--seed`` it was trained with) in ``RUN/metrics.json`` beside it.

Beside each trained agent its untrained twin is scored, by the same command with ``--untrained``
(``python -m train.evaluate --checkpoint RUN/model.zip --encoder policy --eval-split SPLIT --seed
SEED --untrained``: an agent of the same algorithm, policy class and policy kwargs on the same
dictionary, its parameters drawn anew with the run's seed: the policy SB3 built before training),
so that the table says what learning made: columns
``untrained SSE`` (``untrained optimal return`` on shapes) and ``learning gain`` = untrained SSE /
trained SSE (rows: ``untrained_sse``, ``untrained_psnr``, ``untrained_optimal_return_fraction``,
``learning_gain``).

A run already finished in ``--checkpoint-dir`` is not trained again: when a ``RUN/model.zip`` of
``ALGO`` on ``DATASET`` and its ``RUN/metrics.json`` made with the same ``--minutes`` and ``--seed``
exist, its figures are read back (and its untrained twin scored), so running the same command again
adds the untrained columns to an earlier benchmark without retraining. Agents of earlier versions
of this benchmark, which wrote no ``metrics.json``, are read back from their rows in the ``--json``
file being rewritten (matched by the agent's path, their ``wall_seconds`` within ``--minutes``' time
and a minute or 10% more). To train again, give another ``--checkpoint-dir`` (or remove the run's folder).

``--reference NAME=METRICS.json`` adds rows from other encoders' metrics files (``train.evaluate
--encoder greedy --metrics-json``, ``train.reinforce --metrics-json``). Prints a markdown table and
writes every row to ``--json`` (``{"rows": [...]}``, after each run, and on Ctrl-C, which stops with
status 130).
"""

from __future__ import annotations

import glob
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from agents.sb3.algorithms import ALGORITHMS, algorithm_class
from painter_env.datasets import load_images
from train import evaluate, sb3
from train.common.config import arg, parse_args
from train.common.metrics import learning_gain, write_metrics_json
from train.common.run import INTERRUPTED, user_errors
from train.common.tensorboard import claim_run_name

DATASET_FLAGS = {
    "shapes": ["--dataset", "shapes", "--split", "train", "--eval-split", "test"],
    "mnist": ["--dataset", "mnist", "--split", "test[:8000]", "--eval-split", "test[8000:]"],
}
# column title -> row key
COLUMNS = {
    "encoder": "encoder",
    "dataset": "dataset",
    "optimal_return_fraction": "optimal_return_fraction",
    "sse": "sse",
    "untrained optimal return": "untrained_optimal_return_fraction",
    "untrained SSE": "untrained_sse",
    "learning gain": "learning_gain",
    "psnr": "psnr",
    "total_timesteps": "total_timesteps",
    "wall_seconds": "wall_seconds",
}
METRICS_FILE = "metrics.json"  # beside a run's model.zip: its figures and the --minutes and --seed it was trained with
REUSE = """\
A run already finished in --checkpoint-dir (its model.zip and metrics.json, made with the same
--minutes and --seed) is not trained again: its figures are read back. Beside each agent its
untrained twin (train.evaluate --untrained) is scored: columns 'untrained SSE' and 'learning gain'
(untrained SSE / trained SSE)."""


@dataclass
class Args:
    algos: list = arg(list(ALGORITHMS), "algorithms to train", type=str, choices=list(ALGORITHMS))
    datasets: list = arg(["shapes", "mnist"], "datasets to train on", type=str, choices=list(DATASET_FLAGS))
    minutes: float = arg(20.0, "training time of each run (one per algorithm and dataset)", above=0)
    data_root: str = arg(None, "folder of the MNIST files (default: train.sb3's)", type=str)
    threads: int = arg(1, "torch CPU threads of each run", at_least=1)
    seed: int = arg(1, "seed of every run")
    logdir: str = arg("runs", "TensorBoard folder of the runs (one sub-folder per run)")
    checkpoint_dir: str = arg(
        "runs/checkpoints",
        "folder of the agents (one sub-folder per run); a run finished there with the same --minutes and --seed "
        "is read back, not trained again",
    )
    reference: list = arg([], "NAME=METRICS.json rows of other encoders to list beside the agents", type=str)
    json: str = arg(None, "write all rows to this JSON file", type=str)


def run_row(args: Args, algo: str, dataset: str, earlier: list[dict]) -> dict:
    """The row of ``algo`` on ``dataset``: the figures of a finished run (``finished_run``) or of a new
    one (``train_row``), and of its agent's untrained twin (``untrained_figures``)."""
    found = finished_run(args, algo, dataset, earlier)
    if found is None:
        metrics, model = train_row(args, algo, dataset)
    else:
        metrics, model = found
        print(f"{model}: trained before (--minutes {args.minutes:g}, --seed {args.seed}), not trained again")
    untrained = untrained_figures(args, dataset, model)
    gain = learning_gain(untrained["untrained_sse"], metrics["sse"])
    return {"encoder": f"SB3 {algo}", **metrics, **untrained, "learning_gain": gain}


def train_row(args: Args, algo: str, dataset: str) -> tuple[dict, Path]:
    """One ``train.sb3`` run for ``--minutes``: its final figures (written to ``RUN/metrics.json`` with the
    ``--minutes`` and ``--seed``) and the path of its agent."""
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
    metrics = {**metrics, "minutes": args.minutes, "seed": args.seed}
    write_metrics_json(Path(args.checkpoint_dir) / name / METRICS_FILE, metrics)  # before scoring the twin
    return metrics, Path(args.checkpoint_dir) / name / "model.zip"


def run_folders(args: Args, algo: str, dataset: str) -> list[Path]:
    """The folders in ``--checkpoint-dir`` of runs of ``algo`` on ``dataset``: ``RUN``, ``RUN_2``, ... in order."""
    base = f"sb3_algorithms_{algo}_{dataset}"
    pattern = re.compile(re.escape(base) + r"(?:_(\d+))?")
    found = []
    for folder in Path(args.checkpoint_dir).glob(f"{glob.escape(base)}*"):
        match = pattern.fullmatch(folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1) or 1), folder))
    return [folder for _, folder in sorted(found)]


def finished_run(args: Args, algo: str, dataset: str, earlier: list[dict]) -> tuple[dict, Path] | None:
    """The figures and agent path of the first run of ``algo`` on ``dataset`` in ``--checkpoint-dir`` that
    finished with this ``--minutes`` and ``--seed`` (its ``model.zip`` and ``metrics.json``); of an earlier
    version's run (no ``metrics.json``), its row in the ``--json`` file ``earlier`` when its wall time fits
    ``--minutes``. None when there is none."""
    for folder in run_folders(args, algo, dataset):
        model = folder / "model.zip"
        if not model.is_file():
            continue
        metrics = read_json(folder / METRICS_FILE)
        if metrics is not None:
            if metrics.get("minutes") == args.minutes and metrics.get("seed") == args.seed:
                return metrics, model
            continue
        for row in earlier:  # written by an earlier version of this benchmark: no settings recorded
            same_agent = isinstance(row.get("model"), str) and Path(row["model"]).resolve() == model.resolve()
            if same_agent and row.get("algo") == algo and row.get("dataset") == dataset and fits_minutes(row, args):
                return {key: value for key, value in row.items() if key != "encoder"}, model
    return None


def fits_minutes(row: dict, args: Args) -> bool:
    """Whether a run stopped by time after ``row["wall_seconds"]`` was given ``--minutes`` (it stops at the
    first env step after its time, an update under way finishing first)."""
    wall, budget = row.get("wall_seconds"), 60 * args.minutes
    return isinstance(wall, (int, float)) and budget - 1 <= wall <= budget + max(60.0, 0.1 * budget)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing or holds no object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def earlier_rows(path: str | None) -> list[dict]:
    """The rows of an existing ``--json`` file (``{"rows": [...]}``), read before it is rewritten."""
    rows = (read_json(Path(path)) or {}).get("rows") if path else None
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def scoring_flags(args: Args, dataset: str, model: Path) -> list[str]:
    """``train.evaluate``'s flags that score the agent at ``model`` as ``train.sb3`` scored it after training."""
    eval_split = DATASET_FLAGS[dataset][DATASET_FLAGS[dataset].index("--eval-split") + 1]
    flags = ["--checkpoint", str(model), "--encoder", "policy", "--eval-split", eval_split]
    flags += ["--threads", str(args.threads), "--seed", str(args.seed)]
    return flags + (["--data-root", args.data_root] if args.data_root else [])


def untrained_figures(args: Args, dataset: str, model: Path) -> dict:
    """The figures of the agent's untrained twin (``train.evaluate ... --untrained``), as ``untrained_*``."""
    metrics = evaluate.main([*scoring_flags(args, dataset, model), "--untrained"])
    keys = ("sse", "psnr", "optimal_return_fraction")
    return {f"untrained_{key}": metrics[key] for key in keys if key in metrics}


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
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS.values()) + " |" for row in rows])


def main(argv: list[str] | None = None) -> list[dict]:
    """Bad input is one ``error:`` line and status 2 before any run; Ctrl-C keeps the finished rows."""
    args = parse_args(Args, __doc__.split("\n\n")[0] + "\n\n" + REUSE, argv)
    with user_errors():
        earlier = earlier_rows(args.json)
        rows = reference_rows(args.reference)
        for algo in args.algos:
            algorithm_class(algo)  # names the extra when sb3-contrib is missing
        check_data(args)
    try:
        for dataset in args.datasets:
            for algo in args.algos:
                rows.append(run_row(args, algo, dataset, earlier))
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
