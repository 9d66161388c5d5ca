"""The figures every job reports (DESIGN section 4 and 6): SSE, PSNR, bits per image, speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def sse_per_image(targets: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors of each image ``(B,)``, pixels in [0, 1]."""
    return (targets - reconstructions).square().flatten(1).sum(1)


def psnr(sse: float, pixels_per_image: int) -> float:
    """PSNR in dB of a mean SSE per image (peak value 1)."""
    return 10.0 * math.log10(pixels_per_image / max(sse, 1e-12))


def learning_gain(untrained_sse: float, trained_sse: float) -> float | None:
    """What training made: the untrained twin's SSE over the trained encoder's (None at SSE 0)."""
    return untrained_sse / trained_sse if trained_sse > 0 else None


def program_bits(steps: int, num_actions: int) -> float:
    """Bits per image of a program of ``steps`` actions from ``num_actions`` possible ones."""
    return steps * math.log2(num_actions)


def reconstruction_metrics(
    targets: torch.Tensor, reconstructions: torch.Tensor, bits_per_image: float, seconds: float
) -> dict:
    """The standard figures of an encoder run over ``targets`` ``(N, C, H, W)``."""
    sse = float(sse_per_image(targets, reconstructions).mean())
    count = targets.shape[0]
    return {
        "sse": sse,
        "psnr": psnr(sse, targets[0].numel()),
        "bits_per_image": float(bits_per_image),
        "images_per_second": count / max(seconds, 1e-9),
        "num_images": count,
    }


def write_metrics_json(path: str | Path | None, metrics: dict) -> None:
    """Write the figures as JSON (nothing when no path was given)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
