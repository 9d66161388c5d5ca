"""What the trainers share: the common flags, the time budget, run set-up and naming, user errors
and the final report.

:class:`DataArgs` holds the data flags of every command, :class:`CommonArgs` adds what every
trainer takes (``--minutes``, logging, checkpoints); a trainer's ``Args`` extends it, so
``--help`` lists these flags first and the trainer's own after them. :class:`Budget` bounds a run
by ``--minutes`` (and an optional cap) and draws its progress bar. :func:`start_run` applies the
flags and opens the run, :meth:`Run.finish` ends it (held-out figures logged, final checkpoint
saved) and :func:`report` writes ``--metrics-json`` and prints the one-row markdown table.
:func:`user_errors` turns a bad flag or missing data into one ``error:`` line and exit status 2;
:data:`INTERRUPTED` is the exit status after Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from decoders.storage import atomic_save
from painter_env.config import device_of
from painter_env.datasets import load_images
from train.common.config import BAD_INPUT, arg
from train.common.metrics import write_metrics_json
from train.common.tensorboard import claim_run_name, log_hparams_text, log_image_grid, make_writer

INTERRUPTED = 130  # the shell's exit status of a program stopped by Ctrl-C (128 + SIGINT)
DEFAULT_MINUTES = 1.5  # every trainer's default: a first look in a minute or two; real runs say --minutes


@dataclass
class DataArgs:
    """The data flags of every command: fit on ``--split``, score on ``--eval-split``."""

    dataset: str = arg("shapes", "shapes (built in), mnist, fashion-mnist, cifar10 or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files (default: $PAINTER_DATA_ROOT or ./data)", type=str)
    download: bool = arg(False, "fetch mnist, fashion-mnist or cifar10 into --data-root with torchvision if missing")
    split: str = arg("train", "split to fit, e.g. train, 'test[:8000]', 'all[:4000]' (a folder's split is 'all')")
    eval_split: str = arg("test", "held-out split scored at the end, e.g. test, 'test[8000:]', 'all[4000:]'")
    image_size: int = arg(
        None, "resize images to S x S (default: the images' own size; shapes are drawn at 28)", type=int, at_least=1
    )
    eval_images: int = arg(None, "score only the first N held-out images (default: all)", type=int, at_least=1)
    seed: int = arg(1, "random seed (initialisation, data order, sampling)")
    device: str = arg("cpu", "cpu or cuda")
    threads: int = arg(
        1, "torch CPU threads (1 is fastest on a busy machine: idle OpenMP threads spin-wait)", at_least=1
    )
    metrics_json: str = arg(None, "write the final figures (on --eval-split) as JSON here", type=str)


@dataclass
class CommonArgs(DataArgs):
    """The flags every trainer shares: the data flags, how long to train and where the run is written."""

    minutes: float = arg(
        DEFAULT_MINUTES,
        "train for this many minutes (0: no time limit, then a cap is needed); evaluation comes after",
        at_least=0,
    )
    logdir: str = arg("runs", "TensorBoard folder (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "checkpoint folder (one sub-folder per run)")
    run_name: str = arg(None, "name of the run (default: model, dataset, seed and time)", type=str)


@dataclass
class EpochArgs(CommonArgs):
    """The common flags of a trainer that makes passes (epochs) over the fit split."""

    epochs: int = arg(
        None,
        "stop after this many passes over --split even if --minutes are left (default: no cap)",
        type=int,
        at_least=0,
    )


@contextmanager
def user_errors():
    """A bad flag or missing data found while setting up: one ``error:`` line and exit status 2, as argparse."""
    try:
        yield
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(BAD_INPUT) from None


class Budget:
    """How long a run trains: ``--minutes`` of wall time and, optionally, a cap on its units
    (iterations, epochs, env steps). ``--minutes 0`` means no time limit and needs the cap.

    The progress bar shows the time spent against the time allowed (the units against the cap
    without a time limit), with the units done and the caller's latest figures beside it. A
    resumed run passes the units and seconds it had already spent.
    """

    def __init__(self, minutes: float, cap: int | None, cap_flag: str, done=0, elapsed=0.0, quiet=False, unit="it"):
        if minutes < 0 or (cap is not None and cap < 0):
            raise ValueError(f"--minutes and {cap_flag} must be >= 0, got {minutes} and {cap}")
        if minutes == 0 and cap is None:
            raise ValueError(f"--minutes 0 means no time limit: give {cap_flag} N to stop the run")
        self.seconds, self.cap, self.unit, self.done = 60.0 * minutes, cap, unit, done
        self.began = time.perf_counter() - elapsed
        if self.seconds:
            shown = "{desc}{percentage:3.0f}%|{bar}| {elapsed} of " + _clock(self.seconds) + "{postfix}"
            self.bar = tqdm(total=self.seconds, initial=min(elapsed, self.seconds), bar_format=shown, disable=quiet)
        else:
            self.bar = tqdm(total=cap, initial=done, unit=unit, disable=quiet)
        self.bar.set_description("training")

    @property
    def elapsed(self) -> float:
        """Seconds of training so far (a resumed run's earlier seconds included)."""
        return time.perf_counter() - self.began

    def out_of_time(self) -> bool:
        return bool(self.seconds) and self.elapsed >= self.seconds

    def capped(self) -> bool:
        return self.cap is not None and self.done >= self.cap

    def over(self) -> bool:
        """Out of time or at the cap: the run stops."""
        return self.out_of_time() or self.capped()

    def advance(self, units: int = 1, **figures) -> None:
        """Count ``units`` more done and show them with ``figures`` (name -> formatted value)."""
        self.done += units
        count = f"{self.done}" if self.cap is None else f"{self.done}/{self.cap}"
        if self.seconds:
            self.bar.n = min(self.elapsed, self.seconds)
        else:
            self.bar.n = self.done
        self.bar.set_postfix({self.unit: count, **figures})

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    """``90`` -> ``01:30``, as tqdm shows elapsed time."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def dataset_label(dataset: str) -> str:
    """The dataset as one safe path component: ``folder:/data/my cats`` -> ``folder-my_cats``."""
    if dataset.startswith("folder:"):
        dataset = "folder-" + Path(dataset.removeprefix("folder:")).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)


def default_run_name(*parts: str) -> str:
    """``part1__part2__...__TIME``, every part safe as a folder name."""
    return "__".join([*(dataset_label(part) for part in parts if part), str(int(time.time()))])


def apply_threads_and_seed(args: CommonArgs) -> torch.device:
    """Apply ``--threads`` and ``--seed``; the checked ``--device``."""
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return device_of(args.device)


def load_split(args: CommonArgs, split: str, **options) -> torch.Tensor:
    """Images ``(N, C, H, W)`` of one split of ``args.dataset`` (``options`` go to ``load_images``)."""
    return load_images(args.dataset, split, args.data_root, args.download, **options).images


def held_out_images(args: CommonArgs, device: torch.device, **options) -> torch.Tensor:
    """The first ``args.eval_images`` images of ``args.eval_split`` (all when None), on ``device``."""
    return load_split(args, args.eval_split, **options)[: args.eval_images].to(device)


@dataclass
class Run:
    """One training run: its flags, checkpoint kind, name, device, TensorBoard writer and checkpoint file."""

    args: CommonArgs
    kind: str
    name: str
    device: torch.device
    writer: SummaryWriter
    checkpoint_path: Path

    def save(self, model: torch.nn.Module, config: dict, **extra) -> Path:
        """Save ``model`` atomically with its ``config``, the ``extra`` entries and the flags."""
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        payload = {"kind": self.kind, "version": 1, "run_name": self.name, **extra, "config": config, "state": state}
        return atomic_save({**payload, "args": dataclasses.asdict(self.args)}, self.checkpoint_path)

    def train_epochs(self, model: torch.nn.Module, config: dict, budget: Budget, epoch) -> None:
        """Call ``epoch()`` until ``budget`` is spent (it checks the clock between its batches);
        Ctrl-C saves ``model`` and exits 130."""
        with self.interruptible(model, config):
            try:
                while not budget.over():
                    epoch()
            finally:
                budget.close()

    @contextmanager
    def interruptible(self, model: torch.nn.Module, config: dict):
        """Ctrl-C inside stops the run: ``model`` is saved (as the checkpoint) and the program exits 130."""
        try:
            yield
        except KeyboardInterrupt:
            path = self.save(model, config, interrupted=True)
            self.writer.close()
            print(f"\ninterrupted: checkpoint saved to {path}", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None

    def finish(
        self,
        held_out: torch.Tensor,
        reconstructions: torch.Tensor,
        metrics: dict,
        step: int,
        model: torch.nn.Module,
        config: dict,
        **extra,
    ) -> dict:
        """End of training: add ``optimal_return_fraction`` on shapes, log the held-out figures and the
        first eight targets above their reconstructions, close the writer, save the final checkpoint."""
        if self.args.dataset == "shapes":  # the optimal return of a shapes image is its blank-canvas SSE
            blank_sse = float(held_out.square().flatten(1).sum(1).mean())
            metrics["optimal_return_fraction"] = 1.0 - metrics["sse"] / blank_sse
        shown = torch.cat([held_out[:8], reconstructions[:8]])
        log_image_grid(self.writer, "eval/targets_and_reconstructions", shown, step)
        for name, value in metrics.items():
            self.writer.add_scalar(f"eval/{name}", value, step)
        self.writer.close()
        self.save(model, config, **extra)
        return metrics


def start_run(args: CommonArgs, kind: str, sizes: str = "", **hparams) -> Run:
    """Apply ``--threads`` and ``--seed``, check ``--device``, open the TensorBoard writer and log the
    flags (plus ``hparams``) there. Checkpoints are of ``kind``; the run is named ``--run-name`` or,
    by default, ``kind__dataset[__sizes]__sSEED__TIME``."""
    device = apply_threads_and_seed(args)
    name = args.run_name or claim_run_name(
        default_run_name(kind, args.dataset, sizes, f"s{args.seed}"), args.logdir, args.checkpoint_dir
    )
    writer = make_writer(args.logdir, name)
    log_hparams_text(writer, {**dataclasses.asdict(args), "run_name": name, **hparams})
    return Run(args, kind, name, device, writer, Path(args.checkpoint_dir) / name / "checkpoint.pt")


def epoch_row(name: str, metrics: dict, **columns: str) -> dict[str, str]:
    """A trainer's one-row table: the model, its rate and error, ``columns``, then its epochs and time."""
    row = {"model": name, "bits/image": f"{metrics['bits_per_image']:.0f}", "SSE": f"{metrics['sse']:.2f}"}
    row.update({"PSNR": f"{metrics['psnr']:.2f}", **columns, "epochs": f"{metrics['epochs']:g}"})
    return {**row, "wall s": f"{metrics['wall_seconds']:.0f}"}


def report(args: CommonArgs, metrics: dict, row: dict[str, str]) -> dict:
    """Write ``--metrics-json`` and print ``row`` (column title -> formatted cell) as a markdown table."""
    write_metrics_json(args.metrics_json, metrics)
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(row.values()) + " |")
    return metrics
