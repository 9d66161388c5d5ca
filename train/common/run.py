"""What the trainers share: the common flags, run set-up and naming, user errors and the final report.

:class:`CommonArgs` holds the flags every trainer takes (data, held-out scoring, seed, device,
threads, logging); a trainer's ``Args`` extends it, so ``--help`` lists these flags first and the
trainer's own after them. :func:`start_run` applies the flags and opens the run, :meth:`Run.finish`
ends it (held-out figures logged, final checkpoint saved) and :func:`report` writes
``--metrics-json`` and prints the one-row markdown table. :func:`user_errors` turns a bad flag or
missing data into one ``error:`` line and exit status 2; :data:`INTERRUPTED` is the exit status
after Ctrl-C.
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

from decoders.storage import atomic_save
from painter_env.config import device_of
from painter_env.datasets import load_images
from train.common.config import arg
from train.common.metrics import write_metrics_json
from train.common.tensorboard import claim_run_name, log_hparams_text, log_image_grid, make_writer

INTERRUPTED = 130  # the shell's exit status of a program stopped by Ctrl-C (128 + SIGINT)


@dataclass
class CommonArgs:
    """Flags shared by the trainers: fit on ``split``, score on ``eval_split``."""

    dataset: str = arg("mnist", "mnist, fashion-mnist, shapes or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files (default: $PAINTER_DATA_ROOT or ./data)", type=str)
    download: bool = arg(False, "fetch mnist / fashion-mnist into --data-root with torchvision if missing")
    split: str = arg("test[:8000]", "split to fit")
    eval_split: str = arg("test[8000:]", "held-out split scored at the end")
    eval_images: int = arg(None, "score only the first N held-out images (default: all)", type=int)
    minutes: float = arg(10.0, "stop training after this many minutes (the evaluation comes after)")
    seed: int = arg(1, "random seed (initialisation, data order, sampling)")
    device: str = arg("cpu", "cpu or cuda")
    threads: int = arg(1, "torch CPU threads (1 is fastest on a busy machine: idle OpenMP threads spin-wait)")
    logdir: str = arg("runs", "TensorBoard folder (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "checkpoint folder (one sub-folder per run)")
    run_name: str = arg(None, "name of the run (default: model, dataset, seed and time)", type=str)
    metrics_json: str = arg(None, "write the final figures (on --eval-split) as JSON here", type=str)


@contextmanager
def user_errors():
    """A bad flag or missing data found while setting up: one ``error:`` line and exit status 2, as argparse."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


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


def report(args: CommonArgs, metrics: dict, row: dict[str, str]) -> dict:
    """Write ``--metrics-json`` and print ``row`` (column title -> formatted cell) as a markdown table."""
    write_metrics_json(args.metrics_json, metrics)
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(row.values()) + " |")
    return metrics
