"""Saving and loading tensors safely: atomic writes, ``weights_only`` reads, checkpoints of a kind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_save(payload, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_payload(path: str | Path, what: str = "file"):
    """``torch.load(weights_only=True)`` on CPU with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign files raise several exception types
        raise ValueError(f"cannot read {what} {path}: {error}") from error


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Read a checkpoint dict whose ``"kind"`` entry is ``kind``; ``ValueError`` for any other file."""
    payload = load_payload(path, what="checkpoint")
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} checkpoint")
    return payload
