"""``python -m train.sb3``: trains for its budget, logs animations to TensorBoard, saves, scores, resumes;
bad input is one error line, a bug keeps its traceback, Ctrl-C saves."""

import json
import sys

import pytest
import sb3_contrib  # noqa: F401  (in the dev extra: a missing package fails rather than skips)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.sb3 import PainterMultiInputPolicy
from agents.sb3.algorithms import load_sb3_model, saved_algorithm
from agents.sb3.callbacks import FinalSSECallback
from agents.sb3.encoder import sb3_env_config
from painter_env.config import PainterConfig, build_painter
from tests import tiny
from train import sb3

TINY_FLAGS = ["--image-size", "10", "--patch-size", "3", "--max-shapes", "2", "--steps", "2", "--eval-images", "64"]
TINY_FLAGS += ["--split", "test[:1000]", "--eval-split", "test[1000:]", "--no-progress"]


pytestmark = pytest.mark.usefixtures("restore_torch_settings")


def run(tmp_path, name, *flags):
    """``train.sb3`` on tiny shapes as run ``name`` (logs, agent and metrics under ``tmp_path``)."""
    metrics = sb3.main([*TINY_FLAGS, *tiny.run_flags(tmp_path, name), *flags])
    assert json.loads((tmp_path / f"{name}.json").read_text())["sse"] == metrics["sse"]
    return metrics


def test_ppo_trains_to_its_cap_logs_a_painting_animation_saves_scores_and_resumes(tmp_path):
    ppo = ["--hyperparams", "n_steps=8", "batch_size=64", "n_epochs=2"]
    flags = ["--env", "painter", "--algo", "ppo", "--minutes", "0", "--n-envs", "16", "--gif-every", "256", *ppo]
    metrics = run(tmp_path, "first", *flags, "--total-timesteps", "512")
    for key in (*tiny.METRICS_KEYS, "optimal_return_fraction"):
        assert key in metrics
    assert metrics["total_timesteps"] == 512  # the cap: four rollouts of 16 envs x 8 steps
    assert metrics["num_images"] == 64 and metrics["sse"] > 0 and metrics["optimal_return_fraction"] <= 1.0
    assert metrics["model"] == str(tmp_path / "ck" / "first" / "model.zip")
    events = EventAccumulator(str(tmp_path / "runs" / "first"), size_guidance={"images": 0}).Reload()
    gifs = events.Images("rollouts/painting")
    assert len(gifs) >= 2 and gifs[0].encoded_image_string[:6] == b"GIF89a"
    assert "rollout/final_sse" in events.Tags()["scalars"] and "eval/sse" in events.Tags()["scalars"]

    # The saved agent, with its recorded painter settings, scores the same again (deterministic actions).
    model = load_sb3_model(metrics["model"])
    assert isinstance(model.policy, PainterMultiInputPolicy)  # ppo.toml's policy
    config = sb3_env_config(metrics["model"])
    assert config["image_size"] == 10 and config["split"] == "test[:1000]" and config["max_steps"] == 2
    eval_painter = build_painter(PainterConfig(**{**config, "split": "test[1000:]"}))
    again = sb3.evaluate(model, eval_painter, 64)
    assert again["sse"] == pytest.approx(metrics["sse"], rel=1e-5)

    # --resume continues the saved agent, on its own painter, in its run (its model.zip is replaced).
    resume = ["--resume", metrics["model"], "--minutes", "0", "--total-timesteps", "128", "--n-envs", "16"]
    where = ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--eval-images", "64"]
    resumed = sb3.main([*resume, *where, "--no-progress"])  # no painter flags: the agent's own are kept
    assert resumed["total_timesteps"] == 128 and resumed["model"] == metrics["model"] and resumed["run_name"] == "first"
    assert sb3_env_config(metrics["model"])["image_size"] == 10
    assert load_sb3_model(metrics["model"]).num_timesteps == 512 + 128


def test_a_time_bounded_run_stops_by_time_and_its_schedules_follow_the_time(tmp_path):
    # No --total-timesteps: SB3 is given an unbounded total, the budget stops it. DQN's exploration
    # rate decays over exploration_fraction of the run's time (of an unbounded total it would stay at 1).
    dqn = ["--hyperparams", "learning_starts=64", "buffer_size=500", "exploration_fraction=0.2", "train_freq=16"]
    metrics = run(tmp_path, "timed", "--algo", "dqn", "--minutes", "0.02", "--n-envs", "4", "--move-radius", "1", *dqn)
    assert 1.2 <= metrics["wall_seconds"] < 1.2 + 3.0 and metrics["total_timesteps"] > 0
    assert load_sb3_model(metrics["model"]).exploration_rate == pytest.approx(0.05)  # exploration_final_eps


SMALL_NET = "cnn_features = 16, channels = 4, matched_filter = true"  # each update a few times as fast
SMALL_PPO = ["--hyperparams", "n_steps=8", "batch_size=32"]  # one minibatch per rollout of 4 envs


