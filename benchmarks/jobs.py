"""Benchmark commands as jobs (``python -m MODULE ARGV --metrics-json PATH``, several at a time), and what
every benchmark does on bad input and on Ctrl-C.

Each job trains or evaluates with the project's own command and leaves its figures in a JSON file,
so a benchmark table is made by the same commands a user runs. A command writes its figures to a
``.running.json`` file that takes the job's name only once the command has succeeded: a metrics
file under that name always means a finished job, and a benchmark stopped half-way (Ctrl-C, a
crash) and started again with the same working folder skips those jobs and runs the others.

A bad flag, or data or a checkpoint that does not load, ends a benchmark before any work with one
``error:`` line and exit status 2 (:func:`setting_up`, :func:`check_output`). Ctrl-C ends every
benchmark the same way (:func:`interrupted`): the rows finished so far go to its
``--json``, marked ``"interrupted": true``, it says where it stopped and exits 130. Commands still
running are stopped first (:func:`stop`): they are sent Ctrl-C, so a trainer saves its checkpoint
and ends, and are killed if they are still running after a grace period.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from train.common.run import INTERRUPTED, user_errors

POLL_SECONDS = 1.0  # how often running commands are checked
GRACE_SECONDS = 30.0  # how long a command sent Ctrl-C may take to save its state and end


@dataclass
class Job:
    """One command (``python -m MODULE ARGV``) whose ``--metrics-json`` becomes a row."""

    name: str
    family: str
    module: str
    argv: list[str]
    metrics: Path
    note: str = ""

    @property
    def running_metrics(self) -> Path:
        """Where the command writes its figures; they move to :attr:`metrics` when it succeeds."""
        return self.metrics.with_suffix(".running.json")


def run_jobs(jobs: list[Job], parallel: int, description: str) -> list[str]:
    """Run the jobs (``parallel`` at a time as subprocesses, or in this process); notes of the failures.

    A job whose metrics file exists already is not run again. Ctrl-C stops the running commands
    and is raised again (``KeyboardInterrupt``); the figures of the jobs that finished stay.
    """
    notes = []
    jobs = [job for job in jobs if not job.metrics.exists()]
    with tqdm(total=len(jobs), desc=description) as bar:
        if parallel == 1:
            for job in jobs:
                notes += run_in_process(job)
                bar.update()
        else:
            notes += run_in_subprocesses(jobs, parallel, bar)
    return notes


def run_in_process(job: Job) -> list[str]:
    """Run one job's command in this process; a note if it failed."""
    try:
        with ctrl_c_of_commands():
            importlib.import_module(job.module).main([*job.argv, "--metrics-json", str(job.running_metrics)])
    except (Exception, SystemExit) as error:  # a failed row is reported, the others go on
        return [f"{job.name}: {job.module} failed ({error!r})"]
    return finish(job)


def command(job: Job) -> list[str]:
    """The command line of a job."""
    return [sys.executable, "-m", job.module, *job.argv, "--metrics-json", str(job.running_metrics)]


def run_in_subprocesses(jobs: list[Job], parallel: int, bar: tqdm) -> list[str]:
    """Run the jobs ``parallel`` at a time, each logging to a ``.log`` file beside its metrics."""
    notes, waiting, running = [], list(jobs), []
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                job = waiting.pop(0)
                log = open(job.metrics.with_suffix(".log"), "w")  # noqa: SIM115  (closed when the job ends)
                running.append((job, start(command(job), stdout=log, stderr=subprocess.STDOUT), log))
            time.sleep(POLL_SECONDS)
            for entry in [entry for entry in running if entry[1].poll() is not None]:
                job, process, log = entry
                log.close()
                running.remove(entry)
                if process.returncode != 0:
                    notes.append(f"{job.name}: {job.module} exited {process.returncode} (see {log.name})")
                else:
                    notes += finish(job)
                bar.update()
    finally:  # Ctrl-C (or a failure here): no command is left running
        stop([process for _, process, _ in running])
        for _, _, log in running:
            log.close()
    return notes


def finish(job: Job) -> list[str]:
    """Give a succeeded job's figures their name (a note if it wrote none)."""
    if not job.running_metrics.exists():
        return [f"{job.name}: {job.module} wrote no figures"]
    job.running_metrics.replace(job.metrics)
    return []


def start(argv: list[str], **options) -> subprocess.Popen:
    """Start a command as the leader of its own process group (``options`` go to ``Popen``): :func:`stop`
    signals the group, so the children it made get the signal too (torchrun, whose workers lead groups
    of their own, stops them itself), and a Ctrl-C reaches the command only through :func:`stop`."""
    return subprocess.Popen(argv, start_new_session=True, **options)


def stop(processes: list[subprocess.Popen]) -> None:
    """Stop commands begun with :func:`start`: Ctrl-C to their process groups (SIGINT: a trainer saves its
    checkpoint and ends), then, after ``GRACE_SECONDS``, SIGKILL to those still running. A second Ctrl-C
    meanwhile kills them at once."""
    try:
        _signal_and_wait(processes, signal.SIGINT)
    finally:
        _signal_and_wait(processes, signal.SIGKILL)


def _signal_and_wait(processes: list[subprocess.Popen], sent: signal.Signals) -> None:
    alive = [process for process in processes if process.poll() is None]
    for process in alive:
        with suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(process.pid, sent)
    deadline = time.monotonic() + GRACE_SECONDS
    for process in alive:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))


@contextmanager
def ctrl_c_of_commands() -> Iterator[None]:
    """A project command run in this process ends with exit status 130 on Ctrl-C (a trainer, after
    saving its checkpoint): inside, that becomes ``KeyboardInterrupt`` again, so the benchmark stops
    too instead of taking it for a failed command."""
    try:
        yield
    except SystemExit as error:
        if error.code == INTERRUPTED:
            raise KeyboardInterrupt from None
        raise


@contextmanager
def setting_up() -> Iterator[None]:
    """A benchmark's set-up: a bad flag or missing data is one ``error:`` line and exit status 2
    (:func:`~train.common.run.user_errors`); Ctrl-C, with nothing run yet, one line and exit status 130."""
    with user_errors():
        try:
            yield
        except KeyboardInterrupt:
            print("\ninterrupted while setting up: nothing was run", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None


def check_output(path: str | Path | None, flag: str) -> None:
    """An output path that could not be written, found before any work (its folder is made here)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"argument {flag}: {path} is a folder; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"argument {flag}: cannot write in {path.parent}")


def write_json(path: str | Path | None, result: dict) -> None:
    """Write ``result`` as JSON to ``path`` (nothing when no path was given)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def interrupted(path: str | Path | None, result: dict, where: str) -> NoReturn:
    """After Ctrl-C: write ``result`` (what is finished) to ``path`` marked ``"interrupted": true``,
    say ``where`` the benchmark stopped, and exit 130."""
    write_json(path, {**result, "interrupted": True})
    kept = f"; the finished rows are in {path}" if path else ""
    print(f"\ninterrupted {where}{kept}", file=sys.stderr)
    raise SystemExit(INTERRUPTED)
