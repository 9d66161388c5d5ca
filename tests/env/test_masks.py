"""Action masks: exactly the moves that the canvas edge clamps onto a position another move reaches."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import painter_env  # noqa: F401  (registers Painter-v0)
from decoders.kernel import CanvasGeometry, move_cursor
from painter_env.masks import action_masks, move_masks
from painter_env.vector import PainterVectorEnv


@pytest.mark.parametrize(
    "geometry",
    [CanvasGeometry(8, 8, 3, 2), CanvasGeometry(10, 7, 3, 5), CanvasGeometry(6, 6, 2, 0)],
    ids=["radius-2", "radius-past-the-canvas", "radius-0"],
)
def test_each_reachable_position_has_exactly_one_allowed_move(geometry):
    cursors = torch.cartesian_prod(torch.arange(geometry.rows), torch.arange(geometry.cols))
    rows, cols = move_masks(cursors, geometry)
    moves = torch.cartesian_prod(torch.arange(geometry.num_moves), torch.arange(geometry.num_moves))
    for cursor, row_ok, col_ok in zip(cursors, rows, cols):
        reached = move_cursor(cursor.expand(len(moves), 2), moves, geometry)
        unclamped = cursor + moves - geometry.move_radius
        allowed = row_ok[moves[:, 0]] & col_ok[moves[:, 1]]
        assert torch.equal(allowed, (reached == unclamped).all(1))  # masked = clamped
        allowed_places = {tuple(place) for place in reached[allowed].tolist()}
        assert len(allowed_places) == int(allowed.sum())  # one allowed move per position
        assert allowed_places == {tuple(place) for place in reached.tolist()}  # and every position kept


def test_single_and_batched_env_give_the_flat_per_component_masks():
    kwargs = dict(image_size=10, patch_size=3, max_steps=3, move_radius=2, split="test")
    env = gym.make("Painter-v0", **kwargs)
    vector = PainterVectorEnv(5, **kwargs)
    vector.reset(seed=0)
    env.reset(seed=0)
    nvec = env.action_space.nvec
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.integers(0, nvec, (5, 4))
        vector.step(actions)
        env.step(actions[0])
        masks = vector.action_masks()
        assert masks.shape == (5, int(nvec.sum())) and masks.dtype == torch.bool
        assert masks[:, 2 * nvec[0] :].all()  # prototypes and levels are never masked
        cursor = vector._cursor
        assert torch.equal(masks, action_masks(cursor, vector.painter.geometry, int(nvec[2]), int(nvec[3])))
        single = env.unwrapped.action_masks()
        expected = action_masks(env.unwrapped._cursor, env.unwrapped.painter.geometry, *nvec[2:].tolist())
        assert single.dtype == bool and np.array_equal(single, expected[0].numpy())
