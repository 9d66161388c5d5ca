"""Training images/s of ``train.reinforce`` on 1 process vs N processes under torchrun, one thread each.

    python -m benchmarks.ddp_throughput --processes 2 --repeats 3 --json ddp_throughput.json

Each process trains on ``--batch-size`` images per iteration (so N processes train on N times as
many per iteration) for ``--iterations`` iterations with ``--threads 1`` and ``OMP_NUM_THREADS=1``;
the figure is the trainer's ``train_images_per_second`` (images of all ranks over the wall time of
the training loop, start-up and final evaluation left out). Runs alternate between 1 and N
processes, ``--repeats`` times, and the table gives medians and the median of the per-pair
speed-ups (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from train.common.metrics import write_metrics_json


def command(processes: int, args, workdir: Path, name: str) -> list[str]:
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


def images_per_second(processes: int, args, workdir: Path, name: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command(processes, args, workdir, name), env=env, capture_output=True, text=True, timeout=args.timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed:\n{result.stderr[-3000:]}")
    return json.loads((workdir / f"{name}.json").read_text())["train_images_per_second"]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="processes of the distributed run")
    parser.add_argument("--batch-size", type=int, default=16, help="images per iteration and per process")
    parser.add_argument("--iterations", type=int, default=40, help="training iterations of each run")
    parser.add_argument("--dataset", default="shapes", help="dataset to train on")
    parser.add_argument("--image-size", type=int, default=28, help="image size")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (medians are reported)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is abandoned")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.processes < 2 or args.repeats < 1:
        raise ValueError("--processes must be >= 2 and --repeats >= 1")
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
    write_metrics_json(args.json, {"rows": rows, "settings": vars(args)})
    return rows


if __name__ == "__main__":
    main()
