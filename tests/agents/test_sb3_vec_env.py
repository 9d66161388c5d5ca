"""The batched SB3 adapter behaves like DummyVecEnv over single envs, also under SB3's VecEnv wrappers."""

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecMonitor, VecNormalize

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3.vec_env import PainterVecEnv
from agents.sb3.wrappers import FlattenMultiDiscrete, flat_action_count, flatten_actions, unflatten_actions

KWARGS = dict(image_size=10, patch_size=3, max_steps=3, max_shapes=2, move_radius=2, split="test")
NUM_ENVS = 4


class ScriptedImages(gym.Wrapper):
    """Resets to image ``next_index``, which the test copies from the batched side's choice."""

    next_index = 0

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options={"index": self.next_index})


def image_indices(adapter: PainterVecEnv, targets: np.ndarray) -> list[int]:
    """The split's image number of each observed target (equal images are interchangeable)."""
    images = adapter.painter.data.images.flatten(1).numpy()
    flat = targets.reshape(targets.shape[0], images.shape[1])
    return [int(np.flatnonzero((images == row).all(1))[0]) for row in flat]


def make_pair(wrap=lambda venv: venv):
    adapter = PainterVecEnv(NUM_ENVS, **KWARGS)
    dummy = DummyVecEnv([lambda: ScriptedImages(gym.make("Painter-v0", **KWARGS)) for _ in range(NUM_ENVS)])
    return adapter, dummy, wrap(adapter), wrap(dummy)


def follow_images(adapter, dummy, targets, which) -> None:
    for env, index in zip(which, image_indices(adapter, targets[which])):
        dummy.set_attr("next_index", index, indices=[int(env)])


