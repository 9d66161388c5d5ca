"""The encoder benchmark end to end on a tiny budget: every estimator spec trains and is scored."""

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
            "0.03",
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
    assert json.loads(out.read_text()) == rows
    for row in rows:
        assert row["num_images"] == 16 and 0 < row["optimal_return_fraction"] <= 1 + 1e-6
    saved = load_checkpoint(
        tmp_path / "checkpoints" / "bench_shapes_reinforce_self-critical" / "checkpoint.pt", CHECKPOINT_KIND
    )
    assert (saved["args"]["estimator"], saved["args"]["baseline"]) == ("reinforce", "self-critical")
    assert "| shapes | policy (vimco) |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["--estimators", "adam"], ["--estimators", "iw:loo"], ["--estimators", "reinforce:median"]],
    ids=["unknown-estimator", "baseline-on-iw", "unknown-baseline"],
)
def test_bad_estimator_spec_is_a_clear_error(argv):
    with pytest.raises(ValueError, match="--estimators"):
        encoders.main(argv)


def test_unknown_dataset_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        encoders.main(["--datasets", "cifar"])
