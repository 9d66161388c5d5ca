"""``python -m train.reinforce``: checkpoints, exact resume, Ctrl-C, TensorBoard, metrics JSON."""

from __future__ import annotations

import json
import math
import time

import gymnasium
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import painter_env  # noqa: F401
import train.reinforce as reinforce
from painter_env.config import build_painter
from tests import tiny
from train.common.metrics import learning_gain
from train.common.painter import env_config, fit_action_space
from train.common.tensorboard import claim_run_name

TINY = [*tiny.REINFORCE, "--batch-size", "4", *tiny.LOG_EVERY_2]


def _run(tmp_path, name, *extra):
    return reinforce.main([*TINY, *tiny.run_flags(tmp_path, name), *extra])


def _checkpoint(tmp_path, name):
    return torch.load(tmp_path / "ck" / name / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reinforce")
    metrics = _run(tmp_path, "full", "--iterations", "4")
    return tmp_path, metrics


def test_checkpoint_loads_with_weights_only_and_builds_an_env(uninterrupted):
    tmp_path, _ = uninterrupted
    payload = _checkpoint(tmp_path, "full")
    for key in ("dictionary", "env_config", "policy_config", "policy", "optimizer", "rng", "iteration"):
        assert key in payload
    assert payload["iteration"] == 4
    env = gymnasium.make(
        "Painter-v0", dictionary=str(tmp_path / "ck" / "full" / "checkpoint.pt"), image_size=12, patch_size=4
    )
    assert env.unwrapped.painter.dictionary.num_prototypes == 12


def test_metrics_json_has_the_standard_figures(uninterrupted):
    tmp_path, metrics = uninterrupted
    written = json.loads((tmp_path / "full.json").read_text())
    for key in (*tiny.METRICS_KEYS, "optimal_return_fraction"):
        assert key in written
    assert written["num_images"] == 8 and written["sse"] == pytest.approx(metrics["sse"])


def test_tensorboard_has_scalars_images_and_an_animated_rollout(uninterrupted):
    tmp_path, _ = uninterrupted
    events = EventAccumulator(str(tmp_path / "runs" / "full"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    for scalar in (
        "charts/sse",
        "charts/optimal_return_fraction",
        "losses/encoder",
        "policy/entropy",
        "policy/gradient_variance",
        "dictionary/usage_entropy_bits",
        "eval/sse",
        "eval/likely_sse",
        "eval/best_of_2_sse",
        "eval/untrained_sse",
        "eval/learning_gain",
    ):
        assert scalar in tags["scalars"], scalar
    assert [event.step for event in events.Scalars("eval/learning_gain")][:2] == [2, 4]  # every --curve-every
    for image in ("images/targets", "images/reconstructions", "dictionary/patches", "rollouts/painting"):
        assert image in tags["images"], image
    assert events.Images("rollouts/painting")[0].encoded_image_string.startswith(b"GIF89a")
    assert "hyperparameters/text_summary" in tags["tensors"]


def test_metrics_say_what_training_added_over_the_untrained_twin(uninterrupted):
    _, metrics = uninterrupted
    assert metrics["learning_gain"] == learning_gain(metrics["untrained_sse"], metrics["sse"])
    assert metrics["untrained_sse"] > 0


def test_hard_em_fits_the_dictionary_to_the_untrained_policy_only(tmp_path):
    metrics = _run(tmp_path, "hard-em", "--iterations", "3", "--hard-em")
    payload = _checkpoint(tmp_path, "hard-em")
    for name, value in payload["twin"].items():
        assert torch.equal(payload["policy"][name], value), name  # the policy stays as initialised
    start = gymnasium.make("Painter-v0", image_size=12, patch_size=4).unwrapped.painter.dictionary
    assert not torch.equal(payload["dictionary"]["state"]["mean"], start.mean.detach())
    assert metrics["sse"] == metrics["untrained_sse"] and payload["args"]["samples"] == 1
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, "bad", "--hard-em", "--freeze-dictionary")
    assert exit_info.value.code == 2


def test_resume_ends_like_an_uninterrupted_run(uninterrupted, tmp_path):
    full_path, full_metrics = uninterrupted
    _run(tmp_path, "part", "--iterations", "2")
    resumed = reinforce.main(["--resume", str(tmp_path / "ck" / "part" / "checkpoint.pt"), "--iterations", "4"])
    full, part = _checkpoint(full_path, "full"), _checkpoint(tmp_path, "part")
    assert part["iteration"] == 4
    for name, value in full["policy"].items():
        assert torch.equal(value, part["policy"][name]), name
    assert torch.equal(full["dictionary"]["state"]["mean"], part["dictionary"]["state"]["mean"])
    assert resumed["sse"] == full_metrics["sse"]


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(uninterrupted, tmp_path, monkeypatch):
    full_path, _ = uninterrupted
    calls = {"count": 0}
    original = reinforce.sample_batch

    def interrupted(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(reinforce, "sample_batch", interrupted)
    with pytest.raises(SystemExit) as stopped:
        _run(tmp_path, "stopped", "--iterations", "4")
    assert stopped.value.code == 130  # the shell's status for Ctrl-C
    assert _checkpoint(tmp_path, "stopped")["iteration"] == 2
    monkeypatch.setattr(reinforce, "sample_batch", original)
    reinforce.main(["--resume", str(tmp_path / "ck" / "stopped" / "checkpoint.pt"), "--iterations", "4"])
    full, stopped = _checkpoint(full_path, "full"), _checkpoint(tmp_path, "stopped")
    for name, value in full["policy"].items():
        assert torch.equal(value, stopped["policy"][name]), name


@pytest.mark.parametrize("estimator", ["reinforce", "vimco"])
def test_other_estimators_train_and_freeze_keeps_the_dictionary(tmp_path, estimator):
    _run(
        tmp_path,
        estimator,
        "--iterations",
        "2",
        "--estimator",
        estimator,
        "--freeze-dictionary",
        "--baseline",
        "value",
        "--entropy-coef",
        "0.01",
    )
    payload = _checkpoint(tmp_path, estimator)
    start = gymnasium.make("Painter-v0", image_size=12, patch_size=4).unwrapped.painter.dictionary
    assert torch.equal(payload["dictionary"]["state"]["mean"], start.mean.detach())


@pytest.mark.parametrize("move_radius", [None, 1])
@pytest.mark.parametrize("bits", [20.0, 60.0])
def test_match_bits_picks_the_closest_length_and_the_centre_radius(bits, move_radius):
    args = reinforce.Args(image_size=16, match_bits=bits, move_radius=move_radius)
    chosen = fit_action_space(args)
    steps, radius = chosen.steps, chosen.move_radius
    painter = build_painter(env_config(chosen, chosen.split))
    assert radius == (painter.geometry.centre_radius if move_radius is None else move_radius)
    per_step = math.log2(painter.geometry.num_moves**2 * painter.dictionary.num_patches)
    assert abs(steps * per_step - bits) <= per_step / 2 or steps == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "3"], "--batch-size must be an even multiple"),
        (["--estimator", "ppo"], "invalid choice: 'ppo'"),
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--dataset", "mnist", "--data-root", "/nonexistent"], "--download"),
        (["--split", "test[8000:2]"], "split"),
    ],
    ids=["odd-batch", "unknown-estimator", "unknown-dataset", "missing-files", "empty-split"],
)
def test_bad_arguments_print_one_error_line_and_exit_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, "bad", *flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(error)
    assert error[-1].startswith(("error:", "usage:")) or "error:" in error[-1]
    assert message in error[-1]


