"""The natively batched env: the same painter as the single env, Gymnasium's autoreset conventions."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import painter_env
from tests.conftest import SMALL_SHAPES


def sample_actions(env, generator):
    highs = torch.as_tensor(env.single_action_space.nvec)
    return (torch.rand(env.num_envs, 4, generator=generator) * highs).long()


def test_make_vec_gives_the_native_batched_env():
    env = gymnasium.make_vec("Painter-v0", num_envs=3, **SMALL_SHAPES)
    assert isinstance(env.unwrapped, painter_env.PainterVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    observation, info = env.reset(seed=0)
    assert all(tuple(observation[key].shape) == env.observation_space[key].shape for key in observation)
    assert env.observation_space.contains({key: value.numpy() for key, value in observation.items()})
    assert isinstance(observation["canvas"], torch.Tensor) and isinstance(info["sse"], torch.Tensor)


def test_batched_env_agrees_exactly_with_single_envs(small_painter):
    num_envs, generator = 5, torch.Generator().manual_seed(0)
    batched = gymnasium.make_vec("Painter-v0", num_envs=num_envs, **small_painter)
    singles = [gymnasium.make("Painter-v0", **small_painter) for _ in range(num_envs)]
    indices = torch.tensor([0, 3, 3, 17, 99])
    observation, info = batched.reset(seed=0, options={"indices": indices})
    single_obs = [env.reset(options={"index": int(i)})[0] for env, i in zip(singles, indices)]
    for n, obs in enumerate(single_obs):
        for key in obs:
            np.testing.assert_array_equal(observation[key][n].numpy(), obs[key])
    for _step in range(small_painter["max_steps"]):
        actions = sample_actions(batched, generator)
        observation, reward, terminated, truncated, info = batched.step(actions)
        for n, env in enumerate(singles):
            obs, single_reward, single_terminated, single_truncated, single_info = env.step(actions[n].numpy())
            for key in obs:
                np.testing.assert_array_equal(observation[key][n].numpy(), obs[key])
            assert float(reward[n]) == pytest.approx(single_reward, abs=1e-5)
            assert bool(truncated[n]) == single_truncated and bool(terminated[n]) == single_terminated
            assert float(info["sse"][n]) == pytest.approx(single_info["sse"], abs=1e-4)


def test_next_step_autoreset_ignores_the_action_after_an_episode_ends():
    env = gymnasium.make_vec("Painter-v0", num_envs=4, **SMALL_SHAPES)
    generator = torch.Generator().manual_seed(1)
    env.reset(seed=1)
    for _ in range(SMALL_SHAPES["max_steps"]):
        observation, reward, terminated, truncated, info = env.step(sample_actions(env, generator))
    assert truncated.all()
    observation, reward, terminated, truncated, info = env.step(sample_actions(env, generator))
    assert (reward == 0).all() and not truncated.any() and not terminated.any()
    assert (observation["step"] == 0).all() and (observation["canvas"] == 0).all()
    torch.testing.assert_close(info["sse"], observation["target"].square().sum(1))


def test_next_step_autoreset_restarts_only_the_envs_that_ended():
    env = gymnasium.make_vec("Painter-v0", num_envs=4, **SMALL_SHAPES)
    horizon, generator = SMALL_SHAPES["max_steps"], torch.Generator().manual_seed(5)
    env.reset(seed=5)
    env.step(sample_actions(env, generator))
    env.reset(options={"reset_mask": torch.tensor([True, True, False, False])})  # envs 0 and 1 a step behind
    for _ in range(horizon - 1):
        observation, reward, terminated, truncated, info = env.step(sample_actions(env, generator))
    assert truncated.tolist() == [False, False, True, True]
    returned = truncated.clone()
    env.reset(options={"reset_mask": torch.tensor([False, False, True, False])})  # env 2 starts over now
    assert torch.equal(truncated, returned)  # the caller's tensor is left alone
    observation, reward, terminated, truncated, info = env.step(sample_actions(env, generator))
    assert observation["step"].tolist() == [horizon, horizon, 1, 0]
    assert truncated.tolist() == [True, True, False, False] and reward[3] == 0 and (reward[:3] != 0).any()


def test_same_step_autoreset_returns_final_observations():
    env = gymnasium.make_vec("Painter-v0", num_envs=4, autoreset_mode="SameStep", **SMALL_SHAPES)
    generator = torch.Generator().manual_seed(2)
    env.reset(seed=2)
    total = torch.zeros(4)
    for _ in range(SMALL_SHAPES["max_steps"]):
        observation, reward, terminated, truncated, info = env.step(sample_actions(env, generator))
        total += reward
    assert truncated.all() and info["_final_obs"].all()
    final = info["final_obs"]
    assert (final["step"] == SMALL_SHAPES["max_steps"]).all() and (observation["step"] == 0).all()
    sse_final = (final["target"] - final["canvas"]).square().sum(1)
    torch.testing.assert_close(info["final_info"]["sse"], sse_final, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(total, info["final_info"]["optimal_return"] - sse_final, atol=1e-4, rtol=1e-4)


def test_partial_reset_restarts_only_the_masked_envs():
    env = gymnasium.make_vec("Painter-v0", num_envs=5, **SMALL_SHAPES)
    env.reset(seed=4, options={"indices": torch.arange(5)})
    before, *_ = env.step(torch.tensor([[1, 1, 0, 2]] * 5))
    before = {key: value.clone() for key, value in before.items()}
    mask = torch.tensor([True, False, True, False, False])
    after, info = env.reset(options={"reset_mask": mask, "indices": torch.tensor([7, 8])})
    assert after["step"].tolist() == [0, 1, 0, 1, 1]
    assert (after["canvas"][mask] == 0).all() and torch.equal(after["canvas"][~mask], before["canvas"][~mask])
    images = env.unwrapped.painter.data.images.flatten(1)
    assert torch.equal(after["target"][mask], images[[7, 8]])
    torch.testing.assert_close(info["sse"][mask], images[[7, 8]].square().sum(1))
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": torch.zeros(5, dtype=torch.bool)})


@pytest.mark.parametrize("canvas", ["small", "large", "colour"])
def test_resets_leave_start_canvases(canvas, colour_folder):
    """Partial resets and autoresets put back the start canvases (black, or each image's background),
    whether the windows cover much of them or little."""
    kwargs = {"small": SMALL_SHAPES, "large": {**SMALL_SHAPES, "image_size": 24, "patch_size": 3}}.get(
        canvas, colour_folder
    )
    env = gymnasium.make_vec("Painter-v0", num_envs=6, **kwargs)
    dictionary = env.unwrapped.painter.dictionary
    generator = torch.Generator().manual_seed(6)
    env.reset(seed=6)
    autoresets = 0

    def start(observation):
        targets = observation["target"].view(-1, *env.unwrapped.painter.image_shape)
        return dictionary.start_canvas(targets).flatten(1)

    for step in range(3 * (kwargs["max_steps"] + 1)):
        if step == 2:  # a partial reset mid-episode, then autoresets
            observation, _ = env.reset(options={"reset_mask": torch.tensor([True, False] * 3)})
            assert torch.equal(observation["canvas"][::2], start(observation)[::2])
            assert (observation["canvas"][1::2] != start(observation)[1::2]).any()
        observation, reward, _, truncated, info = env.step(sample_actions(env, generator))
        fresh = observation["step"] == 0
        assert torch.equal(observation["canvas"][fresh], start(observation)[fresh]) and (reward[fresh] == 0).all()
        autoresets += int(fresh.sum())
        true_sse = (observation["target"] - observation["canvas"]).square().sum(1)
        torch.testing.assert_close(info["sse"], true_sse, atol=1e-4, rtol=1e-5)
    assert autoresets >= 2 * env.num_envs


def test_rewards_add_up_to_the_sse_drop_over_many_envs():
    env = gymnasium.make_vec("Painter-v0", num_envs=64, dataset="shapes", max_steps=12)
    generator = torch.Generator().manual_seed(3)
    _, info = env.reset(seed=3)
    start, total = info["sse"].clone(), torch.zeros(64)
    for _ in range(12):
        observation, reward, _, truncated, info = env.step(sample_actions(env, generator))
        total += reward
    true_sse = (observation["target"] - observation["canvas"]).square().sum(1)
    torch.testing.assert_close(info["sse"], true_sse, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(total, start - true_sse, atol=1e-4, rtol=1e-5)


def test_seeded_resets_are_reproducible_and_numpy_actions_are_accepted():
    first = gymnasium.make_vec("Painter-v0", num_envs=6, **SMALL_SHAPES)
    second = gymnasium.make_vec("Painter-v0", num_envs=6, **SMALL_SHAPES)
    a, _ = first.reset(seed=11)
    b = second.reset(seed=11)[0]["target"].clone()  # observations are the env's buffers
    torch.testing.assert_close(a["target"], b)
    c, _ = second.reset(seed=12)
    assert not torch.equal(b, c["target"])
    observation, reward, *_ = second.step(np.zeros((6, 4), dtype=np.int64))
    assert reward.shape == (6,)


def test_render_gives_frames_of_the_first_envs():
    env = gymnasium.make_vec("Painter-v0", num_envs=6, render_mode="rgb_array", **SMALL_SHAPES)
    env.reset(seed=0)
    env.step(torch.zeros(6, 4, dtype=torch.long))
    frames = env.render()
    assert len(frames) == 4 and all(frame.dtype == np.uint8 and frame.ndim == 3 for frame in frames)


def test_dictionary_updates_reach_the_env_after_refresh():
    env = gymnasium.make_vec("Painter-v0", num_envs=2, **SMALL_SHAPES)
    env.reset(seed=0)
    with torch.no_grad():
        env.unwrapped.painter.dictionary.mean.zero_()
        env.unwrapped.painter.dictionary.basis.zero_()
    env.unwrapped.refresh_dictionary()
    observation, *_ = env.step(torch.zeros(2, 4, dtype=torch.long))
    assert (observation["canvas"] == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_env_runs_on_cuda():
    env = gymnasium.make_vec("Painter-v0", num_envs=8, device="cuda", **SMALL_SHAPES)
    observation, _ = env.reset(seed=0)
    observation, reward, *_ = env.step(torch.zeros(8, 4, dtype=torch.long, device="cuda"))
    assert reward.device.type == "cuda" and observation["canvas"].device.type == "cuda"
