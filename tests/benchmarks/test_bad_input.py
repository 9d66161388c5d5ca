"""Every benchmark fails the same way on a bad flag, and stops the same way on Ctrl-C.

A bad value: exit status 2, one ``error:`` line on stderr naming the flag (or the value) and what
would be valid, no traceback, nothing written. Ctrl-C: exit status 130, the rows finished so far in
``--json`` marked ``"interrupted": true``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

import benchmarks
from benchmarks import env_throughput
from tests.conftest import shared_data

# module -> (flags, what the error line must name); every python -m benchmarks.NAME command has cases
CASES = {
    "defaults": [
        (["--json", "."], "--json"),
        (["--steps", "0"], "--steps"),
        (["--steps"], "--steps"),
        (["--eval-images", "0"], "--eval-images"),
        (["--dataset", "cifar"], "cifar"),
        (["--split", "validation"], "validation"),
    ],
    "image_cost": [
        (["--json", "."], "--json"),
        (["--steps", "0"], "--steps"),
        (["--repeats", "0"], "--repeats"),
        (["--mnist-root", "no-such-folder"], "no-such-folder"),
        (["--mnist-root", str(shared_data() / "mnist"), "--cifar-folder", "no-such-folder"], "no-such-folder"),
    ],
    "env_throughput": [
        (["--json", "."], "--json"),
        (["--repeats", "0"], "--repeats"),
        (["--sizes", "0"], "--sizes"),
        (["--sizes"], "--sizes"),
        (["--image-sizes", "16", "32", "64"], "--image-sizes"),
        (["--single-steps", "-1"], "--single-steps"),
        (["--threads", "0"], "--threads"),
        (["--device", "tpu"], "--device"),
        (["--split", "validation"], "--split"),
    ],
    "estimator_variance": [
        ([], "--checkpoint"),
        (["--checkpoint", "missing.pt"], "--checkpoint"),
        (["--checkpoint", "README.md"], "--checkpoint"),
        (["--checkpoint", "ck.pt", "--samples", "1"], "--samples"),
        (["--checkpoint", "ck.pt", "--replicates", "1"], "--replicates"),
        (["--checkpoint", "ck.pt", "--baseline-batches", "0"], "--baseline-batches"),
        (["--checkpoint", "ck.pt", "--beta", "0"], "--beta"),
        (["--checkpoint", "ck.pt", "--threads", "0"], "--threads"),
        (["--checkpoint", "ck.pt", "--json", "."], "--json"),
    ],
    "encoders": [
        (["--json", "."], "--json"),
        (["--estimators", "adam"], "--estimators"),
        (["--estimators", "iw:loo"], "--estimators"),
        (["--estimators", "reinforce:median"], "--estimators"),
        (["--estimators"], "--estimators"),
        (["--datasets", "cifar"], "--datasets"),
        (["--shapes-minutes", "0"], "--shapes-minutes"),
        (["--mnist-minutes", "-1"], "--mnist-minutes"),
        (["--eval-images", "0"], "--eval-images"),
        (["--datasets", "mnist", "--data-root", "no-such-folder"], "no-such-folder"),
    ],
    "rate_distortion": [
        (["--json", "."], "--json"),
        (["--bits", "0"], "--bits"),
        (["--bits"], "--bits"),
        (["--jobs", "0"], "--jobs"),
        (["--minutes", "-1"], "--minutes"),
        (["--models", "gan"], "--models"),
        (["--eval-images", "0"], "--eval-images"),
        (["--gibbs-sweeps", "-1"], "--gibbs-sweeps"),
        (["--kl-betas", "-0.5"], "--kl-betas"),
        (["--device", "tpu"], "--device"),
        (["--dataset", "imagenet"], "imagenet"),
        (["--dataset", "shapes", "--split", "test", "--eval-split", "validation"], "validation"),
        (["--data-root", "no-such-folder"], "no-such-folder"),
        (["--dataset", "shapes", "--split", "test[:100]", "--eval-split", "test"], "--split"),
        (["--dataset", "shapes", "--split", "test", "--eval-split", "test", "--plot", "."], "--plot"),
    ],
    "ddp_throughput": [
        (["--json", "."], "--json"),
        (["--processes", "1"], "--processes"),
        (["--repeats", "0"], "--repeats"),
        (["--batch-size", "3"], "--batch-size"),
        (["--iterations", "0"], "--iterations"),
        (["--timeout", "0"], "--timeout"),
        (["--image-size", "0"], "--image-size"),
        (["--dataset", "imagenet"], "imagenet"),
    ],
    # another engineer's benchmarks: only a clearly invalid value
    "sb3_algorithms": [(["--minutes", "-1"], "--minutes")],
    "sb3_throughput": [(["--n-envs", "0"], "--n-envs"), (["--repeats", "0"], "--repeats")],
}


def test_every_benchmark_command_has_cases():
    commands = {
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if hasattr(importlib.import_module(f"benchmarks.{info.name}"), "main")
    }
    assert commands == set(CASES)


@pytest.mark.parametrize(
    "name, argv, named",
    [(name, argv, named) for name, cases in CASES.items() for argv, named in cases],
    ids=[f"{name}:{' '.join(argv) or 'no-flags'}" for name, cases in CASES.items() for argv, _ in cases],
)
def test_a_bad_value_is_one_error_line_and_exit_status_2(name, argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths (README.md, data) are missing or not what they should be
    (tmp_path / "README.md").write_text("not a checkpoint\n")
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"benchmarks.{name}").main(argv if "--json" in argv else [*argv, "--json", str(out)])
    assert stopped.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert named in lines[0]
    assert not out.exists()  # nothing was run


def test_ctrl_c_writes_the_finished_rows_marked_interrupted_and_exits_130(tmp_path, monkeypatch, capsys):
    single = {
        "painter_steps_per_second": 1000.0,
        "cartpole_steps_per_second": 20000.0,
        "step_cost_vs_cartpole": 20.0,
        "torch_op_seconds": 1e-6,
        "cartpole_step_in_torch_ops": 5.0,
    }
    rates = iter([100.0, KeyboardInterrupt])  # SyncVectorEnv measured, then Ctrl-C during the native env

    def vector_rate(*_, **__):
        rate = next(rates)
        if rate is KeyboardInterrupt:
            raise KeyboardInterrupt
        return rate

    monkeypatch.setattr(env_throughput, "single_env_rates", lambda *_: single)
    monkeypatch.setattr(env_throughput, "vector_rate", vector_rate)
    out = tmp_path / "env.json"
    with pytest.raises(SystemExit) as stopped:
        env_throughput.main(["--quick", "--json", str(out)])
    assert stopped.value.code == 130
    written = json.loads(out.read_text())
    assert written["interrupted"] is True and written["single"] == single
    assert "vector_16" not in written  # unfinished: its native rate was not measured
    captured = capsys.readouterr()
    assert "| SyncVectorEnv N=16 | 100 env-steps/s |  |" in captured.out
    assert "native batched" not in captured.out
    assert f"interrupted after 4 of 9 rows; the finished rows are in {out}" in captured.err
