"""SB3 agents as painter encoders: image batch in, program ``(B, T, 4)`` out.

``sb3_programs`` loads a saved agent and rolls it out (deterministic actions) on given images,
painting with the kernel exactly as the environment does, so an SB3 agent's SSE is measured the
same way as every other encoder's (``python -m train.evaluate --encoder policy``). With
``untrained_seed`` it rolls out the agent's untrained twin instead (``untrained_twin``: the same
algorithm, policy class and policy kwargs, on the same dictionary, its parameters drawn anew):
``python -m train.evaluate --encoder policy --untrained``.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.sb3.algorithms import load_sb3_model
from agents.sb3.wrappers import joint_move_masks, split_joint_moves, unflatten_actions
from decoders.kernel import act_
from painter_env.config import Painter, device_of
from painter_env.env import action_space, observation_space
from painter_env.masks import action_masks


@torch.no_grad()
def policy_programs(
    model: BaseAlgorithm, images: torch.Tensor, painter: Painter, batch_size: int = 1024
) -> torch.Tensor:
    """Programs ``(B, T, 4)`` of ``model``'s deterministic actions on ``images`` ``(B, C, H, W)``.

    Each step the model sees the same observation the env would give (target, canvas, cursor,
    step); its action is painted with the kernel. Agents with flattened actions (DQN), joint
    moves, a recurrent state (RecurrentPPO) or action masks (MaskablePPO) work too.
    """
    expected = observation_space(painter)
    image_shape = tuple(painter.data.images.shape[1:])
    if images.dim() != 4 or tuple(images.shape[1:]) != image_shape:
        raise ValueError(f"images must be (B, {', '.join(map(str, image_shape))}), got {tuple(images.shape)}")
    if model.observation_space != expected:
        raise ValueError(
            f"the agent was trained on observations {model.observation_space}, but this painter gives {expected}"
        )
    programs = [_rollout(model, chunk, painter) for chunk in images.split(batch_size)]
    return torch.cat(programs).to(images.device)


def _rollout(model: BaseAlgorithm, targets: torch.Tensor, painter: Painter) -> torch.Tensor:
    geometry, levels = painter.geometry, painter.dictionary.num_levels
    device = targets.device
    values, support = (tensor.detach().to(device) for tensor in painter.dictionary.patches())
    batch, channels = targets.shape[:2]
    target_flat = targets.reshape(batch, channels, -1).float()
    canvas = painter.dictionary.start_canvas(targets.float()).reshape(batch, channels, -1)
    cursor = torch.tensor(geometry.start, device=device).repeat(batch, 1)
    shape = (batch, *model.observation_space["target"].shape)
    target_array = targets.float().cpu().numpy().reshape(shape)
    actions, state, starts = [], None, np.ones(batch, dtype=bool)  # recurrent policies carry a state
    masked = "action_masks" in inspect.signature(model.predict).parameters  # MaskablePPO
    for step in range(painter.max_steps):
        observation = {
            "target": target_array,
            "canvas": canvas.cpu().numpy().reshape(shape),
            "cursor": cursor.cpu().numpy(),
            "step": np.full(batch, step, dtype=np.int64),
        }
        options = {"action_masks": _masks(model, cursor, painter)} if masked else {}
        chosen, state = model.predict(observation, state=state, episode_start=starts, deterministic=True, **options)
        starts = np.zeros(batch, dtype=bool)
        if isinstance(model.action_space, spaces.Discrete):
            chosen = unflatten_actions(chosen.reshape(-1), action_space(painter).nvec)
        elif len(model.action_space.nvec) == 3:
            chosen = split_joint_moves(np.asarray(chosen).reshape(batch, 3), painter.geometry.num_moves)
        action = torch.as_tensor(chosen, device=device).long().reshape(batch, 4)
        cursor, _ = act_(canvas, target_flat, cursor, action, values, support, levels, geometry)
        actions.append(action)
    return torch.stack(actions, dim=1)


def _masks(model: BaseAlgorithm, cursor: torch.Tensor, painter: Painter) -> np.ndarray:
    """The env's action masks at ``cursor``, in the layout of the agent's action space."""
    nvec = action_space(painter).nvec
    masks = action_masks(cursor, painter.geometry, int(nvec[2]), int(nvec[3])).cpu().numpy()
    return joint_move_masks(masks, int(nvec[0])) if len(model.action_space.nvec) == 3 else masks


def env_config_path(model_path: str | Path) -> Path:
    """Where ``train.sb3`` writes the painter settings of ``MODEL.zip``: ``MODEL.env.json``."""
    return Path(model_path).with_suffix(".env.json")


def sb3_env_config(model_path: str | Path) -> dict | None:
    """``Painter-v0`` keyword arguments the agent was trained with (``None`` if not recorded).

    ``dictionary`` is the path of the training dictionary saved beside the model, so a painter
    built from these settings on another split paints with the agent's patches.
    """
    path = env_config_path(model_path)
    return json.loads(path.read_text()) if path.is_file() else None


def untrained_twin(model: BaseAlgorithm, seed: int) -> BaseAlgorithm:
    """``model`` with its policy replaced by a new, untrained one, built as SB3 builds an agent's policy.

    The new policy is of ``type(model.policy)``, made from the model's observation and action spaces,
    learning-rate schedule and ``policy_kwargs`` (which hold the extractor's matched-filter patches,
    i.e. the training dictionary) with ``use_sde`` as the saved policy's, its parameters drawn under
    ``torch.manual_seed(seed)`` (the global torch generator is left as it was). Not repeated: a
    ``start_from_matched`` start that ``train.sb3`` may have applied after building the policy (it is
    not saved in the agent). Returns ``model``, changed in place.
    """
    kwargs = dict(model.policy_kwargs)
    if getattr(model.policy, "use_sde", None) is not None:  # on-policy actor-critics take it apart from the kwargs
        kwargs.setdefault("use_sde", model.policy.use_sde)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = type(model.policy)(model.observation_space, model.action_space, model.lr_schedule, **kwargs)
    model.policy = policy.to(model.device)
    if hasattr(model, "_create_aliases"):  # DQN, QR-DQN: q_net / quantile_net point into the policy
        model._create_aliases()
    return model


def sb3_programs(
    model_path: str | Path,
    images: torch.Tensor,
    painter: Painter,
    device: str | torch.device = "cpu",
    untrained_seed: int | None = None,
) -> torch.Tensor:
    """Roll out the SB3 agent saved at ``model_path`` on ``images`` ``(B, C, H, W)``: programs ``(B, T, 4)``.

    With ``untrained_seed`` the agent's untrained twin (``untrained_twin``) is rolled out instead.
    """
    device = device_of(device)
    path = Path(model_path)
    model = _cached_model(str(path.resolve()), path.stat().st_mtime_ns, str(device), untrained_seed)
    return policy_programs(model, images.to(device), painter)


@lru_cache(maxsize=4)
def _cached_model(path: str, modified: int, device: str, untrained_seed: int | None = None) -> BaseAlgorithm:
    """Loaded once per file version (and twin seed): ``train.evaluate`` calls ``sb3_programs`` once per batch."""
    model = load_sb3_model(path, device)
    return model if untrained_seed is None else untrained_twin(model, untrained_seed)