def test_a_folder_dataset_gets_a_flat_run_name(tmp_path):
    from PIL import Image

    folder = tmp_path / "my pictures" / "cats"
    folder.mkdir(parents=True)
    for index in range(4):
        Image.new("L", (12, 12), color=40 * index).save(folder / f"{index}.png")
    argv = TINY + ["--dataset", f"folder:{folder}", "--split", "all", "--eval-split", "all", "--iterations", "1"]
    reinforce.main(argv + ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")])
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("folder-cats__iw__s1__") and ":" not in run.name
    assert (tmp_path / "ck" / run.name / "checkpoint.pt").exists()


def test_runs_started_in_the_same_second_get_their_own_logs_and_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # both default names from one clock
    argv = TINY + ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--iterations", "1"]
    reinforce.main(argv)
    reinforce.main(argv)
    base = "shapes__iw__s1__1700000000"
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [base, f"{base}_2"]
    assert all((tmp_path / "ck" / name / "checkpoint.pt").exists() for name in (base, f"{base}_2"))


def test_a_default_name_whose_checkpoint_exists_is_not_reused(tmp_path):
    (tmp_path / "ck" / "run").mkdir(parents=True)  # e.g. logs deleted, checkpoint kept
    assert claim_run_name("run", tmp_path / "runs", tmp_path / "ck") == "run_2"
    assert claim_run_name("run", tmp_path / "runs", tmp_path / "ck") == "run_3"
