"""The encoder benchmark end to end on a tiny budget: every estimator spec trains and is scored; Ctrl-C."""

from __future__ import annotations

import json

import pytest

from agents.encoders import CHECKPOINT_KIND
from benchmarks import encoders
from decoders.storage import load_checkpoint


def test_quick_run_scores_policy_and_greedy_per_estimator(tmp_path, capsys):
    out = tmp_path / "encoders.json"
    rows = encoders.main(
        [
            "--datasets",
            "shapes",
            "--estimators",
            "reinforce:self-critical",
            "vimco",
            "--shapes-minutes",
            "0.01",
            "--eval-images",
            "16",
            "--workdir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert [row["encoder"] for row in rows] == [
        "policy (reinforce:self-critical)",
        "greedy (dictionary of reinforce:self-critical)",
        "policy (vimco)",
        "greedy (dictionary of vimco)",
    ]
    assert json.loads(out.read_text()) == {"rows": rows, "interrupted": False}
    for row in rows:
        assert row["num_images"] == 16 and 0 < row["optimal_return_fraction"] <= 1 + 1e-6
    saved = load_checkpoint(
        tmp_path / "checkpoints" / "bench_shapes_reinforce_self-critical" / "checkpoint.pt", CHECKPOINT_KIND
    )
    assert (saved["args"]["estimator"], saved["args"]["baseline"]) == ("reinforce", "self-critical")
    assert "| shapes | policy (vimco) |" in capsys.readouterr().out


def test_ctrl_c_keeps_the_finished_rows(tmp_path, monkeypatch, capsys):
    """A trainer stopped by Ctrl-C exits 130 after saving its checkpoint: the benchmark stops there too."""
    trained = iter([{"num_images": 4, "sse": 1.0}, SystemExit(130)])

    def train(argv):
        outcome = next(trained)
        if isinstance(outcome, SystemExit):
            raise outcome
        return outcome

    monkeypatch.setattr(encoders.reinforce, "main", train)
    monkeypatch.setattr(encoders.evaluate, "main", lambda argv: {"num_images": 4, "sse": 2.0})
    out = tmp_path / "encoders.json"
    argv = ["--datasets", "shapes", "--estimators", "iw", "vimco", "--workdir", str(tmp_path), "--json", str(out)]
    with pytest.raises(SystemExit) as stopped:
        encoders.main(argv)
    assert stopped.value.code == 130
    written = json.loads(out.read_text())
    assert written["interrupted"] is True
    assert [row["encoder"] for row in written["rows"]] == ["policy (iw)", "greedy (dictionary of iw)"]
    assert "interrupted after 2 of 4 rows" in capsys.readouterr().err
