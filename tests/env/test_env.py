"""``Painter-v0`` (single env): the checkers, determinism, pickling, rewards, rendering."""

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import painter_env  # noqa: F401  (registers Painter-v0)
from tests.conftest import SMALL_SHAPES


@pytest.mark.parametrize("kwargs", [SMALL_SHAPES, dict(dataset="shapes")])
def test_gymnasium_and_sb3_checkers_pass_without_warnings(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(gymnasium.make("Painter-v0", **kwargs).unwrapped)
        sb3_check_env(gymnasium.make("Painter-v0", **kwargs).unwrapped)


def test_mnist_env_passes_the_checkers(mnist_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gymnasium.make("Painter-v0", dataset="mnist", data_root=str(mnist_root), split="test[:500]")
        gymnasium_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)


def rollout(env, seed, steps):
    observation, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [(observation, 0.0, info["sse"])]
    for _ in range(steps):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((observation, reward, info["sse"]))
    return trace


def test_seeded_rollouts_are_deterministic():
    first = rollout(gymnasium.make("Painter-v0", **SMALL_SHAPES), seed=7, steps=4)
    second = rollout(gymnasium.make("Painter-v0", **SMALL_SHAPES), seed=7, steps=4)
    other = rollout(gymnasium.make("Painter-v0", **SMALL_SHAPES), seed=8, steps=4)
    for (obs_a, reward_a, sse_a), (obs_b, reward_b, sse_b) in zip(first, second):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        assert reward_a == reward_b and sse_a == sse_b
    assert any(a[1] != b[1] for a, b in zip(first, other))


def test_pickled_env_continues_identically():
    env = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    env.reset(seed=3)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    for action in ([1, 2, 0, 1], [5, 0, 3, 2], [0, 14, 11, 0]):
        action = np.array(action) % env.action_space.nvec
        expected, got = env.step(action), clone.step(action)
        for key in expected[0]:
            np.testing.assert_array_equal(expected[0][key], got[0][key])
        assert expected[1:4] == got[1:4]


def test_rewards_add_up_to_the_sse_drop_and_episodes_truncate():
    env = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    observation, info = env.reset(seed=0)
    sse_start, total, truncated, steps = info["sse"], 0.0, False, 0
    while not truncated:
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
        steps += 1
        assert not terminated
        true_sse = float(((observation["target"] - observation["canvas"]) ** 2).sum())
        assert info["sse"] == pytest.approx(true_sse, rel=1e-5, abs=1e-5)
    assert steps == SMALL_SHAPES["max_steps"]
    assert total == pytest.approx(sse_start - info["sse"], rel=1e-9, abs=1e-9)
    assert info["optimal_return"] == pytest.approx(sse_start)


def test_observations_are_fresh_arrays():
    env = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    first, _ = env.reset(seed=0)
    snapshot = first["canvas"].copy()
    env.step(np.array([0, 0, 0, 0]))
    np.testing.assert_array_equal(first["canvas"], snapshot)


def test_render_draws_target_canvas_and_residual_side_by_side():
    env = gymnasium.make("Painter-v0", render_mode="rgb_array", **SMALL_SHAPES)
    env.reset(seed=0)
    blank = env.render()
    env.step(np.array([0, 0, 0, 2]))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[1] > 3 * frame.shape[0]  # three square panels in a row, with gaps
    assert not np.array_equal(frame, blank)  # the painted patch and its outline appear
    assert env.unwrapped.render() is not None
    no_render = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    no_render.reset(seed=0)
    assert no_render.render() is None


@settings(max_examples=15, deadline=None)
@given(
    image_size=st.integers(4, 20),
    patch_size=st.integers(1, 6),
    num_levels=st.integers(1, 4),
    move_radius=st.integers(0, 8),
    max_steps=st.integers(1, 10),
    seed=st.integers(0, 1000),
)
def test_returns_equal_the_sse_drop_over_random_configurations(
    image_size, patch_size, num_levels, move_radius, max_steps, seed
):
    patch_size = min(patch_size, image_size)
    env = gymnasium.make(
        "Painter-v0",
        split="train[:8]",
        image_size=image_size,
        patch_size=patch_size,
        num_levels=num_levels,
        move_radius=move_radius,
        max_steps=max_steps,
    )
    observation, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    start, total, truncated = info["sse"], 0.0, False
    while not truncated:
        observation, reward, _, truncated, info = env.step(env.action_space.sample())
        total += reward
    true_sse = float(((observation["target"].astype(np.float64) - observation["canvas"]) ** 2).sum())
    assert info["sse"] == pytest.approx(true_sse, rel=1e-5, abs=1e-5)
    assert total == pytest.approx(start - true_sse, rel=1e-5, abs=1e-5)
