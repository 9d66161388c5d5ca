"""SB3 agents on the painter: the extractor, the matched filter, PPO/A2C/DQN runs, the encoder."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.preprocessing import preprocess_obs

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3 import FlattenMultiDiscrete, PainterExtractor, PainterVecEnv, painter_policy_kwargs, sb3_programs
from agents.sb3.algorithms import load_sb3_model, saved_algorithm
from agents.sb3.encoder import policy_programs
from agents.sb3.extractor import start_from_matched_filter
from agents.sb3.wrappers import HorizonIsTerminal, split_joint_moves
from decoders.greedy import greedy_programs, reachable
from decoders.kernel import decode, move_cursor, placement_rewards
from train.common.metrics import sse_per_image

SMALL = dict(image_size=10, patch_size=3, max_steps=3, max_shapes=2, move_radius=2, split="test")
SMALL_POLICY = painter_policy_kwargs(cnn_features=32, channels=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size, patch, channels", [(8, 4, 1), (12, 3, 1), (28, 7, 1), (9, 3, 3)])
def test_extractor_handles_small_images(size, patch, channels):
    observation_space = gym.make("Painter-v0", image_size=size, patch_size=patch).observation_space
    if channels == 3:  # an RGB painter's observation space, as a folder dataset would give
        image = spaces.Box(0.0, 1.0, (3 * size * size,), np.float32)
        observation_space = spaces.Dict({**observation_space.spaces, "target": image, "canvas": image})
    extractor = PainterExtractor(observation_space, cnn_features=16, channels=4)
    assert extractor.image_shape == (channels, size, size)
    batch = {
        key: torch.as_tensor(np.stack([observation_space[key].sample() for _ in range(5)]))
        for key in observation_space.spaces
    }
    features = extractor(preprocess_obs(batch, observation_space))
    assert features.shape == (5, extractor.features_dim)
    assert torch.isfinite(features).all()


def test_cursor_window_marks_the_patch_under_the_cursor():
    space = gym.make("Painter-v0", image_size=10, patch_size=3).observation_space
    extractor = PainterExtractor(space)
    window = extractor.cursor_window(extractor.one_hot(torch.tensor([[6, 2]])))[0, 0]
    expected = torch.zeros(10, 10)
    expected[6:9, 2:5] = 1
    assert torch.equal(window, expected)


def test_egocentric_view_puts_the_cursor_at_a_fixed_place():
    space = gym.make("Painter-v0", image_size=10, patch_size=3).observation_space
    extractor = PainterExtractor(space, egocentric=True)
    images = torch.arange(100.0).view(1, 1, 10, 10) + 1
    for cursor in ([6, 2], [0, 7]):
        frame = extractor.egocentric(images, extractor.one_hot(torch.tensor([cursor])))[0, 0]
        assert frame.shape == (17, 17)  # H + rows - 1 with rows = 8
        assert frame[7, 7] == images[0, 0, cursor[0], cursor[1]]  # the cursor's pixel, wherever it is
        assert frame[7 - cursor[0], 7 - cursor[1]] == images[0, 0, 0, 0]
        assert frame.count_nonzero() == 100 and frame.sum() == images.sum()
    observation = {key: torch.as_tensor(np.stack([space[key].sample() for _ in range(3)])) for key in space.spaces}
    assert extractor(preprocess_obs(observation, space)).shape == (3, extractor.features_dim)


def matched_argmax(extractor: PainterExtractor, observation: dict, space, painter) -> torch.Tensor:
    """``(B, 4)``: the action whose components each maximise the extractor's matched-filter features."""
    obs = preprocess_obs({key: torch.as_tensor(value) for key, value in observation.items()}, space)
    shape = (-1, *painter.data.images.shape[1:])
    features = extractor.matched(obs["target"].view(shape), obs["canvas"].view(shape), extractor.one_hot(obs["cursor"]))
    sizes = [painter.geometry.num_moves] * 2 + [painter.dictionary.mean.shape[0], painter.dictionary.num_levels]
    return torch.stack([part.argmax(1) for part in features.split(sizes, dim=1)], dim=1)


