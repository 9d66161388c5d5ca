"""``python -m train.evaluate`` and the encoder registry."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import train.evaluate as evaluate
import train.reinforce as reinforce
from agents.encoders import build_encoder, policy_encoder
from agents.policy import PainterPolicy, PolicyConfig
from decoders.kernel import decode
from painter_env.config import PainterConfig, build_painter


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    metrics = reinforce.main(
        [
            "--image-size",
            "12",
            "--patch-size",
            "4",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--samples",
            "2",
            "--iterations",
            "1",
            "--eval-images",
            "10",
            "--hidden-size",
            "16",
            "--run-name",
            "tiny",
            "--logdir",
            str(folder / "runs"),
            "--checkpoint-dir",
            str(folder / "ck"),
        ]
    )
    return folder, folder / "ck" / "tiny" / "checkpoint.pt", metrics


def test_policy_scores_like_the_trainer_and_writes_json_and_gif(trained):
    folder, checkpoint, trainer_metrics = trained
    out = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--encoder",
            "policy",
            "--eval-images",
            "10",
            "--metrics-json",
            str(folder / "policy.json"),
            "--gif",
            str(folder / "rollout.gif"),
        ]
    )
    assert out["sse"] == pytest.approx(trainer_metrics["sse"], rel=1e-5)
    written = json.loads((folder / "policy.json").read_text())
    for key in ("sse", "psnr", "bits_per_image", "images_per_second", "num_images", "optimal_return_fraction"):
        assert key in written
    with Image.open(folder / "rollout.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames >= 4  # blank canvas + 3 steps (+ held last frame)


def test_greedy_with_the_checkpoint_dictionary_beats_nothing(trained):
    _, checkpoint, _ = trained
    out = evaluate.main(["--checkpoint", str(checkpoint), "--encoder", "greedy", "--eval-images", "10"])
    assert out["optimal_return_fraction"] > 0.5
    assert out["steps"] == 3 and out["num_images"] == 10


def test_greedy_needs_no_checkpoint():
    out = evaluate.main(["--encoder", "greedy", "--eval-images", "4", "--steps", "2"])
    assert out["num_images"] == 4 and out["sse"] >= 0


def test_gibbs_refines_the_policy_programs(trained):
    _, checkpoint, _ = trained
    flags = ["--checkpoint", str(checkpoint), "--eval-images", "16"]
    policy = evaluate.main([*flags, "--encoder", "policy"])
    refined = evaluate.main([*flags, "--encoder", "gibbs", "--gibbs-sweeps", "2"])
    assert refined["num_images"] == 16
    assert refined["sse"] < policy["sse"]  # refinement keeps the best program per image, and finds better ones


def test_the_untrained_twin_is_a_new_policy_of_the_same_architecture_on_the_same_dictionary(trained):
    _, checkpoint, _ = trained
    flags = ["--checkpoint", str(checkpoint), "--eval-images", "16", "--encoder", "policy", "--seed", "3"]
    twin = evaluate.main([*flags, "--untrained"])
    payload = torch.load(checkpoint, weights_only=True)
    torch.manual_seed(3)
    fresh = PainterPolicy(PolicyConfig(**payload["policy_config"])).eval()
    painter = build_painter(PainterConfig(**{**payload["env_config"], "split": "test"}))
    painter = build_painter(
        PainterConfig(**{**payload["env_config"], "split": "test", "dictionary": painter.dictionary})
    )
    painter.dictionary.load_state_dict(payload["dictionary"]["state"])
    images = painter.data.images[:16]
    programs = policy_encoder(fresh, painter)(images)
    values, support = painter.dictionary.patches()
    sse = (images - decode(programs, values, support, painter.dictionary.num_levels, painter.geometry)).square()
    assert twin["untrained"] and twin["sse"] == pytest.approx(float(sse.flatten(1).sum(1).mean()), rel=1e-5)
    trained_policy = evaluate.main(flags)
    assert trained_policy["sse"] != twin["sse"]


def test_bad_requests_raise_value_errors(trained, capsys):
    _, checkpoint, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--encoder", "policy"])
    assert exit_info.value.code == 2 and "error: --encoder policy needs --checkpoint" in capsys.readouterr().err
    payload = torch.load(checkpoint, weights_only=True)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("beam", payload, None, "cpu")
    with pytest.raises(ValueError, match="trained for"):
        build_encoder("policy", payload, build_painter(PainterConfig()), "cpu")  # 28x28, the policy knows 12x12


def test_refined_greedy_is_never_worse_than_greedy(trained):
    _, checkpoint, _ = trained
    greedy = evaluate.main(["--checkpoint", str(checkpoint), "--encoder", "greedy", "--eval-images", "10"])
    refined = evaluate.main(["--checkpoint", str(checkpoint), "--encoder", "greedy-gibbs", "--eval-images", "10"])
    assert refined["sse"] <= greedy["sse"] + 1e-6


def test_best_of_n_policy_is_never_worse(trained):
    _, checkpoint, _ = trained
    one = evaluate.main(["--checkpoint", str(checkpoint), "--encoder", "policy", "--eval-images", "10"])
    best = evaluate.main(
        ["--checkpoint", str(checkpoint), "--encoder", "policy", "--eval-images", "10", "--policy-samples", "4"]
    )
    assert best["sse"] <= one["sse"] + 1e-6
