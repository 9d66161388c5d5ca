"""``python -m train.sb3``: trains, logs animations to TensorBoard, saves, scores, resumes."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.sb3.encoder import load_sb3_model, sb3_env_config
from painter_env.config import PainterConfig, build_painter
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
    for key in (
        "sse",
        "psnr",
        "bits_per_image",
        "images_per_second",
        "num_images",
        "wall_seconds",
        "optimal_return_fraction",
    ):
        assert key in metrics
    assert metrics["num_images"] == 64 and metrics["sse"] > 0 and metrics["optimal_return_fraction"] <= 1.0
    run_dir = next((tmp_path / "runs").iterdir())
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    gifs = events.Images("rollouts/painting")
    assert len(gifs) >= 2 and gifs[0].encoded_image_string[:6] == b"GIF89a"
    assert "rollout/final_sse" in events.Tags()["scalars"] and "eval/sse" in events.Tags()["scalars"]

    # The saved agent, with its recorded painter settings, scores the same again (deterministic actions).
    model = load_sb3_model(metrics["model"])
    assert model.policy.features_extractor.matched_dim > 0  # ppo.toml's [shapes] table asks for it
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
    "algo, vec_env, flags",
    [
        ("a2c", "dummy", []),
        ("dqn", "batched", ["--hyperparams", "learning_starts=64", "buffer_size=500"]),
        ("a2c", "batched", ["--joint-moves"]),
    ],
)
def test_other_algorithms_and_vec_envs(tmp_path, algo, vec_env, flags):
    metrics = run(
        tmp_path,
        "--algo",
        algo,
        "--vec-env",
        vec_env,
        "--total-timesteps",
        "256",
        "--n-envs",
        "4",
        "--move-radius",
        "2",
        *flags,
    )
    assert metrics["algo"] == algo and metrics["num_images"] == 64
    # The matched filter follows the factorised (di, dj, k, b) action: PPO/A2C only, not joint moves.
    policy = load_sb3_model(metrics["model"]).policy
    matched = (policy.q_net if algo == "dqn" else policy).features_extractor.matched_dim > 0
    assert matched == (algo == "a2c" and "--joint-moves" not in flags)


def test_bad_hyperparameters_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="key=value"):
        run(tmp_path, "--hyperparams", "learning_rate")
    with pytest.raises(ValueError, match="not TOML"):
        run(tmp_path, "--hyperparams", "learning_rate=fast")
    with pytest.raises(ValueError, match="cannot read hyperparameter file"):
        run(tmp_path, "--config", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="needs --vec-env batched"):
        run(tmp_path, "--joint-moves", "--vec-env", "dummy")