def test_matched_filter_scores_with_the_patches_of_a_loaded_state_dict():
    venv = PainterVecEnv(16, **SMALL)
    kwargs = painter_policy_kwargs(painter=venv.painter)["features_extractor_kwargs"]
    extractor = PainterExtractor(venv.observation_space, **kwargs)
    other = PainterExtractor(venv.observation_space, **{**kwargs, "patch_values": kwargs["patch_values"].flip(0)})
    venv.seed(0)
    venv.action_space.seed(0)
    venv.reset()
    observation = venv.step(np.stack([venv.action_space.sample() for _ in range(16)]))[0]
    obs = preprocess_obs({key: torch.as_tensor(value) for key, value in observation.items()}, venv.observation_space)
    shape = (-1, *venv.painter.image_shape)
    images = obs["target"].view(shape), obs["canvas"].view(shape), extractor.one_hot(obs["cursor"])
    assert not torch.equal(other.matched(*images), extractor.matched(*images))
    other.load_state_dict(extractor.state_dict())
    torch.testing.assert_close(other.matched(*images), extractor.matched(*images), rtol=0, atol=0)


@pytest.mark.parametrize("move_radius", [2, None])
def test_matched_filter_argmax_is_greedy_searchs_action(move_radius):
    venv = PainterVecEnv(64, **{**SMALL, "move_radius": move_radius})
    painter = venv.painter
    extractor = PainterExtractor(
        venv.observation_space, **painter_policy_kwargs(painter=painter)["features_extractor_kwargs"]
    )
    venv.seed(0)
    observation = venv.reset()
    targets = torch.as_tensor(observation["target"]).view(-1, *painter.data.images.shape[1:])
    greedy, _ = greedy_programs(targets, painter.dictionary, painter.geometry, 2)
    values, support = painter.dictionary.patches()
    compared = 0
    for step in range(2):
        cursor = torch.as_tensor(observation["cursor"])
        canvas = torch.as_tensor(observation["canvas"]).view_as(targets)
        rewards = placement_rewards(targets, canvas, values.detach(), support, painter.geometry.patch_size)
        rewards = rewards.masked_fill(~reachable(cursor, painter.geometry).unsqueeze(1), float("-inf"))
        top2 = rewards.flatten(1).topk(2).values
        unique = top2[:, 0] > top2[:, 1] + 1e-4  # factorised argmaxes may mix two equally good placements
        chosen = matched_argmax(extractor, observation, venv.observation_space, painter)
        same_place = (
            move_cursor(cursor, chosen[:, :2], painter.geometry)
            == move_cursor(cursor, greedy[:, step, :2], painter.geometry)
        ).all(1)
        same = same_place & (chosen[:, 2:] == greedy[:, step, 2:]).all(1)
        assert bool(same[unique].all())
        compared += int(unique.sum())
        observation = venv.step(greedy[:, step].numpy())[0]
    assert compared >= 64


def test_policy_started_from_the_matched_filter_paints_like_greedy_and_survives_save_load(tmp_path):
    venv = PainterVecEnv(64, horizon_is_terminal=True, **SMALL)
    policy = painter_policy_kwargs(cnn_features=32, channels=8, painter=venv.painter, net_arch=dict(pi=[], vf=[16]))
    started = PPO("MultiInputPolicy", venv, policy_kwargs=policy, n_steps=8, batch_size=256, seed=0)
    plain = PPO("MultiInputPolicy", venv, policy_kwargs=policy, seed=0)
    start_from_matched_filter(started.policy)
    targets = venv.painter.data.images[:256]
    greedy, _ = greedy_programs(targets, venv.painter.dictionary, venv.painter.geometry, SMALL["max_steps"])
    values, support = venv.painter.dictionary.patches()

    def sse(programs):
        canvases = decode(programs, values.detach(), support, venv.painter.dictionary.num_levels, venv.painter.geometry)
        return float(sse_per_image(targets, canvases).mean())

    blank = float(targets.square().flatten(1).sum(1).mean())
    gained = {
        name: blank - sse(policy_programs(model, targets, venv.painter))
        for name, model in (("started", started), ("plain", plain))
    }
    # Ties between equally good placements cost the factorised head some of greedy's gain; an
    # untrained head without the start paints at random (it loses SSE on average).
    assert gained["started"] > 0.8 * (blank - sse(greedy))
    assert gained["plain"] < 0.2 * gained["started"]

    started.save(tmp_path / "ppo.zip")
    loaded = load_sb3_model(tmp_path / "ppo.zip")
    assert loaded.policy.features_extractor.matched_dim == started.policy.features_extractor.matched_dim
    assert torch.equal(policy_programs(loaded, targets, venv.painter), policy_programs(started, targets, venv.painter))
    with pytest.raises(ValueError, match="pi=\\[\\]"):
        start_from_matched_filter(PPO("MultiInputPolicy", venv, policy_kwargs={**policy, "net_arch": [8]}).policy)
    with pytest.raises(ValueError, match="no matched-filter branch"):
        start_from_matched_filter(PPO("MultiInputPolicy", venv, policy_kwargs=SMALL_POLICY).policy)


