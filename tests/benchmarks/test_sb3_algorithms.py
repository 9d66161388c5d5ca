"""The SB3 algorithm comparison: one train.sb3 run per algorithm and dataset, reference rows, the table;
bad input is one error line before any run, Ctrl-C keeps the rows finished."""

import json

import pytest

from benchmarks import sb3_algorithms


@pytest.fixture
def fake_runs(monkeypatch):
    """``train.sb3.main`` replaced by a recorder of its flags; no dataset files needed."""
    calls = []

    def fake_main(argv):
        calls.append(argv)
        algo, dataset = argv[argv.index("--algo") + 1], argv[argv.index("--dataset") + 1]
        return {"algo": algo, "dataset": dataset, "sse": 1.5, "total_timesteps": 10}

    monkeypatch.setattr(sb3_algorithms.sb3, "main", fake_main)
    monkeypatch.setattr(sb3_algorithms, "load_images", lambda *args: None)
    return calls


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
    assert "| SB3 trpo | mnist |  | 1.5 |" in capsys.readouterr().out


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
def test_ctrl_c_writes_the_rows_finished_and_exits_with_status_130(tmp_path, monkeypatch, stop):
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
