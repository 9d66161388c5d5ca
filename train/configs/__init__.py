"""Hyperparameter files of ``python -m train.sb3`` (one TOML file per algorithm, RL-Zoo style)."""
