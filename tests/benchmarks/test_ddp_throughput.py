"""The distributed-throughput benchmark: its commands, its table and JSON, its argument checks.

The runs themselves (train.reinforce under torchrun) are covered by tests/train/test_distributed.py;
here they are replaced by a stub so the test stays fast.
"""

from __future__ import annotations

import json
import sys
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
    assert saved["rows"] == rows and saved["settings"]["processes"] == 2
    assert "| 2 | 30.0 | 2.20x | 22, 40, 30 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [(["--processes", "1"], "--processes"), (["--repeats", "0"], "--repeats")],
    ids=["one-process", "no-repeats"],
)
def test_bad_arguments_are_clear_errors(argv, message):
    with pytest.raises(ValueError, match=message):
        ddp_throughput.main(argv)
