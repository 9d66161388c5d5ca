"""Random-number-generator states in checkpoints, so that a resumed run draws what the original would.

Checkpoints themselves are plain dicts written with ``decoders.storage.atomic_save`` and read with
``decoders.storage.load_checkpoint`` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import torch


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