def assert_same_obs(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        left, right = np.asarray(a[key]), np.asarray(b[key])
        assert left.shape == right.shape and left.dtype == right.dtype, key
        np.testing.assert_allclose(left, right, atol=1e-5, err_msg=key)


def run_both(wrap=lambda venv: venv, steps: int = 10, seed: int = 0):
    """Step both sides with the same random actions; yield their results side by side."""
    adapter, dummy, left, right = make_pair(wrap)
    rng = np.random.default_rng(seed)
    left.seed(seed)
    obs_left = left.reset()
    follow_images(adapter, dummy, adapter._last_obs["target"], np.arange(NUM_ENVS))
    obs_right = right.reset()
    yield obs_left, obs_right, None, None
    nvec = adapter.action_space.nvec
    for _ in range(steps):
        actions = rng.integers(0, nvec, size=(NUM_ENVS, 4))
        step_left = left.step(actions)
        follow_images(adapter, dummy, adapter._last_obs["target"], np.flatnonzero(step_left[2]))
        step_right = right.step(actions)
        yield step_left[0], step_right[0], step_left[1:], step_right[1:]


def test_same_observations_rewards_dones_and_terminal_observations():
    episode_ends = 0
    for obs_a, obs_d, rest_a, rest_d in run_both(steps=10):
        assert_same_obs(obs_a, obs_d)
        if rest_a is None:
            continue
        (reward_a, done_a, infos_a), (reward_d, done_d, infos_d) = rest_a, rest_d
        assert reward_a.dtype == reward_d.dtype == np.float32
        np.testing.assert_allclose(reward_a, reward_d, atol=1e-5)
        np.testing.assert_array_equal(done_a, done_d)
        for info_a, info_d in zip(infos_a, infos_d):
            assert info_a["TimeLimit.truncated"] == info_d["TimeLimit.truncated"]
            for key in ("sse", "optimal_return"):
                assert info_a[key] == pytest.approx(info_d[key], rel=1e-5, abs=1e-5)
            assert ("terminal_observation" in info_a) == ("terminal_observation" in info_d)
            if "terminal_observation" in info_a:
                assert_same_obs(info_a["terminal_observation"], info_d["terminal_observation"])
                episode_ends += 1
    assert episode_ends == 3 * NUM_ENVS  # 10 steps of a 3-step horizon


def test_returned_observations_are_copies():
    adapter = PainterVecEnv(2, **KWARGS)
    first = adapter.reset()
    kept = {key: value.copy() for key, value in first.items()}
    terminal = None
    for _ in range(KWARGS["max_steps"] + 1):
        obs, _, dones, infos = adapter.step(np.stack([adapter.action_space.sample() for _ in range(2)]))
        if dones.any():
            terminal = {key: value.copy() for key, value in infos[0]["terminal_observation"].items()}
            held = infos[0]["terminal_observation"]
    for key in kept:
        np.testing.assert_array_equal(first[key], kept[key])
        np.testing.assert_array_equal(held[key], terminal[key])
    assert int(held["step"]) == KWARGS["max_steps"] and int(obs["step"][0]) == 1


@pytest.mark.parametrize("name", ["monitor", "normalize", "checknan"])
def test_same_results_under_sb3_wrappers(name):
    wrappers = {
        "monitor": VecMonitor,
        "normalize": lambda venv: VecNormalize(VecMonitor(venv), norm_obs_keys=["target", "canvas"]),
        "checknan": lambda venv: VecCheckNan(venv, raise_exception=True),
    }
    episodes = 0
    for obs_a, obs_d, rest_a, rest_d in run_both(wrappers[name], steps=7, seed=3):
        assert_same_obs(obs_a, obs_d)
        if rest_a is None:
            continue
        np.testing.assert_allclose(rest_a[0], rest_d[0], atol=1e-4)
        for info_a, info_d in zip(rest_a[2], rest_d[2]):
            assert ("episode" in info_a) == ("episode" in info_d)
            if "episode" in info_a:
                assert info_a["episode"]["r"] == pytest.approx(info_d["episode"]["r"], abs=1e-4)
                assert info_a["episode"]["l"] == info_d["episode"]["l"] == KWARGS["max_steps"]
                episodes += 1
    assert episodes == (2 * NUM_ENVS if name != "checknan" else 0)


def test_reset_options_pick_images_and_seed_repeats_draws():
    adapter = PainterVecEnv(NUM_ENVS, **KWARGS)
    adapter.set_options([{"index": i} for i in (5, 0, 7, 5)])
    obs = adapter.reset()
    images = adapter.painter.data.images.flatten(1).numpy()
    np.testing.assert_array_equal(obs["target"].reshape(NUM_ENVS, -1), images[[5, 0, 7, 5]])
    adapter.seed(11)
    first = adapter.reset()["target"].copy()
    adapter.seed(11)
    np.testing.assert_array_equal(adapter.reset()["target"], first)
    adapter.set_options([{"index": 1}, {}, {}, {}])
    with pytest.raises(ValueError, match="every env or of none"):
        adapter.reset()


def test_attributes_methods_and_rendering():
    adapter = PainterVecEnv(3, render_mode="rgb_array", **KWARGS)
    adapter.reset()
    assert adapter.get_attr("render_mode") == ["rgb_array"] * 3
    assert adapter.get_attr("num_envs", indices=[0, 2]) == [3, 3]
    adapter.set_attr("copy_observations", True)
    assert adapter.env.copy_observations is True
    assert adapter.env_method("refresh_dictionary", indices=[1]) == [None]
    assert adapter.env_is_wrapped(gym.Wrapper) == [False] * 3
    frames = adapter.get_images()
    assert len(frames) == 3 and frames[0].ndim == 3 and frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
    assert adapter.render().ndim == 3


def test_flattened_actions_match_multidiscrete_and_wrapper():
    multi, flat = PainterVecEnv(NUM_ENVS, **KWARGS), PainterVecEnv(NUM_ENVS, flatten_actions=True, **KWARGS)
    nvec = multi.action_space.nvec
    assert flat.action_space.n == int(np.prod(nvec))
    for venv in (multi, flat):
        venv.seed(1)
        venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(4):
        actions = rng.integers(0, nvec, size=(NUM_ENVS, 4))
        codes = flatten_actions(actions, nvec)
        np.testing.assert_array_equal(unflatten_actions(codes, nvec), actions)
        obs_m, reward_m, _, _ = multi.step(actions)
        obs_f, reward_f, _, _ = flat.step(codes)
        np.testing.assert_array_equal(reward_m, reward_f)
        assert_same_obs(obs_m, obs_f)
    wrapped = FlattenMultiDiscrete(gym.make("Painter-v0", **KWARGS))
    np.testing.assert_array_equal(wrapped.action(int(codes[0])), actions[0])


def test_joint_moves_match_multidiscrete():
    multi, joint = PainterVecEnv(NUM_ENVS, **KWARGS), PainterVecEnv(NUM_ENVS, joint_moves=True, **KWARGS)
    moves = int(multi.nvec[0])
    assert list(joint.action_space.nvec) == [moves * moves, *multi.nvec[2:]]
    for venv in (multi, joint):
        venv.seed(2)
        venv.reset()
    rng = np.random.default_rng(1)
    for _ in range(4):
        actions = rng.integers(0, multi.nvec, size=(NUM_ENVS, 4))
        combined = np.concatenate([actions[:, :1] * moves + actions[:, 1:2], actions[:, 2:]], axis=1)
        obs_m, reward_m, _, _ = multi.step(actions)
        obs_j, reward_j, _, _ = joint.step(combined)
        np.testing.assert_array_equal(reward_m, reward_j)
        assert_same_obs(obs_m, obs_j)
    with pytest.raises(ValueError, match="not both"):
        PainterVecEnv(2, joint_moves=True, flatten_actions=True, **KWARGS)


def test_too_many_flat_actions_is_a_clear_error():
    with pytest.raises(ValueError, match="move_radius"):
        flat_action_count([57, 57, 32, 3])
    with pytest.raises(ValueError, match="max_actions=10"):
        PainterVecEnv(2, flatten_actions=True, max_actions=10, **KWARGS)
    with pytest.raises(ValueError, match="MultiDiscrete"):
        FlattenMultiDiscrete(gym.make("CartPole-v1"))


def test_horizon_is_terminal_reports_no_time_limit():
    adapter = PainterVecEnv(2, horizon_is_terminal=True, **KWARGS)
    adapter.reset()
    for _ in range(KWARGS["max_steps"]):
        _, _, dones, infos = adapter.step(np.zeros((2, 4), dtype=np.int64))
    assert dones.all() and not any(info["TimeLimit.truncated"] for info in infos)
    assert all("terminal_observation" in info for info in infos)


def test_infos_without_ground_truth_programs_carry_the_sse_alone(tmp_path):
    rng = np.random.default_rng(0)
    for number in range(3):
        Image.fromarray((rng.random((10, 10)) * 255).astype(np.uint8)).save(tmp_path / f"{number}.png")
    adapter = PainterVecEnv(
        2, dataset=f"folder:{tmp_path}", split="all", image_size=10, patch_size=3, max_steps=2, num_prototypes=4
    )
    adapter.seed(0)
    adapter.reset()
    assert [set(info) for info in adapter.reset_infos] == [{"sse"}] * 2
    for step in range(2):
        _, _, _, infos = adapter.step(np.zeros((2, 4), dtype=np.int64))
        ended = {"terminal_observation"} if step == 1 else set()
        assert [set(info) for info in infos] == [{"sse", "TimeLimit.truncated"} | ended] * 2
