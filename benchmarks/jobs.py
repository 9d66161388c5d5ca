"""Benchmark commands as jobs: ``python -m MODULE ARGV --metrics-json PATH``, several at a time.

Each job trains or evaluates with the project's own command and leaves its figures in a JSON file,
so a benchmark table is made by the same commands a user runs.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass
class Job:
    """One command (``python -m MODULE ARGV``) whose ``--metrics-json`` becomes a row."""

    name: str
    family: str
    module: str
    argv: list[str]
    metrics: Path
    note: str = ""


def run_jobs(jobs: list[Job], parallel: int, description: str) -> list[str]:
    """Run the jobs (``parallel`` at a time as subprocesses, or in this process); notes of the failures.

    A job whose metrics file exists already is not run again: a benchmark stopped half-way and
    started again with the same working folder goes on where it stopped.
    """
    notes = []
    jobs = [job for job in jobs if not job.metrics.exists()]
    with tqdm(total=len(jobs), desc=description) as bar:
        if parallel == 1:
            for job in jobs:
                try:
                    importlib.import_module(job.module).main([*job.argv, "--metrics-json", str(job.metrics)])
                except (Exception, SystemExit) as error:  # a failed row is reported, the others go on
                    notes.append(f"{job.name}: {job.module} failed ({error!r})")
                bar.update()
            return notes
        waiting, running = list(jobs), []
        while waiting or running:
            while waiting and len(running) < parallel:
                job = waiting.pop(0)
                command = [sys.executable, "-m", job.module, *job.argv, "--metrics-json", str(job.metrics)]
                log = open(job.metrics.with_suffix(".log"), "w")  # noqa: SIM115  (closed when the job ends)
                running.append((job, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
            time.sleep(1.0)
            for entry in [entry for entry in running if entry[1].poll() is not None]:
                job, process, log = entry
                log.close()
                running.remove(entry)
                if process.returncode != 0:
                    notes.append(f"{job.name}: {job.module} exited {process.returncode} (see {log.name})")
                bar.update()
    return notes
