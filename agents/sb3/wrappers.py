"""Action-space views of the painter for SB3: ``Discrete`` for DQN, a joint move for PPO/A2C.

SB3's DQN needs a ``Discrete`` action space. The painter's action ``(di, dj, k, b)`` becomes the
index ``numpy.ravel_multi_index((di, dj, k, b), nvec)``: ``(2M+1)^2 K L`` actions in all, one
Q-value each. That number grows fast with the move radius, so it is checked against a limit.

A ``MultiDiscrete`` policy picks its components independently, so the row move and the column
move are learned separately although only their combination says where a patch lands. The joint
move view ``MultiDiscrete([(2M+1)^2, K, L])`` makes the place one choice.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

MAX_FLAT_ACTIONS = 100_000


def flat_action_count(nvec, max_actions: int = MAX_FLAT_ACTIONS) -> int:
    """The number of flattened actions of ``MultiDiscrete(nvec)``; ``ValueError`` above ``max_actions``."""
    count = math.prod(int(n) for n in nvec)
    if count > max_actions:
        raise ValueError(
            f"flattening MultiDiscrete({list(map(int, nvec))}) gives {count} discrete actions, more than "
            f"max_actions={max_actions}: use a smaller move_radius, fewer prototypes or levels, "
            f"or raise max_actions (DQN's Q-network has one output per action)"
        )
    return count


def unflatten_actions(flat: np.ndarray, nvec) -> np.ndarray:
    """Flat action indices ``(...)`` -> MultiDiscrete actions ``(..., len(nvec))``."""
    return np.stack(np.unravel_index(np.asarray(flat, dtype=np.int64), tuple(int(n) for n in nvec)), axis=-1)


def flatten_actions(actions: np.ndarray, nvec) -> np.ndarray:
    """MultiDiscrete actions ``(..., len(nvec))`` -> flat action indices ``(...)``."""
    actions = np.asarray(actions, dtype=np.int64)
    return np.ravel_multi_index(tuple(np.moveaxis(actions, -1, 0)), tuple(int(n) for n in nvec))


def joint_move_space(nvec) -> spaces.MultiDiscrete:
    """``MultiDiscrete([(2M+1)^2, K, L])``: the two move components as one joint choice."""
    moves, _, prototypes, levels = (int(n) for n in nvec)
    return spaces.MultiDiscrete([moves * moves, prototypes, levels])


def split_joint_moves(actions, moves: int):
    """Actions ``(..., 3)`` with a joint move -> ``(..., 4)`` ``(di, dj, k, b)`` (numpy or torch)."""
    move = actions[..., :1]
    stack = np.concatenate if isinstance(actions, np.ndarray) else torch.cat
    return stack([move // moves, move % moves, actions[..., 1:]], -1)


def joint_move_masks(masks: np.ndarray, moves: int) -> np.ndarray:
    """Flat per-component masks ``(B, 2n + K + L)`` of ``(di, dj, k, b)`` -> ``(B, n*n + K + L)`` of the
    joint move view: a joint move is allowed when both of its components are."""
    rows, cols, patches = masks[:, :moves], masks[:, moves : 2 * moves], masks[:, 2 * moves :]
    joint = (rows[:, :, None] & cols[:, None, :]).reshape(len(masks), -1)
    return np.concatenate([joint, patches], axis=1)


class FlattenMultiDiscrete(gym.ActionWrapper):
    """``Discrete`` view of a ``MultiDiscrete`` action space: ``DQN("MultiInputPolicy", FlattenMultiDiscrete(env))``.

    ``max_actions`` bounds the flattened space (``ValueError`` beyond it, with what to change).
    """

    def __init__(self, env: gym.Env, max_actions: int = MAX_FLAT_ACTIONS):
        super().__init__(env)
        if not isinstance(env.action_space, spaces.MultiDiscrete):
            raise ValueError(f"FlattenMultiDiscrete needs a MultiDiscrete action space, got {env.action_space}")
        self.nvec = env.action_space.nvec.copy()
        self.action_space = spaces.Discrete(flat_action_count(self.nvec, max_actions))

    def action(self, action) -> np.ndarray:
        return unflatten_actions(action, self.nvec)


class HorizonIsTerminal(gym.Wrapper):
    """Report the painter's fixed horizon as termination rather than truncation.

    The step count is part of the observation, so the horizon belongs to the task: after it no
    reward remains, and SB3 should not bootstrap a value there (it would for a truncation, from a
    state its value function never trained on). ``PainterVecEnv(horizon_is_terminal=True)`` does
    the same for the batched env.
    """

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated or truncated, False, info
