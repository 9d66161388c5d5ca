"""Training images/s of ``train.reinforce`` on 1 process vs N processes under torchrun, one thread each.

    python -m benchmarks.ddp_throughput --processes 2 --repeats 3 --json ddp_throughput.json

Each process trains on ``--batch-size`` images per iteration (so N processes train on N times as
many per iteration) for ``--iterations`` iterations with ``--threads 1`` and ``OMP_NUM_THREADS=1``;
the figure is the trainer's ``train_images_per_second`` (images of all ranks over the wall time of
the training loop, start-up and final evaluation left out). Runs alternate between 1 and N
processes, ``--repeats`` times, and the table gives medians and the median of the per-pair
speed-ups, which a drift of a shared machine's speed moves less than a ratio of medians.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from train.common.config import arg, parse_args
from train.common.metrics import write_metrics_json


@dataclass
class Args:
    processes: int = arg(2, "processes of the distributed run (at least 2)")
    batch_size: int = arg(16, "images per iteration and per process")
    iterations: int = arg(40, "training iterations of each run")
    dataset: str = arg("shapes", "dataset to train on")
    image_size: int = arg(28, "image size")
    repeats: int = arg(3, "pairs of runs (medians are reported)")
    timeout: float = arg(600.0, "seconds before a run is abandoned")
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def command(processes: int, args: Args, workdir: Path, name: str) -> list[str]:
    train = [
        "--batch-size",
        str(args.batch_size),
        "--iterations",
        str(args.iterations),
        "--threads",
        "1",
        "--eval-images",
        "64",
        "--save-every",
        str(10**9),
        "--image-every",
        str(10**9),
        "--log-every",
        str(10**9),
        "--logdir",
        str(workdir / "runs"),
        "--checkpoint-dir",
        str(workdir / "ck"),
        "--run-name",
        name,
        "--metrics-json",
        str(workdir / f"{name}.json"),
        "--dataset",
        args.dataset,
        "--image-size",
        str(args.image_size),
    ]
    if processes == 1:
        return [sys.executable, "-m", "train.reinforce", *train]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(processes),
        "-m",
        "train.reinforce",
        *train,
    ]


def images_per_second(processes: int, args: Args, workdir: Path, name: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command(processes, args, workdir, name), env=env, capture_output=True, text=True, timeout=args.timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed:\n{result.stderr[-3000:]}")
    return json.loads((workdir / f"{name}.json").read_text())["train_images_per_second"]


def main(argv=None) -> list[dict]:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    if args.processes < 2:
        raise ValueError(f"--processes must be >= 2, got {args.processes}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    samples = {1: [], args.processes: []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in tqdm(range(args.repeats), desc="pairs of runs"):
            for processes in samples:
                samples[processes].append(images_per_second(processes, args, Path(folder), f"p{processes}_r{repeat}"))
    speedups = [n / one for one, n in zip(samples[1], samples[args.processes])]
    rows = [
        {
            "processes": processes,
            "threads_per_process": 1,
            "batch_per_process": args.batch_size,
            "images_per_second": statistics.median(values),
            "runs": values,
            "speedup": 1.0 if processes == 1 else statistics.median(speedups),
        }
        for processes, values in samples.items()
    ]
    print("| processes | images/s (median) | speed-up over 1 process (median of pairs) | runs |")
    print("|---|---|---|---|")
    for row in rows:
        runs = ", ".join(f"{value:.0f}" for value in row["runs"])
        print(f"| {row['processes']} | {row['images_per_second']:.1f} | {row['speedup']:.2f}x | {runs} |")
    write_metrics_json(args.json, {"rows": rows, "settings": dataclasses.asdict(args)})
    return rows


if __name__ == "__main__":
    main()
