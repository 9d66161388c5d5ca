"""Exact categorical sampling and inverse-temperature schedules for the Gibbs samplers.

``sample_categorical`` inverts the cumulative distribution with ONE uniform per row: with
``c = cumsum(exp(logits - max))`` it returns the first index whose ``c`` exceeds ``u * c[-1]``,
an exact draw from ``softmax(logits)`` (up to float rounding of the cumulative sum). Drawing one
uniform per *entry* and comparing each with the cumulative sum is biased towards early entries
(tested). Working from logits keeps very peaked
conditionals (large beta) from underflowing, entries at ``-inf`` are never drawn, and any
leading dimensions are batched. One uniform per row is also much cheaper than Gumbel noise on
every entry, which matters when a row holds every (position, prototype) of an image.

Resolution: the uniform is a float32 in (0, 1] (steps of 2^-24), so an entry whose probability is
far below 2^-24 of the row's total is never drawn. Log-weights are floored at ``FLOOR_NATS`` = 87
nats below the row's maximum (below 0 for log-probabilities, whose maximum is at least
``-log N``), which keeps ``exp`` off its very slow subnormal path; floored
entries (including ``-inf``) weigh at most 2e-38 each and so can never be drawn.
"""

from __future__ import annotations

import math

import torch

FLOOR_NATS = 87.0


def sample_categorical(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    consume: bool = False,
    normalized: bool = False,
) -> torch.Tensor:
    """One index per row of ``logits`` ``(..., N)`` drawn from ``softmax(logits)``: ``(...)`` long.

    With ``consume=True`` the logits tensor is overwritten (saves a copy of a large tensor).
    ``normalized=True`` says the rows are log-probabilities (as ``log_softmax`` returns): their
    maximum is then between ``-log N`` and 0, so the shift by it, which only keeps ``exp`` from
    overflowing, is skipped (three tensor ops fewer, for small policies' action sampling).
    """
    size = logits.shape[-1]
    if size == 0:
        raise ValueError("cannot sample from an empty categorical distribution")
    if normalized:
        weights = (logits.clamp_min_(-FLOOR_NATS) if consume else logits.clamp_min(-FLOOR_NATS)).exp_()
    else:
        weights = logits if consume else logits.clone()
        weights.sub_(weights.amax(-1, keepdim=True)).clamp_min_(-FLOOR_NATS).exp_()
    cumulative = torch.cumsum(weights, -1, out=weights)
    shape = logits.shape[:-1] + (1,)
    uniform = 1.0 - torch.rand(shape, generator=generator, device=logits.device, dtype=logits.dtype)
    total = cumulative[..., -1:]
    point = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, point, right=True).squeeze(-1)


def beta_schedule(beta_start: float, beta_end: float, count: int) -> list[float]:
    """``count`` inverse temperatures from ``beta_start`` to ``beta_end``, evenly spaced in log."""
    if beta_start <= 0 or beta_end <= 0:
        raise ValueError(f"inverse temperatures must be > 0, got {beta_start} and {beta_end}")
    if count < 1:
        return []
    if count == 1:
        return [float(beta_end)]
    ratio = math.log(beta_end / beta_start) / (count - 1)
    return [float(beta_start * math.exp(ratio * step)) for step in range(count)]