def test_ppo_and_a2c_run_on_the_single_env():
    env = gym.make("Painter-v0", **SMALL)
    for algorithm, extra in ((PPO, dict(n_steps=64, batch_size=32, n_epochs=2)), (A2C, dict(n_steps=8))):
        model = algorithm("MultiInputPolicy", env, policy_kwargs=SMALL_POLICY, seed=0, **extra).learn(192)
        action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
        assert env.action_space.contains(action)
        assert model.num_timesteps >= 192


def test_dqn_runs_with_flattened_actions_single_and_batched():
    single = FlattenMultiDiscrete(HorizonIsTerminal(gym.make("Painter-v0", **SMALL)))
    batched = PainterVecEnv(8, flatten_actions=True, horizon_is_terminal=True, **SMALL)
    for env in (single, batched):
        model = DQN(
            "MultiInputPolicy",
            env,
            policy_kwargs=SMALL_POLICY,
            learning_starts=64,
            buffer_size=1000,
            batch_size=32,
            seed=0,
        ).learn(300)
        assert model.num_timesteps >= 300
        assert model.action_space.n == 5 * 5 * 12 * 3


@pytest.mark.parametrize("joint_moves", [False, True])
def test_sb3_programs_reproduce_the_env_rollout(tmp_path, joint_moves):
    venv = PainterVecEnv(6, horizon_is_terminal=True, joint_moves=joint_moves, **SMALL)
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=48, policy_kwargs=SMALL_POLICY, seed=0).learn(96)
    path = tmp_path / "ppo.zip"
    model.save(path)
    venv.set_options([{"index": i} for i in range(6)])
    obs = venv.reset()
    actions = []
    for _ in range(SMALL["max_steps"]):
        action = model.predict(obs, deterministic=True)[0]
        actions.append(action)
        obs, _, dones, infos = venv.step(action)
    assert dones.all()
    painter = venv.painter
    programs = sb3_programs(path, painter.data.images[:6], painter, "cpu")
    assert programs.dtype == torch.long and programs.shape == (6, SMALL["max_steps"], 4)
    taken = np.stack(actions, axis=1)
    if joint_moves:
        taken = split_joint_moves(taken, painter.geometry.num_moves)
    assert torch.equal(programs, torch.as_tensor(taken))
    values, support = painter.dictionary.patches()
    canvases = decode(programs, values.detach(), support, painter.dictionary.num_levels, painter.geometry)
    sse = sse_per_image(painter.data.images[:6], canvases)
    np.testing.assert_allclose(sse.numpy(), [info["sse"] for info in infos], rtol=1e-4, atol=1e-4)


def test_saved_algorithm_is_read_from_the_file(tmp_path):
    env = PainterVecEnv(2, flatten_actions=True, **SMALL)
    DQN("MultiInputPolicy", env, policy_kwargs=SMALL_POLICY, buffer_size=100).save(tmp_path / "dqn.zip")
    A2C("MultiInputPolicy", PainterVecEnv(2, **SMALL), policy_kwargs=SMALL_POLICY).save(tmp_path / "a2c.zip")
    assert saved_algorithm(tmp_path / "dqn.zip") == "dqn"
    assert saved_algorithm(tmp_path / "a2c.zip") == "a2c"
    programs = sb3_programs(tmp_path / "dqn.zip", env.painter.data.images[:3], env.painter)
    assert programs.shape == (3, SMALL["max_steps"], 4)
    assert bool((programs < torch.as_tensor(env.nvec)).all()) and bool((programs >= 0).all())
    (tmp_path / "junk.zip").write_text("not a model")
    with pytest.raises(ValueError, match="not a saved Stable-Baselines3 model"):
        saved_algorithm(tmp_path / "junk.zip")


def test_policy_programs_rejects_mismatched_images_or_painter():
    venv = PainterVecEnv(2, **SMALL)
    model = PPO("MultiInputPolicy", venv, policy_kwargs=SMALL_POLICY, n_steps=8, batch_size=16)
    with pytest.raises(ValueError, match="images must be"):
        policy_programs(model, torch.zeros(2, 1, 9, 9), venv.painter)
    other = PainterVecEnv(2, **{**SMALL, "max_steps": 5}).painter
    with pytest.raises(ValueError, match="trained on observations"):
        policy_programs(model, other.data.images[:2], other)
