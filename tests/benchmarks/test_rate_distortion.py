"""The rate-distortion benchmark's quick mode runs end to end and writes its table, JSON and plot."""

import json

import pytest

from benchmarks import rate_distortion
from tests.conftest import MNIST_ROOT


def test_quick_mode_writes_every_row_json_and_png(tmp_path, capsys, mnist_root):
    result = rate_distortion.main(
        [
            "--data-root",
            str(mnist_root),
            "--quick",
            "--json",
            str(tmp_path / "rd.json"),
            "--plot",
            str(tmp_path / "rd.png"),
        ]
    )
    names = [entry["name"] for entry in result["rows"]]
    for expected in (
        "mean image",
        "PCA E=20",
        "k-means K=256",
        "greedy painter T=16",
        "greedy + Gibbs painter T=16",
        "LLGAE K=11 E=20",
        "CGAE-Gibbs H=16",
        "VQ-VAE 7x7",
        "VAE kl-beta=1",
    ):
        assert expected in names
    rows = {entry["name"]: entry for entry in result["rows"]}
    assert rows["greedy + Gibbs painter T=8"]["sse"] <= rows["greedy painter T=8"]["sse"] + 1e-6
    assert rows["PCA E=50"]["sse"] < rows["PCA E=5"]["sse"] < rows["mean image"]["sse"]
    assert rows["VQ-VAE 7x7"]["bits_per_image"] == pytest.approx(49 * 5.70, abs=0.5)
    assert result["gibbs_conditional_cost"]["ratio"] > 0
    assert json.loads((tmp_path / "rd.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| greedy + Gibbs painter T=16 |" in printed and "policy painter rows skipped" in printed


def test_policy_rows_are_skipped_with_a_note_when_evaluation_fails(tmp_path):
    args = rate_distortion.Args(policy_checkpoint=str(tmp_path / "missing.pt"), data_root=str(MNIST_ROOT))
    rows, notes = rate_distortion.policy_rows(args, test_count=4)
    assert rows == [] and len(notes) == 2 and all("skipped" in note for note in notes)
