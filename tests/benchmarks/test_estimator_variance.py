"""The estimator-variance benchmark: every estimator's gradients from the same batches, at a checkpoint."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import estimator_variance
from tests import tiny
from train import reinforce

TINY = [*tiny.REINFORCE, *["--batch-size", "4", "--split", "test", "--eval-split", "test"]]


def test_rows_for_every_estimator_at_one_checkpoint(tmp_path, capsys):
    reinforce.main(
        TINY
        + [
            "--iterations",
            "2",
            "--run-name",
            "tiny",
            "--logdir",
            str(tmp_path / "runs"),
            "--checkpoint-dir",
            str(tmp_path / "ck"),
        ]
    )
    out = tmp_path / "variance.json"
    result = estimator_variance.main(
        [
            "--checkpoint",
            str(tmp_path / "ck" / "tiny" / "checkpoint.pt"),
            "--replicates",
            "6",
            "--batch-size",
            "4",
            "--samples",
            "3",
            "--json",
            str(out),
        ]
    )
    rows = {row["estimator"]: row for row in result["rows"]}
    assert list(rows) == list(estimator_variance.ESTIMATORS)
    assert rows["reinforce (loo)"]["ratio_to_reinforce_loo"] == 1.0
    assert all(math.isfinite(row["variance"]) and row["variance"] > 0 for row in rows.values())
    # Returns are positive, so without a baseline the score terms do not cancel: far more variance.
    assert rows["reinforce (no baseline)"]["variance"] > 10 * rows["reinforce (loo)"]["variance"]
    # The moving average (each step's mean return, a constant) removes part of that.
    assert rows["reinforce (moving average)"]["variance"] < 0.8 * rows["reinforce (no baseline)"]["variance"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert "| iw (per step) |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--checkpoint"),
        (["--checkpoint", "ck.pt", "--samples", "1"], "--samples"),
        (["--checkpoint", "ck.pt", "--baseline-batches", "0"], "--baseline-batches"),
    ],
    ids=["no-checkpoint", "one-sample", "no-baseline-batches"],
)
def test_bad_arguments_are_clear_errors(argv, message):
    with pytest.raises(ValueError, match=message):
        estimator_variance.main(argv)
