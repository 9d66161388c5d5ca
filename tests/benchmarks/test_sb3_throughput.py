"""The SB3 throughput benchmark runs end to end on a tiny painter and writes its JSON; bad input is one
error line, Ctrl-C keeps the rows finished."""

import json

import numpy as np
import pytest
import torch

from benchmarks import sb3_throughput


def _throughput(*flags: str) -> dict:
    """The benchmark on 4 envs of 12 x 12 images, one rollout, one repeat; torch's settings restored."""
    threads, validate = torch.get_num_threads(), torch.distributions.Distribution._validate_args
    try:
        return sb3_throughput.main(["--n-envs", "4", "--rollouts", "1", "--repeats", "1", "--image-size", "12", *flags])
    finally:
        torch.set_num_threads(threads)
        torch.distributions.Distribution.set_default_validate_args(validate)


def test_sb3_throughput_writes_rows_naming_the_policy(tmp_path, capsys):
    policies = ["--policies", "config", "mlp", "--json", str(tmp_path / "sb3.json")]
    results = _throughput("--backends", "batched", "dummy", "--hyperparams", "n_steps=2", "batch_size=8", *policies)
    written = json.loads((tmp_path / "sb3.json").read_text())
    assert written == json.loads(json.dumps(results))
    batched, dummy, mlp_batched, mlp_dummy = written["throughput"]
    assert [row["backend"] for row in written["throughput"]] == ["batched", "dummy"] * 2
    assert batched["policy"] == dummy["policy"] == "PainterMultiInputPolicy(PainterExtractor + matched filter)"
    assert mlp_batched["policy"] == mlp_dummy["policy"] == "MultiInputPolicy(CombinedExtractor)"
    assert batched["collect_speedup"] == batched["collect_steps_per_second"] / dummy["collect_steps_per_second"]
    assert (
        mlp_batched["collect_speedup"]
        == mlp_batched["collect_steps_per_second"] / mlp_dummy["collect_steps_per_second"]
    )
    assert mlp_batched["collect_speedup_paired"] == pytest.approx(mlp_batched["collect_speedup"])  # one repeat
    assert mlp_batched["compared_with"] == "dummy, 1 thread"
    assert "| 4 | batched | 1 | MultiInputPolicy(CombinedExtractor)" in capsys.readouterr().out


def test_each_backend_is_compared_at_its_fastest_thread_count(tmp_path):
    threads = ["--threads", "1", "2"]
    results = _throughput("--backends", "batched", "dummy", "--hyperparams", "n_steps=2", "--policies", "mlp", *threads)
    rows = {(row["backend"], row["threads"]): row for row in results["throughput"]}
    assert sorted(rows) == [("batched", 1), ("batched", 2), ("dummy", 1), ("dummy", 2)]
    rate = {setting: row["collect_steps_per_second"] for setting, row in rows.items()}
    fastest = max((("batched", t) for t in (1, 2)), key=rate.get)
    other = max((("dummy", t) for t in (1, 2)), key=rate.get)
    assert [setting for setting, row in rows.items() if "collect_speedup" in row] == [fastest]
    assert rows[fastest]["collect_speedup"] == rate[fastest] / rate[other]
    assert rows[fastest]["compared_with"] == f"dummy, {other[1]} thread{'s' if other[1] > 1 else ''}"


def test_null_backend_gives_the_ceiling_of_the_speed_up():
    results = _throughput("--backends", "batched", "dummy", "null", "--hyperparams", "n_steps=8", "--policies", "mlp")
    batched, dummy, null = results["throughput"]
    assert null["backend"] == "null" and batched["compared_with"] == "dummy, 1 thread"  # null is no competitor
    assert batched["collect_speedup_ceiling"] == null["collect_steps_per_second"] / dummy["collect_steps_per_second"]
    assert null["collect_ms_per_step"] == pytest.approx(1000 * 4 / null["collect_steps_per_second"])
    assert batched["env_ms_per_step"] == pytest.approx(batched["collect_ms_per_step"] - null["collect_ms_per_step"])
    assert batched["other_env_ms_per_step"] == pytest.approx(dummy["collect_ms_per_step"] - null["collect_ms_per_step"])


def test_null_env_replays_its_first_observation_and_ends_episodes_at_the_horizon():
    venv = sb3_throughput.NullVecEnv(3, horizon_is_terminal=True, image_size=12, max_steps=2)
    first = venv.reset()
    venv.step_async(np.zeros((3, 4), dtype=np.int64))
    obs, reward, done, infos = venv.step_wait()
    assert obs is first and not done.any() and not reward.any()
    venv.step_async(np.zeros((3, 4), dtype=np.int64))
    _, _, done, infos = venv.step_wait()
    assert done.all() and all("terminal_observation" in info for info in infos)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n-envs", "0"], "argument --n-envs: must be at least 1"),
        (["--threads", "1", "0"], "argument --threads: must be at least 1"),
        (["--repeats", "0"], "argument --repeats: must be at least 1"),
        (["--hyperparams", "n_step=8"], "ppo has no hyperparameter n_step"),
        (["--hyperparams", "n_steps"], "argument --hyperparams: takes key=value"),
    ],
    ids=["n-envs", "threads", "repeats", "unknown-hyperparameter", "hyperparams-item"],
)
def test_bad_input_is_one_error_line_with_status_2(capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        _throughput(*flags)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and len(error.splitlines()) == 1 and message in error, error


def test_ctrl_c_writes_the_rows_finished_and_exits_with_status_130(tmp_path, monkeypatch):
    measure = sb3_throughput.measure

    def interrupted_at_8_envs(model, rollouts):
        if model.n_envs == 8:
            raise KeyboardInterrupt
        return measure(model, rollouts)

    monkeypatch.setattr(sb3_throughput, "measure", interrupted_at_8_envs)
    flags = ["--backends", "batched", "--policies", "mlp", "--hyperparams", "n_steps=2"]
    flags += ["--json", str(tmp_path / "t.json")]
    with pytest.raises(SystemExit) as stopped:
        _throughput(*flags, "--n-envs", "4", "8")
    assert stopped.value.code == 130
    rows = json.loads((tmp_path / "t.json").read_text())["throughput"]
    assert [(row["n_envs"], row["backend"]) for row in rows] == [(4, "batched")]