@pytest.mark.parametrize(
    "algo, flags",
    [
        ("a2c", ["--vec-env", "dummy"]),
        ("a2c", ["--joint-moves", "--hyperparams", 'policy="MultiInputPolicy"']),
        ("dqn", ["--hyperparams", "learning_starts=64", "buffer_size=500"]),
        (
            "qrdqn",
            [
                "--hyperparams",
                "learning_starts=64",
                "buffer_size=500",
                f"policy_kwargs={{{SMALL_NET}, n_quantiles = 10}}",
            ],
        ),
        ("recurrent-ppo", ["--hyperparams", "n_steps=8", "batch_size=32", f"policy_kwargs={{{SMALL_NET}}}"]),
        ("maskable-ppo", ["--hyperparams", "n_steps=8", "batch_size=32"]),
        ("trpo", ["--hyperparams", "n_steps=8", "batch_size=32", f"policy_kwargs={{{SMALL_NET}}}"]),
    ],
    ids=["a2c-dummy", "a2c-joint-moves", "dqn", "qrdqn", "recurrent-ppo", "maskable-ppo", "trpo"],
)
def test_every_algorithm_trains_saves_and_scores(tmp_path, algo, flags):
    small = ["--total-timesteps", "256", "--n-envs", "4", "--move-radius", "1"]
    metrics = run(tmp_path, algo, "--algo", algo, *small, *flags)
    assert metrics["algo"] == algo and metrics["num_images"] == 64 and metrics["total_timesteps"] >= 256
    assert saved_algorithm(metrics["model"]) == algo


def test_env_painter_is_accepted():
    assert sb3.parse_args(sb3.Args, "", ["--env", "painter"]).env == "painter"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algo", "sac"], "argument --algo: invalid choice"),
        (["--env", "atari"], "argument --env: invalid choice"),
        (["--n-envs", "many"], "invalid int value"),
        (["--n-envs", "0"], "argument --n-envs: must be at least 1"),
        (["--total-timesteps", "0"], "argument --total-timesteps: must be at least 1"),
        (["--minutes", "-1"], "argument --minutes: must be at least 0"),
        (["--minutes", "0"], "give --total-timesteps N"),
        (["--gif-every", "0"], "argument --gif-every: must be at least 1"),
        (["--max-seconds", "60"], "unrecognized arguments: --max-seconds"),
        (["--dataset", "mnist", "--data-root", "/nonexistent"], "/nonexistent"),
        (["--hyperparams", "learning_rate"], "key=value"),
        (["--hyperparams", "learning_rate=fast"], "not TOML"),
        (["--hyperparams", "learning_rat=1e-3"], "ppo has no hyperparameter learning_rat"),
        (["--hyperparams", "n_timesteps=1000"], "--total-timesteps N caps it"),
        (["--hyperparams", "batch_size=1"], "argument --hyperparams: ppo rejects its hyperparameters"),
        (["--config", "/nonexistent/ppo.toml"], "argument --config: cannot read hyperparameter file"),
        (["--resume", "/nonexistent/model.zip"], "argument --resume: /nonexistent/model.zip is not an agent"),
        (["--resume", "model.zip", "--hyperparams", "n_steps=8"], "a resumed agent keeps its hyperparameters"),
        (["--joint-moves", "--vec-env", "dummy"], "needs --vec-env batched"),
        (["--joint-moves"], "PainterMultiInputPolicy needs the painter's MultiDiscrete"),
    ],
    ids=lambda value: "-".join(value).lstrip("-") if isinstance(value, list) else None,
)
def test_bad_input_is_one_error_line_with_status_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, *tiny.run_flags(tmp_path, "bad"), *flags])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and len(error.splitlines()) == 1 and message in error, error
    assert not (tmp_path / "ck").exists()  # nothing trained, nothing saved


def test_a_missing_sb3_contrib_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import sb3_contrib now fails
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, *tiny.run_flags(tmp_path, "contrib"), "--algo", "trpo"])
    assert stopped.value.code == 2
    assert 'pip install -e ".[contrib]"' in capsys.readouterr().err


def test_a_bug_during_training_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(callback):
        raise RuntimeError("a bug in the training loop")

    monkeypatch.setattr(FinalSSECallback, "_on_step", bug)
    with pytest.raises(RuntimeError, match="a bug in the training loop"):
        sb3.main([*TINY_FLAGS, *tiny.run_flags(tmp_path, "bug"), "--n-envs", "4", *SMALL_PPO])


def test_ctrl_c_saves_the_agent_and_exits_with_status_130(tmp_path, monkeypatch, capsys):
    def interrupt(callback):
        raise KeyboardInterrupt

    monkeypatch.setattr(FinalSSECallback, "_on_step", interrupt)
    with pytest.raises(SystemExit) as stopped:
        sb3.main([*TINY_FLAGS, *tiny.run_flags(tmp_path, "stopped"), "--n-envs", "4", *SMALL_PPO])
    assert stopped.value.code == 130
    assert saved_algorithm(tmp_path / "ck" / "stopped" / "model.zip") == "ppo"
    assert "--resume" in capsys.readouterr().err
