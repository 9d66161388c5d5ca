"""The SB3 algorithm comparison: one train.sb3 run per algorithm and dataset, reference rows, the table."""

import json

from benchmarks import sb3_algorithms


def test_runs_every_algorithm_and_dataset_and_lists_the_references(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_main(argv):
        calls.append(argv)
        algo, dataset = argv[argv.index("--algo") + 1], argv[argv.index("--dataset") + 1]
        return {"algo": algo, "dataset": dataset, "sse": 1.5, "total_timesteps": 10}

    monkeypatch.setattr(sb3_algorithms.sb3, "main", fake_main)
    greedy = {"encoder": "greedy", "dataset": "shapes", "optimal_return_fraction": 0.99}
    (tmp_path / "greedy.json").write_text(json.dumps(greedy))
    rows = sb3_algorithms.main(
        [
            "--algos",
            "ppo",
            "trpo",
            "--datasets",
            "shapes",
            "mnist",
            "--budget-seconds",
            "60",
            "--reference",
            f"greedy-search={tmp_path / 'greedy.json'}",
            "--json",
            str(tmp_path / "rows.json"),
        ]
    )
    assert [(row["encoder"], row["dataset"]) for row in rows] == [
        ("greedy-search", "shapes"),
        ("SB3 ppo", "shapes"),
        ("SB3 trpo", "shapes"),
        ("SB3 ppo", "mnist"),
        ("SB3 trpo", "mnist"),
    ]
    assert all(argv[argv.index("--max-seconds") + 1] == "60.0" for argv in calls)
    assert "test[8000:]" in calls[-1]
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows
    assert "| SB3 trpo | mnist |  | 1.5 |" in capsys.readouterr().out
