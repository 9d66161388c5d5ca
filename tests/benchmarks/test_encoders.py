"""The encoder benchmark end to end on a tiny budget: every estimator spec trains and is scored; Ctrl-C."""

from __future__ import annotations

import json

import pytest

from agents.encoders import CHECKPOINT_KIND
from benchmarks import encoders
from decoders.storage import load_checkpoint
from train.common.metrics import learning_gain


def test_every_estimator_and_seed_is_scored_beside_its_untrained_twin_and_greedy(tmp_path, capsys):
    out = tmp_path / "encoders.json"
    argv = ["--datasets", "shapes", "--estimators", "reinforce:self-critical", "hard-em", "--seeds", "1", "2"]
    argv += ["--shapes-minutes", "0.01", "--eval-images", "16", "--workdir", str(tmp_path), "--json", str(out)]
    rows = encoders.main(argv)
    assert [(row["encoder"], row["seed"]) for row in rows] == [
        ("reinforce:self-critical", 1),
        ("reinforce:self-critical", 2),
        ("hard-em", 1),
        ("hard-em", 2),
    ]
    written = json.loads(out.read_text())
    assert written["rows"] == rows and len(written["medians"]) == 2
    for row in rows:
        assert row["num_images"] == 16 and 0 < row["optimal_return_fraction"] <= 1 + 1e-6
        assert row["learning_gain"] == learning_gain(row["untrained_sse"], row["sse"]) and row["greedy_sse"] >= 0
    assert all(row["untrained_sse"] == row["sse"] for row in rows[2:])  # hard EM leaves the policy untrained
    saved = load_checkpoint(
        tmp_path / "checkpoints" / "bench_shapes_reinforce_self-critical_s2" / "checkpoint.pt", CHECKPOINT_KIND
    )
    assert (saved["args"]["estimator"], saved["args"]["baseline"], saved["args"]["seed"]) == (
        "reinforce",
        "self-critical",
        2,
    )
    assert "| shapes | hard-em | 2 seeds |" in capsys.readouterr().out


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
    argv = ["--datasets", "shapes", "--estimators", "iw", "vimco", "--seeds", "1", "--workdir", str(tmp_path)]
    argv += ["--json", str(out)]
    with pytest.raises(SystemExit) as stopped:
        encoders.main(argv)
    assert stopped.value.code == 130
    written = json.loads(out.read_text())
    assert written["interrupted"] is True
    assert [(row["encoder"], row["greedy_sse"]) for row in written["rows"]] == [("iw", 2.0)]
    assert "interrupted after 1 of 2 rows" in capsys.readouterr().err
