"""The SB3 throughput benchmark runs end to end on a tiny painter and writes its JSON."""

import json

import torch

from benchmarks import sb3_throughput


def test_sb3_throughput_writes_rows_naming_the_policy(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        results = sb3_throughput.main(["--n-envs", "4", "--backends", "batched", "dummy", "--rollouts", "1",
                                       "--repeats", "1", "--image-size", "12",
                                       "--hyperparams", "n_steps=2", "--json", str(tmp_path / "sb3.json")])
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "sb3.json").read_text())
    assert written == json.loads(json.dumps(results))
    batched, dummy = written["throughput"]
    assert (batched["backend"], dummy["backend"]) == ("batched", "dummy")
    assert batched["policy"] == "PainterMultiInputPolicy(PainterExtractor + matched filter)"
    assert batched["collect_speedup"] == batched["collect_steps_per_second"] / dummy["collect_steps_per_second"]
    assert "| 4 | batched | PainterMultiInputPolicy" in capsys.readouterr().out
