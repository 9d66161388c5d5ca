"""The estimator-variance benchmark: every estimator's gradients from the same batches, at a checkpoint."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import estimator_variance
from tests import tiny
from train import reinforce

TINY = [*tiny.REINFORCE, *["--batch-size", "4", "--split", "test", "--eval-split", "test"]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A train.reinforce checkpoint after two iterations of a tiny painter."""
    folder = tmp_path_factory.mktemp("reinforce")
    runs = ["--logdir", str(folder / "runs"), "--checkpoint-dir", str(folder / "ck"), "--run-name", "tiny"]
    reinforce.main([*TINY, "--iterations", "2", *runs])
    return str(folder / "ck" / "tiny" / "checkpoint.pt")


def test_rows_for_every_estimator_at_one_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "variance.json"
    argv = ["--checkpoint", checkpoint, "--replicates", "6", "--batch-size", "4", "--samples", "3"]
    result = estimator_variance.main([*argv, "--json", str(out)])
    rows = {row["estimator"]: row for row in result["rows"]}
    assert list(rows) == list(estimator_variance.ESTIMATORS)
    assert rows["reinforce (loo)"]["ratio_to_reinforce_loo"] == 1.0
    assert all(math.isfinite(row["variance"]) and row["variance"] > 0 for row in rows.values())
    # Returns are positive, so without a baseline the score terms do not cancel: far more variance.
    assert rows["reinforce (no baseline)"]["variance"] > 10 * rows["reinforce (loo)"]["variance"]
    # The moving average (each step's mean return, a constant) removes part of that.
    assert rows["reinforce (moving average)"]["variance"] < 0.8 * rows["reinforce (no baseline)"]["variance"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["interrupted"] is False
    assert "| iw (per step) |" in capsys.readouterr().out


def test_ctrl_c_keeps_the_rows_of_the_replicates_done(checkpoint, tmp_path, monkeypatch, capsys):
    calls, sample_batch = [], estimator_variance.sample_batch

    def interrupted_on_the_fifth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # two baseline batches, two replicates, then Ctrl-C
            raise KeyboardInterrupt
        return sample_batch(*args, **kwargs)

    monkeypatch.setattr(estimator_variance, "sample_batch", interrupted_on_the_fifth_batch)
    out = tmp_path / "variance.json"
    argv = ["--checkpoint", checkpoint, "--replicates", "6", "--batch-size", "4", "--samples", "3"]
    with pytest.raises(SystemExit) as stopped:
        estimator_variance.main([*argv, "--baseline-batches", "2", "--json", str(out)])
    assert stopped.value.code == 130
    written = json.loads(out.read_text())
    assert written["interrupted"] is True
    assert [row["replicates"] for row in written["rows"]] == [2] * len(estimator_variance.ESTIMATORS)
    assert "interrupted after 2 of 6 replicate batches" in capsys.readouterr().err
