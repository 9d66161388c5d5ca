"""A Stable-Baselines3 ``VecEnv`` over the natively batched ``PainterVectorEnv``.

SB3 vectorises single envs one Python call per env (``DummyVecEnv``) or one process per env
(``SubprocVecEnv``). Here the N painters are one batched env: a step is one kernel call for all
of them, and the adapter only converts tensors to the numpy arrays and per-env info dicts SB3
expects. Episode ends follow SB3's convention: the env is reset in the same step (the native env
runs with ``autoreset_mode="SameStep"``), the last observation goes to
``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` says it was a time limit.

All N envs share one batched env, so ``get_attr``, ``set_attr`` and ``env_method`` act on it
and report the same value for every index, except ``env_method("action_masks")``: each env's mask.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from agents.sb3.wrappers import (
    MAX_FLAT_ACTIONS,
    flat_action_count,
    joint_move_masks,
    joint_move_space,
    split_joint_moves,
)
from painter_env.rendering import render_frame
from painter_env.vector import PainterVectorEnv


class PainterVecEnv(VecEnv):
    """``PainterVecEnv(num_envs, **painter_kwargs)``: N painters as one SB3 ``VecEnv``.

    Arguments: ``num_envs``; ``device`` where the painters run ("cpu" or "cuda"; SB3 gets numpy
    either way); ``flatten_actions`` for a ``Discrete`` action space (DQN, see
    ``agents.sb3.wrappers``) bounded by ``max_actions``; ``horizon_is_terminal``: report episode
    ends as terminal rather than ``TimeLimit.truncated`` (the step count is observed, so the
    horizon is part of the task and nothing remains to bootstrap); ``joint_moves`` for
    ``MultiDiscrete([(2M+1)^2, K, L])``, the two move components as one choice (see
    ``agents.sb3.wrappers``); ``render_mode`` ("rgb_array"); the rest are ``Painter-v0``'s keyword
    arguments.

    ``reset`` uses the seed given by ``seed()`` (one generator draws every env's images) and,
    when every env has an ``"index"`` option (``set_options``), those images.
    """

    def __init__(
        self,
        num_envs: int = 8,
        device: str | torch.device = "cpu",
        flatten_actions: bool = False,
        max_actions: int = MAX_FLAT_ACTIONS,
        horizon_is_terminal: bool = False,
        joint_moves: bool = False,
        render_mode: str | None = None,
        **painter_kwargs: Any,
    ):
        if flatten_actions and joint_moves:
            raise ValueError("choose flatten_actions or joint_moves, not both (flattened actions are already joint)")
        self.env = PainterVectorEnv(
            num_envs, device, autoreset_mode=AutoresetMode.SAME_STEP, render_mode=render_mode, **painter_kwargs
        )
        self.nvec = self.env.single_action_space.nvec.copy()
        self.flatten_actions = flatten_actions
        action_space = self.env.single_action_space
        if flatten_actions:
            action_space = spaces.Discrete(flat_action_count(self.nvec, max_actions))
        elif joint_moves:
            action_space = joint_move_space(self.nvec)
        self.joint_moves = joint_moves
        self.horizon_is_terminal = horizon_is_terminal
        self._nvec = torch.as_tensor(self.nvec, device=self.env.device)
        self._on_cpu = self.env.device.type == "cpu"
        self._actions: torch.Tensor | None = None
        self._last_obs: dict[str, np.ndarray] | None = None
        super().__init__(num_envs, self.env.single_observation_space, action_space)

    @property
    def painter(self):
        """The painter (data, dictionary, geometry, horizon) shared by all envs."""
        return self.env.painter

    def reset(self) -> VecEnvObs:
        indices = [options.get("index") for options in self._options]
        if any(index is not None for index in indices) and any(index is None for index in indices):
            raise ValueError("set the 'index' option of every env or of none")
        options = {"indices": torch.as_tensor(indices)} if indices[0] is not None else None
        observation, info = self.env.reset(seed=self._seeds[0], options=options)
        self.reset_infos = self._per_env(info)
        self._reset_seeds()
        self._reset_options()
        return self._to_numpy(observation)

    def step_async(self, actions: np.ndarray) -> None:
        actions = torch.as_tensor(np.asarray(actions), device=self.env.device)
        if self.flatten_actions:
            actions = self._unflatten(actions)
        elif self.joint_moves:
            actions = split_joint_moves(actions, int(self.nvec[0]))
        self._actions = actions

    def _unflatten(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat indices ``(N,)`` -> ``(N, 4)``, the same order as ``numpy.unravel_index``."""
        if flat.shape != (self.num_envs,) and flat.shape != (self.num_envs, 1):
            raise ValueError(f"flattened actions must have shape ({self.num_envs},), got {tuple(flat.shape)}")
        flat = flat.reshape(-1).long()
        if bool(((flat < 0) | (flat >= self.action_space.n)).any()):
            raise ValueError(f"flattened actions must be in 0..{self.action_space.n - 1}")
        strides = torch.cumprod(torch.cat([self._nvec.new_ones(1), self._nvec[1:].flip(0)]), 0).flip(0)
        return (flat[:, None] // strides) % self._nvec

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise ValueError("step_wait() called without step_async(actions)")
        # The painter has no terminal states (``terminated`` is all False): episodes end at the horizon.
        observation, reward, _, truncated, info = self.env.step(self._actions)
        self._actions = None
        done = self._host(truncated)
        infos = self._per_env(info, [False] * self.num_envs if self.horizon_is_terminal else done.tolist())
        if "final_obs" in info:
            final = self._to_numpy(info["final_obs"], remember=False, copy=False)  # already copies
            ended = np.flatnonzero(self._host(info["_final_obs"])).tolist()
            every = len(ended) == self.num_envs  # the usual case: all episodes end together
            rows = zip(*(value if every else value[ended] for value in final.values()))
            for env, row in zip(ended, rows):
                infos[env]["terminal_observation"] = dict(zip(final, row))
        return self._to_numpy(observation), self._host(reward), done, infos

    def _host(self, tensor: torch.Tensor) -> np.ndarray:
        """``tensor`` as a numpy array: a view of it on the CPU, a copy from another device."""
        return tensor.numpy() if self._on_cpu else tensor.cpu().numpy()

    def _per_env(self, info: dict, timeout: list[bool] | None = None) -> list[dict]:
        """The native info's per-env tensors (``sse``, ``optimal_return``) as one dict per env, with
        ``TimeLimit.truncated`` when ``timeout`` is given."""
        sse = info["sse"].tolist()
        optimal = info["optimal_return"].tolist() if "optimal_return" in info else None
        if timeout is None:
            return (
                [{"sse": s} for s in sse]
                if optimal is None
                else [{"sse": s, "optimal_return": o} for s, o in zip(sse, optimal)]
            )
        if optimal is None:
            return [{"sse": s, "TimeLimit.truncated": t} for s, t in zip(sse, timeout)]
        return [{"sse": s, "optimal_return": o, "TimeLimit.truncated": t} for s, o, t in zip(sse, optimal, timeout)]

    def _to_numpy(self, observation: dict, remember: bool = True, copy: bool = True) -> dict[str, np.ndarray]:
        """Numpy copies of the env's observation buffers (SB3 keeps them past the next step)."""
        arrays = {}
        for key, value in observation.items():
            array = self._host(value)  # a copy already when the env runs on another device
            arrays[key] = array.copy() if copy and self._on_cpu else array
        if remember:
            self._last_obs = arrays
        return arrays

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name == "action_masks":  # one mask per env (sb3-contrib's get_action_masks)
            masks = self.action_masks()
            return [masks[env] for env in self._get_indices(indices)]
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def action_masks(self) -> np.ndarray:
        """``(N, mask size)`` bool: the allowed actions of every env (one per reachable position, see
        ``painter_env.masks``), flat per component as sb3-contrib's ``MaskablePPO`` reads them."""
        if self.flatten_actions:
            raise ValueError("action masks of flattened actions are not supported: use the MultiDiscrete action")
        masks = self._host(self.env.action_masks())
        return joint_move_masks(masks, int(self.nvec[0])) if self.joint_moves else masks

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> list[np.ndarray | None]:
        """One frame (target | canvas | residual) per env, from the last observation."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            warnings.warn(
                "get_images() needs render_mode='rgb_array' and a reset env; returning None frames", stacklevel=2
            )
            return [None for _ in range(self.num_envs)]
        obs, patch = self._last_obs, self.painter.geometry.patch_size
        shape = self.painter.data.images.shape[1:]
        return [
            render_frame(
                obs["target"][env].reshape(shape),
                obs["canvas"][env].reshape(shape),
                tuple(obs["cursor"][env].tolist()) if obs["step"][env] else None,
                patch,
            )
            for env in range(self.num_envs)
        ]
