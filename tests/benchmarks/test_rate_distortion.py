"""The rate-distortion benchmark's quick mode runs end to end and writes its table, JSON and plot; its jobs
survive Ctrl-C (bad flags: test_bad_input.py)."""

import json
import sys
from pathlib import Path

import pytest

from benchmarks import jobs, rate_distortion


def test_quick_mode_writes_matched_rate_rows_json_and_png(tmp_path, capsys, one_torch_thread):
    argv = ["--dataset", "shapes", "--eval-split", "test[:16]", "--quick", "--bits", "70", "--minutes", "0.005"]
    argv += ["--jobs", "1", "--workdir", str(tmp_path / "w")]
    result = rate_distortion.main([*argv, "--json", str(tmp_path / "rd.json"), "--plot", str(tmp_path / "rd.png")])
    assert result["notes"] == [] and result["interrupted"] is False
    rows = {entry["name"]: entry for entry in result["rows"]}
    painted = [rows[f"painter: {name}, 70 bits"] for name in ("greedy", "greedy + Gibbs", "policy")]
    refined = rows["painter: policy + Gibbs, 70 bits"]
    for entry in [*painted, refined, rows["VQ-VAE, 70 bits"]]:
        assert entry["bits_per_image"] == pytest.approx(70, rel=0.15), entry["name"]
    assert painted[1]["sse"] <= painted[0]["sse"] + 1e-6  # refinement never makes a program worse
    assert refined["sse"] <= painted[2]["sse"] + 1e-6
    assert rows["PCA E=50"]["sse"] < rows["PCA E=5"]["sse"] < rows["mean image"]["sse"]
    assert json.loads((tmp_path / "rd.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| painter: policy + Gibbs, 70 bits |" in capsys.readouterr().out


def test_every_command_gets_the_data_splits_and_budget():
    args = rate_distortion.Args(data_root="DIR", bits=[70.0], eval_images=8, baselines=True, minutes=2.0)
    training, evaluation, others = rate_distortion.all_jobs(args, Path("work"))
    trainers = [*["train.reinforce"] * 2, "train.vqvae", "train.llgae", *["train.cgae"] * 2, *["train.vqvae"] * 3]
    assert [job.module for job in training + others] == trainers
    assert "--hard-em" in training[1].argv  # the painter whose dictionary is fitted to its untrained policy
    scored = [
        (
            job.argv[job.argv.index("--checkpoint") + 1],
            job.argv[job.argv.index("--encoder") + 1],
            "--untrained" in job.argv,
        )
        for job in evaluation
    ]
    assert ("work/checkpoints/painter-70bits/checkpoint.pt", "policy", True) in scored
    assert ("work/checkpoints/hard-em-70bits/checkpoint.pt", "greedy", False) in scored
    for job in training + evaluation + others:
        flags = dict(zip(job.argv, job.argv[1:]))
        assert (flags["--data-root"], flags["--eval-split"], flags["--eval-images"]) == ("DIR", "test[8000:]", "8")
    for job in training + others:  # a trainer: fitted on --split for --minutes, no cap on iterations or epochs
        flags = dict(zip(job.argv, job.argv[1:]))
        assert (flags["--split"], flags["--minutes"]) == ("test[:8000]", "2.0")
        assert "--iterations" not in flags and "--epochs" not in flags


def test_quick_mode_keeps_the_flags_given():
    args = rate_distortion.Args(quick=True, bits=[70.0], minutes=0.01)
    rate_distortion.apply_quick(args)
    assert (args.bits, args.minutes, args.split, args.eval_images) == ([70.0], 0.01, "test[:300]", 16)


def test_a_failing_command_becomes_a_note_and_the_other_rows_remain(tmp_path):
    job = rate_distortion.Job("broken", "VQ-VAE", "train.vqvae", ["--dataset", "cifar"], tmp_path / "broken.json")
    notes = rate_distortion.run_jobs([job], parallel=1, description="test")
    assert len(notes) == 1 and notes[0].startswith("broken: train.vqvae failed")
    assert rate_distortion.job_rows([job]) == []


def test_ctrl_c_stops_the_running_commands_and_keeps_the_finished_ones(tmp_path, monkeypatch):
    """Two jobs run at once; Ctrl-C once the quick one is done: the slow one is stopped, the quick one's figures
    stay, and a second run skips it."""
    scripts = {
        "quick": "import pathlib, sys; pathlib.Path(sys.argv[-1]).write_text('{}')",
        "slow": f"import os, pathlib, time; pathlib.Path({str(tmp_path / 'slow.pid')!r}).write_text(str(os.getpid()));"
        " time.sleep(60)",
        "failing": "raise SystemExit(1)",
    }

    def command(job):
        return [sys.executable, "-c", scripts[job.module], str(job.running_metrics)]

    monkeypatch.setattr(jobs, "command", command)
    monkeypatch.setattr(jobs, "POLL_SECONDS", 0.05)
    finish = jobs.finish

    def ctrl_c_after_the_first_job(job):
        finish(job)
        for _ in range(200):  # the slow command has started
            if (tmp_path / "slow.pid").exists():
                break
            jobs.time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "finish", ctrl_c_after_the_first_job)
    quick, slow = (jobs.Job(name, "test", name, [], tmp_path / f"{name}.json") for name in ("quick", "slow"))
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs([quick, slow], parallel=2, description="test")
    assert quick.metrics.exists() and not slow.metrics.exists()
    pid = int((tmp_path / "slow.pid").read_text())
    with pytest.raises(ProcessLookupError):
        jobs.os.kill(pid, 0)
    monkeypatch.setattr(jobs, "finish", finish)
    quick.module = "failing"  # were it run again, it would fail
    assert jobs.run_jobs([quick], parallel=2, description="test") == []


def test_ctrl_c_writes_the_finished_rows_and_keeps_the_workdir(tmp_path, monkeypatch, capsys, one_torch_thread):
    def training_interrupted(training, parallel, description):
        vqvae = next(job for job in training if job.module == "train.vqvae")
        figures = {"bits_per_image": 70.0, "sse": 9.0, "psnr": 14.0, "images_per_second": 100.0, "wall_seconds": 1}
        vqvae.metrics.write_text(json.dumps(figures))
        raise KeyboardInterrupt

    monkeypatch.setattr(rate_distortion, "run_jobs", training_interrupted)
    out, workdir = tmp_path / "rd.json", tmp_path / "work"
    argv = ["--dataset", "shapes", "--quick", "--bits", "70", "--eval-split", "test[:16]", "--workdir", str(workdir)]
    with pytest.raises(SystemExit) as stopped:
        rate_distortion.main([*argv, "--json", str(out)])
    assert stopped.value.code == 130
    written = json.loads(out.read_text())
    assert written["interrupted"] is True
    names = [row["name"] for row in written["rows"]]
    # the mean image, the mean colours, 4 PCA, 3 k-means, JPEG and WebP at 4 qualities each, then the finished job
    assert names[0] == "mean image" and names[-1] == "VQ-VAE, 70 bits" and len(names) == 18
    # 2 painter trainings, 7 evaluations and the VQ-VAE
    assert (
        f"with 1 of 10 jobs finished; the same command with --workdir {workdir} skips them" in capsys.readouterr().err
    )
    assert (workdir / "vqvae-70bits.json").exists()
