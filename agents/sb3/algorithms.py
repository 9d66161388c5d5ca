"""The Stable-Baselines3 and sb3-contrib algorithms that run on the painter, by command-line name.

sb3-contrib (RecurrentPPO, MaskablePPO, TRPO, QR-DQN) is an optional extra:
``pip install -e ".[contrib]"``.
"""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

# name -> (module, class)
ALGORITHMS = {
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "dqn": ("stable_baselines3", "DQN"),
    "recurrent-ppo": ("sb3_contrib", "RecurrentPPO"),
    "maskable-ppo": ("sb3_contrib", "MaskablePPO"),
    "trpo": ("sb3_contrib", "TRPO"),
    "qrdqn": ("sb3_contrib", "QRDQN"),
}
FLAT_ACTION_ALGORITHMS = ("dqn", "qrdqn")  # they need a Discrete action space (FlattenMultiDiscrete)
DEFAULT_POLICIES = {"recurrent-ppo": "MultiInputLstmPolicy"}  # the others: "MultiInputPolicy"


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The algorithm class of ``name`` (one of ``ALGORITHMS``); a clear error when sb3-contrib is missing."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    module_name, class_name = ALGORITHMS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f'the algorithm {name!r} needs sb3-contrib, an optional extra: pip install -e ".[contrib]" ({error})'
        ) from error
    return getattr(module, class_name)


def default_policy(name: str) -> str:
    """The algorithm's own name for its policy on dict observations."""
    return DEFAULT_POLICIES.get(name, "MultiInputPolicy")


def saved_algorithm(model_path: str | Path) -> str:
    """Which algorithm saved ``model_path``, read from its ``data`` entry (policy module and settings)."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(f"{model_path} is not a saved Stable-Baselines3 model: {error}") from error
    policy_module = data.get("policy_class", {}).get("__module__", "")
    for fragment, name in (("recurrent", "recurrent-ppo"), ("maskable", "maskable-ppo"), ("qrdqn", "qrdqn")):
        if fragment in policy_module:
            return name
    if "exploration_rate" in data:
        return "dqn"
    if "cg_max_steps" in data:
        return "trpo"
    return "ppo" if "clip_range" in data else "a2c"


def load_sb3_model(model_path: str | Path, device: str = "cpu") -> BaseAlgorithm:
    """Load an agent saved by ``model.save`` (the algorithm is read from the file)."""
    return algorithm_class(saved_algorithm(model_path)).load(model_path, device=device)
