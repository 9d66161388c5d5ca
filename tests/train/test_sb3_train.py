"""``python -m train.sb3``: trains, logs animations to TensorBoard, saves, scores, resumes."""

import json
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.sb3 import PainterMultiInputPolicy
from agents.sb3.algorithms import load_sb3_model, saved_algorithm
from agents.sb3.callbacks import FinalSSECallback
from agents.sb3.encoder import sb3_env_config
from painter_env.config import PainterConfig, build_painter
from tests import tiny
from train import sb3

TINY_FLAGS = [
    "--image-size",
    "10",
    "--patch-size",
    "3",
    "--max-shapes",
    "2",
    "--max-steps",
    "2",
    "--split",
    "test[:1000]",
    "--eval-split",
    "test[1000:]",
    "--eval-images",
    "64",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """``train.sb3.main`` sets torch's threads and distribution checks for the process; restored here."""
    threads, validate = torch.get_num_threads(), torch.distributions.Distribution._validate_args
    yield
    torch.set_num_threads(threads)
    torch.distributions.Distribution.set_default_validate_args(validate)


def run(tmp_path, *flags):
    metrics_path = tmp_path / "metrics.json"
    metrics = sb3.main([*TINY_FLAGS, "--logdir", str(tmp_path / "runs"), "--metrics-json", str(metrics_path), *flags])
    assert json.loads(metrics_path.read_text())["sse"] == metrics["sse"]
    return metrics


def test_ppo_trains_logs_a_painting_animation_saves_and_scores(tmp_path):
    metrics = run(
        tmp_path,
        "--algo",
        "ppo",
        "--total-timesteps",
        "512",
        "--n-envs",
        "16",
        "--gif-every",
        "256",
        "--hyperparams",
        "n_steps=8",
        "batch_size=64",
        "n_epochs=2",
    )
    for key in (*tiny.METRICS_KEYS, "optimal_return_fraction"):
        assert key in metrics
    assert metrics["num_images"] == 64 and metrics["sse"] > 0 and metrics["optimal_return_fraction"] <= 1.0
    run_dir = next((tmp_path / "runs").iterdir())
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    gifs = events.Images("rollouts/painting")
    assert len(gifs) >= 2 and gifs[0].encoded_image_string[:6] == b"GIF89a"
    assert "rollout/final_sse" in events.Tags()["scalars"] and "eval/sse" in events.Tags()["scalars"]

    # The saved agent, with its recorded painter settings, scores the same again (deterministic actions).
    model = load_sb3_model(metrics["model"])
    assert isinstance(model.policy, PainterMultiInputPolicy)  # ppo.toml's policy
    config = sb3_env_config(metrics["model"])
    assert config["image_size"] == 10 and config["split"] == "test[:1000]"
    eval_painter = build_painter(PainterConfig(**{**config, "split": "test[1000:]"}))
    again = sb3.evaluate(model, eval_painter, 64)
    assert again["sse"] == pytest.approx(metrics["sse"], rel=1e-5)

    resumed = run(
        tmp_path,
        "--algo",
        "ppo",
        "--total-timesteps",
        "128",
        "--n-envs",
        "16",
        "--load",
        metrics["model"],
        "--save",
        str(tmp_path / "resumed.zip"),
        "--hyperparams",
        "n_steps=8",
    )
    assert (tmp_path / "resumed.zip").exists() and resumed["total_timesteps"] == 128


@pytest.mark.parametrize(
    "algo, flags",
    [
        ("a2c", ["--vec-env", "dummy"]),
        ("a2c", ["--joint-moves", "--hyperparams", 'policy="MultiInputPolicy"']),
        ("dqn", ["--hyperparams", "learning_starts=64", "buffer_size=500"]),
        ("qrdqn", ["--hyperparams", "learning_starts=64", "buffer_size=500"]),
        ("recurrent-ppo", ["--hyperparams", "n_steps=8", "batch_size=32"]),
        ("maskable-ppo", ["--hyperparams", "n_steps=8", "batch_size=32"]),
        ("trpo", ["--hyperparams", "n_steps=8", "batch_size=32"]),
    ],
    ids=["a2c-dummy", "a2c-joint-moves", "dqn", "qrdqn", "recurrent-ppo", "maskable-ppo", "trpo"],
)
def test_every_algorithm_trains_saves_and_scores(tmp_path, algo, flags):
    pytest.importorskip("sb3_contrib")
    metrics = run(tmp_path, "--algo", algo, "--total-timesteps", "256", "--n-envs", "4", "--move-radius", "2", *flags)
    assert metrics["algo"] == algo and metrics["num_images"] == 64
    assert saved_algorithm(metrics["model"]) == algo


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algo", "sac"], "invalid choice"),
        (["--n-envs", "many"], "invalid int value"),
        (["--n-envs", "0"], "--n-envs must be positive"),
        (["--dataset", "mnist", "--data-root", "/nonexistent"], "images not found under"),
        (["--hyperparams", "learning_rate"], "key=value"),
        (["--hyperparams", "learning_rate=fast"], "not TOML"),
        (["--config", "/nonexistent/ppo.toml"], "cannot read hyperparameter file"),
        (["--joint-moves", "--vec-env", "dummy"], "needs --vec-env batched"),
        (["--joint-moves"], "PainterMultiInputPolicy needs the painter's MultiDiscrete"),
    ],
    ids=[
        "algo",
        "not-a-number",
        "zero-envs",
        "missing-dataset",
        "hyperparams-item",
        "hyperparams-value",
        "config",
        "joint-moves-dummy",
        "joint-moves-painter-policy",
    ],
)
def test_bad_input_is_a_one_line_error_with_status_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, "--logdir", str(tmp_path / "runs"), *flags])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in error and message in error


def test_a_missing_sb3_contrib_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import sb3_contrib now fails
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, "--logdir", str(tmp_path / "runs"), "--algo", "trpo"])
    assert stopped.value.code == 2
    assert 'pip install -e ".[contrib]"' in capsys.readouterr().err


def test_ctrl_c_saves_the_agent_and_exits_with_status_130(tmp_path, monkeypatch):
    def interrupt(callback):
        raise KeyboardInterrupt

    monkeypatch.setattr(FinalSSECallback, "_on_step", interrupt)
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, "--logdir", str(tmp_path / "runs"), "--save", str(tmp_path / "stopped.zip")])
    assert stopped.value.code == 130
    assert saved_algorithm(tmp_path / "stopped.zip") == "ppo"
