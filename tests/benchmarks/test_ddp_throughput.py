"""The distributed-throughput benchmark: its commands, its table and JSON, Ctrl-C (bad flags: test_bad_input.py).

The runs themselves (train.reinforce under torchrun) are covered by tests/train/test_distributed.py;
here they are replaced by a stub so the test stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks import ddp_throughput


def test_one_process_runs_the_trainer_and_several_run_torchrun():
    args = ddp_throughput.Args(batch_size=8, iterations=5, dataset="shapes", image_size=20)
    single = ddp_throughput.command(1, args, Path("work"), "p1")
    several = ddp_throughput.command(3, args, Path("work"), "p3")
    assert single[:3] == [sys.executable, "-m", "train.reinforce"]
    assert several[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert several[several.index("--nproc-per-node") + 1] == "3"
    for line in (single, several):
        assert line[line.index("--batch-size") + 1] == "8"
        assert line[line.index("--iterations") + 1] == "5"
        assert line[line.index("--threads") + 1] == "1"
        assert line[line.index("--metrics-json") + 1] == str(
            Path("work") / f"{line[line.index('--run-name') + 1]}.json"
        )


def test_table_and_json_report_medians_and_paired_speedup(tmp_path, monkeypatch, capsys):
    rates = {1: iter([10.0, 20.0, 11.0]), 2: iter([22.0, 40.0, 30.0])}
    monkeypatch.setattr(ddp_throughput, "images_per_second", lambda processes, *_: next(rates[processes]))
    out = tmp_path / "ddp.json"
    rows = ddp_throughput.main(["--processes", "2", "--repeats", "3", "--json", str(out)])
    assert [row["images_per_second"] for row in rows] == [11.0, 30.0]
    # The median of the per-pair ratios 2.2, 2.0, 30/11, not the ratio of the medians (30/11).
    assert rows[1]["speedup"] == pytest.approx(2.2)
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["settings"]["processes"] == 2 and saved["interrupted"] is False
    assert "| 2 | 30.0 | 2.20x | 22, 40, 30 |" in capsys.readouterr().out


def test_ctrl_c_writes_the_runs_done_so_far(tmp_path, monkeypatch, capsys):
    rates = {1: iter([10.0, 12.0]), 2: iter([22.0])}

    def images_per_second(processes, *_):
        rate = next(rates[processes], None)
        if rate is None:  # Ctrl-C during the second 2-process run
            raise KeyboardInterrupt
        return rate

    monkeypatch.setattr(ddp_throughput, "images_per_second", images_per_second)
    out = tmp_path / "ddp.json"
    with pytest.raises(SystemExit) as stopped:
        ddp_throughput.main(["--processes", "2", "--repeats", "3", "--json", str(out)])
    assert stopped.value.code == 130
    saved = json.loads(out.read_text())
    assert saved["interrupted"] is True
    assert [(row["runs"], row["speedup"]) for row in saved["rows"]] == [([10.0, 12.0], 1.0), ([22.0], 2.2)]
    assert "interrupted after 1 of 3 pairs of runs" in capsys.readouterr().err


def test_ctrl_c_stops_every_process_of_a_run(tmp_path, monkeypatch):
    """The run gets Ctrl-C as a process group: here a process with a child, both stopped."""
    pids = tmp_path / "pids"
    script = (
        "import subprocess, sys, time, pathlib; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"pathlib.Path({str(pids)!r}).write_text(f'{{child.pid}} ' + str(__import__('os').getpid())); "
        "child.wait()"
    )
    monkeypatch.setattr(ddp_throughput, "command", lambda *_: [sys.executable, "-c", script])

    def ctrl_c_once_started():
        deadline = time.monotonic() + 20
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        ddp_throughput.images_per_second(2, ddp_throughput.Args(), tmp_path, "run")
    for pid in map(int, pids.read_text().split()):
        assert not running(pid)


def running(pid: int) -> bool:
    """Whether a process is alive (a zombie waiting to be reaped counts as ended)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in "ZX":
            return False
        time.sleep(0.05)
    return True
