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
from agents.sb3 import PainterMultiInputPolicy, PainterVecEnv, painter_policy_kwargs
from agents.sb3.algorithms import algorithm_class, load_sb3_model
from agents.sb3.encoder import policy_programs, sb3_env_config, untrained_twin
from decoders.dictionary import PatchDictionary
from decoders.kernel import decode
from painter_env.config import PainterConfig, build_painter
from train import sb3


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


# A tiny SB3 agent whose untrained deterministic action depends on its parameters (SB3's MultiInputPolicy with
# the matched filter: its patches are the training dictionary's), trained enough to act otherwise.
SB3_TINY = ["--image-size", "10", "--patch-size", "3", "--max-shapes", "2", "--steps", "2", "--move-radius", "1"]
SB3_TINY += ["--split", "test[:1000]", "--eval-split", "test[1000:]", "--eval-images", "64", "--no-progress"]
SB3_TINY += ["--algo", "ppo", "--minutes", "0", "--total-timesteps", "256", "--n-envs", "4", "--seed", "1"]
SB3_TINY += ["--hyperparams", "n_steps=8", "batch_size=32", "learning_rate=1e-3", 'policy="MultiInputPolicy"']
SB3_TINY += ["policy_kwargs={ cnn_features = 16, channels = 4, matched_filter = true }"]


@pytest.fixture(scope="module")
def sb3_agent(tmp_path_factory):
    """A trained tiny PPO agent (``train.sb3``, seed 1): its metrics; ``metrics["model"]`` is its ``model.zip``."""
    folder = tmp_path_factory.mktemp("sb3")
    threads, validate = torch.get_num_threads(), torch.distributions.Distribution._validate_args
    try:
        return sb3.main(
            [*SB3_TINY, "--logdir", str(folder / "runs"), "--checkpoint-dir", str(folder / "ck"), "--run-name", "tiny"]
        )
    finally:  # train.sb3 sets them for the process
        torch.set_num_threads(threads)
        torch.distributions.Distribution.set_default_validate_args(validate)


@pytest.mark.parametrize(
    "algo, policy, options",
    [
        ("ppo", PainterMultiInputPolicy, {}),
        ("dqn", "MultiInputPolicy", {"buffer_size": 100}),
        ("recurrent-ppo", "MultiInputLstmPolicy", {"n_steps": 8, "batch_size": 16}),
        ("maskable-ppo", "MultiInputPolicy", {"n_steps": 8, "batch_size": 16}),
    ],
)
def test_the_untrained_twin_of_an_sb3_agent_is_the_agent_sb3_builds_with_the_seed(tmp_path, algo, policy, options):
    """Built with the agent's own seed, the twin's policy is the one SB3 built (the start of training); with
    another seed its parameters differ; its buffers (the matched filter's patches) are the agent's."""
    venv = PainterVecEnv(2, flatten_actions=algo == "dqn", image_size=10, patch_size=3, max_steps=2, move_radius=1)
    kwargs = painter_policy_kwargs(cnn_features=16, channels=4, painter=venv.painter)
    if algo == "recurrent-ppo":
        kwargs["lstm_hidden_size"] = 16
    algorithm_class(algo)(policy, venv, policy_kwargs=kwargs, seed=5, **options).save(tmp_path / "agent.zip")
    saved = load_sb3_model(tmp_path / "agent.zip").policy.state_dict()
    rng = torch.get_rng_state()
    same, other = (untrained_twin(load_sb3_model(tmp_path / "agent.zip"), seed) for seed in (5, 6))
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left alone
    assert type(same.policy) is type(other.policy) is type(load_sb3_model(tmp_path / "agent.zip").policy)
    for key, value in saved.items():
        assert torch.equal(same.policy.state_dict()[key], value), key
    changed = [key for key, value in saved.items() if not torch.equal(other.policy.state_dict()[key], value)]
    assert changed and not any(key.endswith(("patch_values", "patch_support")) for key in changed)
    if algo == "dqn":  # DQN's aliases point into the new policy
        assert other.q_net is other.policy.q_net and other.q_net_target is other.policy.q_net_target


def test_the_untrained_twin_of_an_sb3_agent_scores_on_its_dictionary_seeded_by_seed(sb3_agent, capsys):
    model = sb3_agent["model"]
    flags = ["--checkpoint", model, "--encoder", "policy", "--eval-split", "test[1000:]", "--eval-images", "64"]
    trained = evaluate.main(flags)
    assert not trained["untrained"] and trained["sse"] == pytest.approx(sb3_agent["sse"], rel=1e-5)
    twin = evaluate.main([*flags, "--untrained", "--seed", "1"])
    assert twin["untrained"] and "policy (untrained)" in capsys.readouterr().out
    assert twin["sse"] != trained["sse"]  # learning changed the agent: its start (seed 1, as trained) paints otherwise
    assert evaluate.main([*flags, "--untrained", "--seed", "1"])["sse"] == twin["sse"]
    assert evaluate.main([*flags, "--untrained", "--seed", "2"])["sse"] != twin["sse"]

    # The twin's SSE, recomputed: a new agent of the configuration painting with the dictionary saved beside it.
    config = sb3_env_config(model)
    painter = build_painter(PainterConfig(**{**config, "split": "test[1000:]"}))
    saved = PatchDictionary.load(config["dictionary"])
    assert all(torch.equal(a, b) for a, b in zip(painter.dictionary.patches(), saved.patches()))
    agent = untrained_twin(load_sb3_model(model), 1)
    extractor, trained_extractor = agent.policy.features_extractor, load_sb3_model(model).policy.features_extractor
    assert torch.equal(extractor.patch_values, trained_extractor.patch_values)  # the policy's own patches too
    images = painter.data.images[:64]
    values, support = painter.dictionary.patches()
    programs = policy_programs(agent, images, painter)
    canvases = decode(programs, values.detach(), support, saved.num_levels, painter.geometry)
    sse = float((images - canvases).square().flatten(1).sum(1).mean())
    assert twin["sse"] == pytest.approx(sse, rel=1e-5)


def test_the_untrained_twin_of_an_sb3_agent_needs_the_policy_encoder(sb3_agent, capsys):
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["--checkpoint", sb3_agent["model"], "--encoder", "greedy", "--untrained"])
    assert stopped.value.code == 2 and "--untrained with a Stable-Baselines3 agent" in capsys.readouterr().err
