"""The rate-distortion benchmark's quick mode runs end to end and writes its table, JSON and plot."""

import json

import pytest

from benchmarks import rate_distortion


def test_quick_mode_writes_matched_rate_rows_json_and_png(tmp_path, capsys, mnist_root):
    result = rate_distortion.main(
        ["--data-root", str(mnist_root), "--quick", "--jobs", "1", "--json", str(tmp_path / "rd.json"),
         "--plot", str(tmp_path / "rd.png"), "--workdir", str(tmp_path / "work")]
    )  # fmt: skip
    assert result["notes"] == []
    rows = {entry["name"]: entry for entry in result["rows"]}
    for bits in (70, 140):
        painted = [rows[f"painter: {name}, {bits} bits"] for name in ("greedy", "greedy + Gibbs", "policy")]
        refined = rows[f"painter: policy + Gibbs, {bits} bits"]
        vqvae = rows[f"VQ-VAE, {bits} bits"]
        for entry in [*painted, refined, vqvae]:
            assert entry["bits_per_image"] == pytest.approx(bits, rel=0.15), entry["name"]
        assert painted[1]["sse"] <= painted[0]["sse"] + 1e-6  # refinement never makes a program worse
        assert refined["sse"] <= painted[2]["sse"] + 1e-6
    assert rows["PCA E=50"]["sse"] < rows["PCA E=5"]["sse"] < rows["mean image"]["sse"]
    assert json.loads((tmp_path / "rd.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| painter: policy + Gibbs, 140 bits |" in capsys.readouterr().out


def test_a_failing_command_becomes_a_note_and_the_other_rows_remain(tmp_path):
    job = rate_distortion.Job("broken", "VQ-VAE", "train.vqvae", ["--dataset", "cifar"], tmp_path / "broken.json")
    notes = rate_distortion.run_jobs([job], parallel=1, description="test")
    assert len(notes) == 1 and notes[0].startswith("broken: train.vqvae failed")
    assert rate_distortion.job_rows([job]) == []
