"""Training images/s of ``train.reinforce`` on 1 process vs N processes under torchrun, one thread each.

    python -m benchmarks.ddp_throughput --processes 2 --repeats 3 --json ddp_throughput.json

Each process trains on ``--batch-size`` images per iteration (so N processes train on N times as
many per iteration) for ``--iterations`` iterations with ``--threads 1`` and ``OMP_NUM_THREADS=1``;
the figure is the trainer's ``train_images_per_second`` (images of all ranks over the wall time of
the training loop, start-up and final evaluation left out). Runs alternate between 1 and N
processes, ``--repeats`` times, and the table gives medians and the median of the per-pair
speed-ups, which a drift of a shared machine's speed moves less than a ratio of medians. Ctrl-C
stops the running run (all its processes), prints and writes the rows of the runs done so far
(``"interrupted": true``) and exits 130.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

from tqdm import tqdm

from benchmarks.jobs import check_output, interrupted, setting_up, start, stop, write_json
from painter_env.datasets import load_images
from train.common.config import arg, parse_args


@dataclass
class Args:
    processes: int = arg(2, "processes of the distributed run", at_least=2)
    batch_size: int = arg(16, "images per iteration and per process (even)", at_least=2)
    iterations: int = arg(40, "training iterations of each run", at_least=1)
    dataset: str = arg("shapes", "dataset to train on (its files under $PAINTER_DATA_ROOT or ./data)")
    image_size: int = arg(28, "image size", at_least=1)
    repeats: int = arg(3, "pairs of runs (medians are reported)", at_least=1)
    timeout: float = arg(600.0, "seconds before a run is abandoned", above=0)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def command(processes: int, args: Args, workdir: Path, name: str) -> list[str]:
    """The run on ``processes`` processes: ``--iterations`` iterations (no time limit), no logs or checkpoints
    on the way, its figures in ``workdir/NAME.json``."""
    train = ["--batch-size", str(args.batch_size), "--iterations", str(args.iterations), "--minutes", "0"]
    train += ["--threads", "1", "--eval-images", "64", "--dataset", args.dataset, "--image-size", str(args.image_size)]
    train += ["--save-every", str(10**9), "--image-every", str(10**9), "--log-every", str(10**9)]
    train += ["--logdir", str(workdir / "runs"), "--checkpoint-dir", str(workdir / "ck"), "--run-name", name]
    train += ["--metrics-json", str(workdir / f"{name}.json")]
    if processes == 1:
        return [sys.executable, "-m", "train.reinforce", *train]
    distributed = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return [sys.executable, *distributed, "-m", "train.reinforce", *train]


def images_per_second(processes: int, args: Args, workdir: Path, name: str) -> float:
    """One run's ``train_images_per_second``; Ctrl-C stops the run (all its processes) first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with start(command(processes, args, workdir, name), env=env, stdout=PIPE, stderr=PIPE, text=True) as process:
        try:
            _, stderr = process.communicate(timeout=args.timeout)
        except BaseException:  # Ctrl-C or --timeout
            stop([process])
            raise
    if process.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed:\n{stderr[-3000:]}")
    return json.loads((workdir / f"{name}.json").read_text())["train_images_per_second"]


def set_up(args: Args) -> None:
    """What the runs would find wrong, found before the first: an odd batch, a dataset that does not load."""
    check_output(args.json, "--json")
    if args.batch_size % 2:
        raise ValueError(f"argument --batch-size: must be even (its halves estimate a variance), got {args.batch_size}")
    for split in ("train[:1]", "test[:1]"):
        load_images(args.dataset, split, image_size=args.image_size)


def rows_of(samples: dict[int, list[float]], args: Args) -> list[dict]:
    """Per process count with runs: the median images/s and the median of the per-pair speed-ups."""
    speedups = [n / one for one, n in zip(samples[1], samples[args.processes])]
    return [
        {
            "processes": processes,
            "threads_per_process": 1,
            "batch_per_process": args.batch_size,
            "images_per_second": statistics.median(values),
            "runs": values,
            "speedup": 1.0 if processes == 1 else statistics.median(speedups) if speedups else None,
        }
        for processes, values in samples.items()
        if values
    ]


def table(rows: list[dict]) -> str:
    lines = ["| processes | images/s (median) | speed-up over 1 process (median of pairs) | runs |"]
    lines.append("|---|---|---|---|")
    for row in rows:
        runs = ", ".join(f"{value:.0f}" for value in row["runs"])
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        lines.append(f"| {row['processes']} | {row['images_per_second']:.1f} | {speedup} | {runs} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with setting_up():
        set_up(args)
    samples = {1: [], args.processes: []}
    result = {"rows": [], "settings": dataclasses.asdict(args), "interrupted": False}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for repeat in tqdm(range(args.repeats), desc="pairs of runs"):
                for processes in samples:
                    name = f"p{processes}_r{repeat}"
                    samples[processes].append(images_per_second(processes, args, Path(folder), name))
    except KeyboardInterrupt:
        result["rows"] = rows_of(samples, args)
        if result["rows"]:
            print(table(result["rows"]))
        interrupted(args.json, result, f"after {len(samples[args.processes])} of {args.repeats} pairs of runs")
    result["rows"] = rows = rows_of(samples, args)
    print(table(rows))
    write_json(args.json, result)
    return rows


if __name__ == "__main__":
    main()
