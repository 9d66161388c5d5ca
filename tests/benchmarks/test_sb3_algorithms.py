"""The SB3 algorithm comparison: one train.sb3 run per algorithm and dataset, each beside its untrained twin,
reference rows, the table; finished runs are read back, not trained again; bad input is one error line before
any run, Ctrl-C keeps the rows finished."""

import json
from pathlib import Path

import pytest

from benchmarks import sb3_algorithms

UNTRAINED = {"sse": 3.0, "psnr": 10.0}  # the fake untrained twin's figures (and optimal return 0.5 on shapes)


pytestmark = pytest.mark.usefixtures("restore_torch_settings")


@pytest.fixture
def fake_scoring(monkeypatch):
    """``train.evaluate.main`` (the untrained twin's scoring) replaced by a recorder of its flags."""
    calls = []

    def fake_evaluate(argv):
        calls.append(argv)
        shapes = argv[argv.index("--eval-split") + 1] == "test"
        return {**UNTRAINED, **({"optimal_return_fraction": 0.5} if shapes else {}), "untrained": "--untrained" in argv}

    monkeypatch.setattr(sb3_algorithms.evaluate, "main", fake_evaluate)
    return calls


@pytest.fixture
def fake_runs(monkeypatch, fake_scoring):
    """``train.sb3.main`` replaced by a recorder of its flags that saves an empty ``model.zip``; no dataset files
    needed."""
    calls = []

    def fake_main(argv):
        calls.append(argv)
        algo, dataset = argv[argv.index("--algo") + 1], argv[argv.index("--dataset") + 1]
        model = Path(argv[argv.index("--checkpoint-dir") + 1]) / argv[argv.index("--run-name") + 1] / "model.zip"
        model.parent.mkdir(parents=True)
        model.write_bytes(b"")
        return {"algo": algo, "dataset": dataset, "sse": 1.5, "total_timesteps": 10, "model": str(model)}

    monkeypatch.setattr(sb3_algorithms.sb3, "main", fake_main)
    monkeypatch.setattr(sb3_algorithms, "load_images", lambda *args: None)
    return calls


def no_training(argv):
    raise AssertionError(f"trained again: train.sb3 {' '.join(argv)}")


def folders(tmp_path) -> list[str]:
    return ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")]


def test_runs_every_algorithm_and_dataset_and_lists_the_references(tmp_path, fake_runs, capsys):
    greedy = {"encoder": "greedy", "dataset": "shapes", "optimal_return_fraction": 0.99}
    (tmp_path / "greedy.json").write_text(json.dumps(greedy))
    rows = sb3_algorithms.main(
        [
            *["--algos", "ppo", "trpo", "--datasets", "shapes", "mnist", "--minutes", "1", *folders(tmp_path)],
            *["--reference", f"greedy-search={tmp_path / 'greedy.json'}", "--json", str(tmp_path / "rows.json")],
        ]
    )
    assert [(row["encoder"], row["dataset"]) for row in rows] == [
        ("greedy-search", "shapes"),
        ("SB3 ppo", "shapes"),
        ("SB3 trpo", "shapes"),
        ("SB3 ppo", "mnist"),
        ("SB3 trpo", "mnist"),
    ]
    assert all(argv[argv.index("--minutes") + 1] == "1.0" for argv in fake_runs)
    assert [argv[argv.index("--run-name") + 1] for argv in fake_runs][:2] == [
        "sb3_algorithms_ppo_shapes",
        "sb3_algorithms_trpo_shapes",
    ]
    assert "test[8000:]" in fake_runs[-1] and str(tmp_path / "ck") in fake_runs[-1]
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows
    out = capsys.readouterr().out
    assert "| sse | untrained optimal return | untrained SSE | learning gain | psnr |" in out
    assert "| SB3 trpo | mnist |  | 1.5 |  | 3 | 2 |" in out and "| SB3 ppo | shapes |  | 1.5 | 0.5 | 3 | 2 |" in out
    assert rows[1]["untrained_sse"] == 3.0 and rows[1]["untrained_optimal_return_fraction"] == 0.5
    assert rows[1]["learning_gain"] == 2.0 and "untrained_optimal_return_fraction" not in rows[-1]


def test_the_untrained_twin_is_scored_by_the_agents_scoring_command_with_untrained(tmp_path, fake_runs, fake_scoring):
    flags = ["--algos", "ppo", "--datasets", "mnist", "--seed", "4", "--data-root", "/mnist", *folders(tmp_path)]
    sb3_algorithms.main(flags)
    model = str(tmp_path / "ck" / "sb3_algorithms_ppo_mnist" / "model.zip")
    assert fake_scoring == [
        [
            *["--checkpoint", model, "--encoder", "policy", "--eval-split", "test[8000:]"],
            *["--threads", "1", "--seed", "4", "--data-root", "/mnist", "--untrained"],
        ]
    ]


def test_a_finished_run_is_read_back_not_trained_again(tmp_path, fake_runs, fake_scoring, monkeypatch):
    flags = ["--algos", "ppo", "a2c", "--datasets", "shapes", "--minutes", "2", *folders(tmp_path)]
    first = sb3_algorithms.main([*flags, "--json", str(tmp_path / "first.json")])
    written = json.loads((tmp_path / "ck" / "sb3_algorithms_ppo_shapes" / "metrics.json").read_text())
    assert written["sse"] == 1.5 and written["minutes"] == 2.0 and written["seed"] == 1

    monkeypatch.setattr(sb3_algorithms.sb3, "main", no_training)
    again = sb3_algorithms.main([*flags, "--json", str(tmp_path / "again.json")])
    assert again == first and len(fake_scoring) == 4  # each twin scored again
    assert json.loads((tmp_path / "again.json").read_text())["rows"] == first


