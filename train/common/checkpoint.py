"""Training checkpoints: atomic writes, ``weights_only`` reads, random-number-generator states.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads with
``torch.load(weights_only=True)``. Saving goes through a temporary file and a rename, so an
interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from decoders.storage import atomic_save


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write the checkpoint atomically and return its path."""
    return atomic_save(payload, path)


def generator_states(generators: dict[str, torch.Generator]) -> dict:
    """The states of named generators plus torch's global CPU generator."""
    states = {name: generator.get_state() for name, generator in generators.items()}
    states["torch"] = torch.get_rng_state()
    return states


def restore_generator_states(generators: dict[str, torch.Generator], states: dict) -> None:
    """Put back the states saved by :func:`generator_states`."""
    for name, generator in generators.items():
        generator.set_state(states[name])
    torch.set_rng_state(states["torch"])
