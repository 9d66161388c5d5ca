"""Which estimator learns: each one's trained policy against its untrained twin and against greedy search.

    python -m benchmarks.encoders --data-root /path/to/mnist --json encoders.json

For each estimator of ``--estimators`` (REINFORCE with each baseline, iw, vimco, and ``hard-em``:
the dictionary fitted to the untrained policy's programs, no policy gradient) and each seed of
``--seeds``, it trains ``train.reinforce`` on MNIST ``test[:8000]`` (T=16) for ``--mnist-minutes``
and on ``shapes`` for ``--shapes-minutes``, then scores on the held-out split (MNIST
``test[8000:]``, shapes ``test``): the policy's most likely programs, the untrained twin (the same
network as initialised, on the learned dictionary: ``learning_gain`` is its SSE over the policy's)
and greedy search with the learned dictionary. Prints a markdown table of every run and one of the
medians over the seeds; ``--json`` gets ``{"rows": [...], "interrupted": false}``. Ctrl-C stops it:
the policy in training is saved as its run's checkpoint, the rows finished so far are printed and
written (``"interrupted": true``), and the exit status is 130.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import train.evaluate as evaluate
import train.reinforce as reinforce
from agents.estimators import BASELINES, ESTIMATORS
from benchmarks.jobs import check_output, ctrl_c_of_commands, interrupted, setting_up, write_json
from painter_env.datasets import load_images
from train.common.config import arg, parse_args

COLUMNS = (
    "sse",
    "untrained_sse",
    "learning_gain",
    "greedy_sse",
    "bits_per_image",
    "iterations",
    "gradient_variance",
    "optimal_return_fraction",
)
ESTIMATOR_SPECS = [*(f"reinforce:{baseline}" for baseline in BASELINES), "iw", "vimco", "hard-em"]
SPLITS = {"shapes": ("train", "test"), "mnist": ("test[:8000]", "test[8000:]")}  # fitted, scored


@dataclass
class Args:
    data_root: str = arg(None, "folder holding the MNIST IDX files (default: $PAINTER_DATA_ROOT or ./data)", type=str)
    estimators: list[str] = arg(
        ESTIMATOR_SPECS,
        "estimators to train, one policy each; ESTIMATOR:BASELINE picks REINFORCE's baseline, "
        "e.g. reinforce:self-critical; hard-em fits only the dictionary",
        type=str,
    )
    seeds: list[int] = arg([1, 2], "training seeds (one run per estimator and seed)", type=int)
    datasets: list[str] = arg(
        ["shapes", "mnist"], "datasets to train and score on", type=str, choices=("shapes", "mnist")
    )
    mnist_minutes: float = arg(10.0, "training minutes of each MNIST policy", above=0)
    shapes_minutes: float = arg(2.0, "training minutes of each shapes policy", above=0)
    eval_images: int = arg(2000, "held-out images scored (the first N of the held-out split)", at_least=1)
    workdir: str = arg(None, "where runs and checkpoints go (default: a new temporary folder)", type=str)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def dataset_rows(name: str, args: Args, workdir: Path) -> Iterator[dict]:
    """Per estimator and seed, train a policy on a dataset; one row of its figures, its twin's and greedy's."""
    split, eval_split = SPLITS[name]
    minutes = args.shapes_minutes if name == "shapes" else args.mnist_minutes
    data = ["--eval-split", eval_split] + ([] if args.data_root is None else ["--data-root", args.data_root])
    for estimator in args.estimators:
        for seed in args.seeds:
            run = f"bench_{name}_{estimator.replace(':', '_')}_s{seed}"
            method, _, baseline = estimator.partition(":")
            argv = ["--dataset", name, "--split", split, *data, "--eval-images", str(args.eval_images)]
            argv += ["--hard-em"] if method == "hard-em" else ["--estimator", method]
            argv += ["--baseline", baseline] if baseline else []
            argv += ["--seed", str(seed), "--minutes", str(minutes), "--run-name", run]
            argv += ["--logdir", str(workdir / "runs"), "--checkpoint-dir", str(workdir / "checkpoints")]
            trained = reinforce.main(argv)
            checkpoint = workdir / "checkpoints" / run / "checkpoint.pt"
            scoring = ["--checkpoint", str(checkpoint), "--encoder", "greedy", *data, "--seed", str(seed)]
            greedy = evaluate.main([*scoring, "--eval-images", str(trained["num_images"])])
            yield {**trained, "greedy_sse": greedy["sse"], "dataset": name, "encoder": estimator, "seed": seed}


def table(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c in row for row in rows)]
    lines = ["| dataset | estimator | seed | " + " | ".join(columns) + " |", "|---" * (len(columns) + 3) + "|"]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), (int, float)) else "" for c in columns]
        lines.append(f"| {row['dataset']} | {row['encoder']} | {row.get('seed', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians(rows: list[dict]) -> list[dict]:
    """One row per dataset and estimator: the median of each figure over the seeds, and their range."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["encoder"]), []).append(row)
    summary = []
    for (dataset, encoder), members in groups.items():
        entry = {"dataset": dataset, "encoder": encoder, "seed": f"{len(members)} seeds"}
        for column in COLUMNS:
            values = [row[column] for row in members if isinstance(row.get(column), (int, float))]
            if values:
                entry[column] = statistics.median(values)
                entry[f"{column}_range"] = (min(values), max(values))
        summary.append(entry)
    return summary


def check_estimators(estimators: list[str]) -> None:
    """A clear error for an ``ESTIMATOR[:BASELINE]`` spec that ``train.reinforce`` would reject."""
    if not estimators:
        raise ValueError("argument --estimators: give at least one estimator")
    for spec in estimators:
        method, _, baseline = spec.partition(":")
        known = method in ESTIMATORS or spec == "hard-em"
        if not known or (baseline and (method != "reinforce" or baseline not in BASELINES)):
            raise ValueError(
                f"argument --estimators: bad spec {spec!r}; choose from {', '.join(ESTIMATORS)}, hard-em, "
                f"or reinforce:BASELINE with BASELINE one of {', '.join(BASELINES)}"
            )


def set_up(args: Args) -> Path:
    """Check the estimators and that the MNIST splits load (before any training); the working folder."""
    check_output(args.json, "--json")
    check_estimators(args.estimators)
    if not args.datasets:
        raise ValueError("argument --datasets: give at least one of shapes, mnist")
    if not args.seeds:
        raise ValueError("argument --seeds: give at least one seed")
    if "mnist" in args.datasets:
        for split in SPLITS["mnist"]:
            load_images("mnist", split, args.data_root)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_encoders_"))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def main(argv=None) -> list[dict]:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with setting_up():
        workdir = set_up(args)
    rows, total = [], len(args.estimators) * len(args.seeds) * len(args.datasets)
    try:
        with ctrl_c_of_commands():
            for dataset in args.datasets:
                for row in dataset_rows(dataset, args, workdir):
                    rows.append(row)
    except KeyboardInterrupt:
        if rows:
            print(table(rows))
        where = f"after {len(rows)} of {total} rows (runs and checkpoints in {workdir})"
        interrupted(args.json, {"rows": rows}, where)
    print(table(rows))
    print("\nMedians over the seeds\n")
    print(table(medians(rows)))
    write_json(args.json, {"rows": rows, "medians": medians(rows), "interrupted": False})
    return rows


if __name__ == "__main__":
    main()