@pytest.mark.parametrize("changed", [["--minutes", "3"], ["--seed", "2"]], ids=["minutes", "seed"])
def test_a_run_made_with_other_settings_is_trained_anew(tmp_path, fake_runs, changed):
    flags = ["--algos", "ppo", "--datasets", "shapes", "--minutes", "2", *folders(tmp_path)]
    sb3_algorithms.main(flags)
    (row,) = sb3_algorithms.main([*flags, *changed])
    assert len(fake_runs) == 2 and fake_runs[1][fake_runs[1].index("--run-name") + 1] == "sb3_algorithms_ppo_shapes_2"
    assert row["model"].endswith("sb3_algorithms_ppo_shapes_2/model.zip")


@pytest.mark.parametrize("wall, reused", [(120.5, True), (60.2, False)], ids=["same-minutes", "other-minutes"])
def test_an_earlier_versions_run_is_read_back_from_its_row_in_json(tmp_path, fake_scoring, monkeypatch, wall, reused):
    """Before metrics.json, a run's figures were only in the --json rows (matched by the agent's path)."""
    model = tmp_path / "ck" / "sb3_algorithms_ppo_shapes" / "model.zip"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    old = {"encoder": "SB3 ppo", "algo": "ppo", "dataset": "shapes", "sse": 1.5, "wall_seconds": wall}
    reference = {"encoder": "greedy", "dataset": "shapes", "sse": 1.0}
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [reference, {**old, "model": str(model)}]}))
    trained = []
    monkeypatch.setattr(sb3_algorithms.sb3, "main", lambda argv: trained.append(argv) or {**old, "sse": 2.0})
    flags = ["--algos", "ppo", "--datasets", "shapes", "--minutes", "2", "--json", str(tmp_path / "rows.json")]
    (row,) = sb3_algorithms.main([*flags, *folders(tmp_path)])
    assert (row["sse"] == 1.5 and not trained) if reused else (row["sse"] == 2.0 and len(trained) == 1)
    assert row["learning_gain"] == 3.0 / row["sse"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reference", "greedy.json"], "argument --reference: takes NAME=METRICS.json"),
        (["--reference", "greedy=/nonexistent/greedy.json"], "argument --reference: cannot read"),
        (["--minutes", "0"], "argument --minutes: must be greater than 0"),
        (["--threads", "0"], "argument --threads: must be at least 1"),
        (["--budget-seconds", "60"], "unrecognized arguments: --budget-seconds"),
    ],
    ids=["reference-form", "reference-file", "minutes", "threads", "old-flag"],
)
def test_bad_input_is_one_error_line_with_status_2_before_any_run(tmp_path, fake_runs, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        sb3_algorithms.main([*folders(tmp_path), *flags])
    assert stopped.value.code == 2 and not fake_runs
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and len(error.splitlines()) == 1 and message in error, error


@pytest.mark.parametrize("stop", [SystemExit(130), KeyboardInterrupt()], ids=["in-a-run", "between-runs"])
def test_ctrl_c_writes_the_rows_finished_and_exits_with_status_130(tmp_path, monkeypatch, fake_scoring, stop):
    """``train.sb3`` exits 130 after Ctrl-C in training (it saves its agent); elsewhere it is a KeyboardInterrupt."""
    calls = []

    def fake_main(argv):
        calls.append(argv)
        if len(calls) == 2:
            raise stop
        return {"algo": "ppo", "dataset": "shapes", "sse": 1.5}

    monkeypatch.setattr(sb3_algorithms.sb3, "main", fake_main)
    with pytest.raises(SystemExit) as stopped:
        sb3_algorithms.main(
            ["--algos", "ppo", "a2c", "dqn", "--datasets", "shapes", "--json", str(tmp_path / "rows.json")]
            + folders(tmp_path)
        )
    assert stopped.value.code == 130 and len(calls) == 2
    assert [row["encoder"] for row in json.loads((tmp_path / "rows.json").read_text())["rows"]] == ["SB3 ppo"]


def test_a_real_tiny_run_beside_its_untrained_twin_and_read_back_when_run_again(tmp_path, monkeypatch):
    """train.sb3 (made tiny by flags appended to the benchmark's) and train.evaluate, for real."""
    real_main, tiny = sb3_algorithms.sb3.main, ["--image-size", "10", "--patch-size", "3", "--max-shapes", "2"]
    tiny += ["--steps", "2", "--move-radius", "1", "--minutes", "0", "--total-timesteps", "64", "--n-envs", "4"]
    tiny += ["--hyperparams", "n_steps=8", "batch_size=32", "learning_rate=1e-3", 'policy="MultiInputPolicy"']
    monkeypatch.setattr(sb3_algorithms.sb3, "main", lambda argv: real_main([*argv, *tiny]))
    flags = ["--algos", "ppo", "--datasets", "shapes", *folders(tmp_path)]
    (row,) = sb3_algorithms.main(flags)
    assert row["untrained_sse"] != row["sse"] and row["learning_gain"] == row["untrained_sse"] / row["sse"]
    assert "untrained_optimal_return_fraction" in row
    model = Path(row["model"])
    trained = sb3_algorithms.evaluate.main(sb3_algorithms.scoring_flags(sb3_algorithms.Args(), "shapes", model))
    assert trained["sse"] == pytest.approx(row["sse"], rel=1e-5)  # the scoring command without --untrained

    monkeypatch.setattr(sb3_algorithms.sb3, "main", no_training)
    assert sb3_algorithms.main(flags) == [row]
