"""Stable-Baselines3 on the painter: a small-image features extractor, an autoregressive policy, action
wrappers for DQN, a batched ``VecEnv`` adapter, TensorBoard callbacks and SB3 agents as encoders."""

from agents.sb3.algorithms import load_sb3_model
from agents.sb3.autoregressive import AutoregressiveDistribution, PainterMultiInputPolicy
from agents.sb3.encoder import policy_programs, sb3_programs
from agents.sb3.extractor import PainterExtractor, painter_policy_kwargs, start_from_matched_filter
from agents.sb3.vec_env import PainterVecEnv
from agents.sb3.wrappers import FlattenMultiDiscrete

__all__ = [
    "AutoregressiveDistribution",
    "FlattenMultiDiscrete",
    "PainterExtractor",
    "PainterMultiInputPolicy",
    "PainterVecEnv",
    "load_sb3_model",
    "painter_policy_kwargs",
    "policy_programs",
    "sb3_programs",
    "start_from_matched_filter",
]
