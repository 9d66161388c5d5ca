"""benchmarks.image_cost: training and encoding speed per image size, relative to the smallest."""

import json

import pytest

from benchmarks import image_cost


def test_one_run_measures_training_and_both_encoders(tmp_path, one_torch_thread):
    args = image_cost.Args(steps=2, iterations=1, eval_images=4)
    data = ["--dataset", "shapes", "--split", "train[:64]", "--eval-split", "test[:8]", "--image-size", "12"]
    measured = image_cost.measure(args, data, ["--patch-size", "4"], tmp_path, "tiny")
    assert measured["patch_size"] == 4
    assert min(measured[key] for key in measured if key.endswith("per_second")) > 0


def test_costs_are_relative_to_the_first_configuration_with_the_same_patch_choice():
    def run(train, policy, greedy, size=8):
        return {
            "patch_size": size,
            "train_images_per_second": train,
            "policy_images_per_second": policy,
            "greedy_images_per_second": greedy,
        }

    results = {
        ("small", "chosen R"): [run(10, 100, 200), run(30, 100, 200), run(20, 300, 100)],
        ("small", "R = 8"): [run(8, 80, 80)],
        ("large", "chosen R"): [run(5, 50, 25, size=16)],
        ("large", "R = 8"): [run(2, 40, 10)],
    }
    rows = image_cost.summarise(results, {"small": 100, "large": 400})
    small, _, large, large_fixed = rows
    assert small["train_images_per_second"] == 20 and small["train_cost_ratio"] == 1.0  # medians
    assert large["value_ratio"] == 4.0 and large["train_cost_ratio"] == pytest.approx(4.0)
    assert large["greedy_cost_ratio"] == pytest.approx(8.0) and large_fixed["train_cost_ratio"] == pytest.approx(4.0)
    assert "| large | R = 8 | 8 | 4.00 |" in image_cost.markdown(rows)


def test_ctrl_c_in_a_training_run_writes_the_runs_measured_and_exits_130(tmp_path, monkeypatch, mnist_root, cifar_root):
    """The trainer runs in this process and turns Ctrl-C into exit status 130 after saving: the
    benchmark stops there too, with the rows of the runs it finished."""
    measured = {"patch_size": 4, "train_images_per_second": 2.0, "policy_images_per_second": 3.0}
    measured["greedy_images_per_second"] = 4.0
    calls = []

    def measure(*_):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(130)  # what train.reinforce does on Ctrl-C
        return measured

    monkeypatch.setattr(image_cost, "measure", measure)
    path = tmp_path / "cost.json"
    with pytest.raises(SystemExit) as exit_info:
        image_cost.main(["--json", str(path), "--mnist-root", str(mnist_root), "--cifar-folder", str(cifar_root)])
    written = json.loads(path.read_text())
    assert exit_info.value.code == 130 and written["interrupted"] is True
    assert [row["patch"] for row in written["rows"]] == ["chosen R"]
