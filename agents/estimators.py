"""Gradient estimators: functions from a batch of sampled programs to a surrogate loss.

Like pyro's ``infer`` estimators, each returns a scalar whose gradient (minimised) is the
estimator's gradient of an objective, for the encoder (through ``log_probs``) and for the
dictionary (through ``sse``, the final SSE painted with the sampled programs held fixed). The
optimisation loop lives elsewhere. With ``log q_r(x|z) = -beta * SSE(x, dec(z))``:

- :func:`reinforce` - maximise ``E_q[log q_r(x|z)]`` (the ELBO-style objective). Score function
  with returns-to-go (the decrease of the SSE from step t on; rewards before t do not depend on
  the action at t), a baseline and an optional entropy bonus. Unbiased with every baseline of
  :data:`BASELINES`: none of them depends on the action it multiplies. The ``self-critical``
  baseline is the return of the policy's own most likely program, so a
  sample is reinforced exactly when it beats what the encoder would output at test time.
- :func:`iw` - the importance-weighted gradient of ``log sum_z q_e(z|x) q_r(x|z)`` (the
  objective "without Jensen") with S samples and self-normalised weights
  ``w_s = softmax_s(log q_r(x|z_s))`` (detached): ``sum_s w_s grad[log q_e(z_s|x) + log q_r(x|z_s)]``.
  Biased for finite S, consistent as S grows (the reweighted wake-sleep wake update). The encoder
  term subtracts a control variate with mean zero: ``1/S``, or with ``per_step=True``, per step,
  the weight ``w_s^(-s,t)`` that sample s would have if its return from step t on were replaced by
  the other samples' mean (a function of its past and of the other samples, never of the actions
  it multiplies).
- :func:`vimco` - unbiased gradient of the S-sample bound ``L_S = log (1/S) sum_s q_r(x|z_s)``
  with the leave-one-out learning signal ``L_S - L_S^(-s)`` per sample, where ``L_S^(-s)``
  replaces ``log q_r(x|z_s)`` by the mean of the other samples' values. With ``per_step=True``
  the score of step t is multiplied by ``L_S - L_S^(-s,t)``, where only sample s's return from t
  on is replaced by the other samples' mean; that baseline never depends on the actions it
  multiplies, so the estimator stays unbiased. With S = 2 and ``d = f_1 - f_2`` the signal is
  ``+-d/2 + log cosh(d/2)``: REINFORCE's leave-one-out advantage plus a term >= 0 on both scores
  that estimates the gradient of the bound's Jensen gap (tested), so VIMCO is not uniformly less
  noisy than REINFORCE with the leave-one-out baseline.

All three are checked against gradients computed exactly by enumerating every program of a
tiny problem (``tests/agents/test_estimators.py``).

References:
    Williams, Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
    Learning, 1992; Rennie et al., Self-critical Sequence Training for Image Captioning, 2017;
    Bornschein & Bengio, Reweighted Wake-Sleep, 2015; Le et al., Revisiting Reweighted Wake-Sleep
    for Models with Stochastic Control Flow, 2019; Mnih & Rezende, Variational Inference for Monte
    Carlo Objectives, 2016.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

BASELINES = ("loo", "value", "moving-average", "self-critical", "none")


@dataclass
class SampleBatch:
    """S sampled programs for each of N images.

    ``log_probs`` ``(N, S, T)``: log q_e of each step's action (gradient to the encoder);
    ``rewards`` ``(N, S, T)``: SSE decrease of each step (no gradient); ``sse`` ``(N, S)``: final
    SSE of each program (gradient to the dictionary, or none when it is frozen);
    ``entropy`` and ``values`` ``(N, S, T)``: policy entropy and value predictions, optional;
    ``reference_rewards`` ``(N, T)``: the step rewards of the policy's most likely program for
    each image, for the self-critical baseline, optional.
    """

    log_probs: torch.Tensor
    rewards: torch.Tensor
    sse: torch.Tensor
    entropy: torch.Tensor | None = None
    values: torch.Tensor | None = None
    reference_rewards: torch.Tensor | None = None

    def __post_init__(self):
        if self.log_probs.dim() != 3 or self.rewards.shape != self.log_probs.shape:
            raise ValueError(
                f"log_probs and rewards must both be (N, S, T), got {tuple(self.log_probs.shape)} "
                f"and {tuple(self.rewards.shape)}"
            )
        if self.sse.shape != self.log_probs.shape[:2]:
            raise ValueError(f"sse must be (N, S) = {tuple(self.log_probs.shape[:2])}, got {tuple(self.sse.shape)}")
        expected = (self.log_probs.shape[0], self.log_probs.shape[2])
        if self.reference_rewards is not None and self.reference_rewards.shape != expected:
            raise ValueError(
                f"reference_rewards must be (N, T) = {expected}, got {tuple(self.reference_rewards.shape)}"
            )

    @property
    def num_samples(self) -> int:
        return self.log_probs.shape[1]

    def rows(self, part: slice) -> SampleBatch:
        """The samples of images ``part``."""
        fields = (getattr(self, f.name) for f in dataclasses.fields(self))
        return SampleBatch(*(None if t is None else t[part] for t in fields))

    def halves(self) -> tuple[slice, slice]:
        """The first and the second half of the images."""
        middle = self.log_probs.shape[0] // 2
        return slice(0, middle), slice(middle, None)

    @staticmethod
    def concatenate(batches: list[SampleBatch]) -> SampleBatch:
        """The batches' images one after the other."""
        if len(batches) == 1:
            return batches[0]
        names = [f.name for f in dataclasses.fields(SampleBatch)]
        columns = [[getattr(batch, name) for batch in batches] for name in names]
        return SampleBatch(*(None if column[0] is None else torch.cat(column) for column in columns))


@dataclass
class Surrogate:
    """A loss to minimise and its parts, plus the (detached) learning signal of each sample
    (``(N, S)``), or of each sample and step (``(N, S, T)``; ``(N, S, 1)`` when it is one per program)."""

    loss: torch.Tensor
    encoder_loss: torch.Tensor
    decoder_loss: torch.Tensor
    value_loss: torch.Tensor
    signal: torch.Tensor


def returns_to_go(rewards: torch.Tensor) -> torch.Tensor:
    """``G_t = sum_{t' >= t} r_t'`` along the last dimension."""
    return rewards.flip(-1).cumsum(-1).flip(-1)


def leave_one_out_mean(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """For each sample, the mean of the other samples along ``dim`` (needs at least two)."""
    count = values.shape[dim]
    if count < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 samples per image (--samples >= 2)")
    return (values.sum(dim, keepdim=True) - values) / (count - 1)


def _entropy_bonus(batch: SampleBatch, entropy_coef: float) -> torch.Tensor:
    if entropy_coef == 0 or batch.entropy is None:
        return batch.log_probs.new_zeros(())
    return entropy_coef * batch.entropy.sum(-1).mean()


def _finish(encoder_loss, decoder_loss, value_loss, signal, batch, entropy_coef) -> Surrogate:
    encoder_loss = encoder_loss - _entropy_bonus(batch, entropy_coef)
    return Surrogate(encoder_loss + decoder_loss + value_loss, encoder_loss, decoder_loss, value_loss, signal.detach())


def reinforce(
    batch: SampleBatch,
    beta: float = 1.0,
    baseline: str = "loo",
    entropy_coef: float = 0.0,
    moving_average: torch.Tensor | None = None,
) -> Surrogate:
    """Score-function gradient of ``E_q[-beta * SSE]`` with returns-to-go and a baseline.

    ``baseline``: ``"loo"`` the mean return-to-go of the other samples of the same image;
    ``"value"`` the policy's value predictions (trained here by a squared-error loss);
    ``"moving-average"`` the given per-step averages ``moving_average`` ``(T,)``;
    ``"self-critical"`` the returns-to-go of the policy's most likely program for the same image
    (``batch.reference_rewards``); ``"none"``.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    returns = beta * returns_to_go(batch.rewards.detach())
    value_loss = batch.log_probs.new_zeros(())
    if baseline == "loo":
        base = leave_one_out_mean(returns)
    elif baseline == "value":
        if batch.values is None:
            raise ValueError("the 'value' baseline needs value predictions in the batch")
        base = batch.values.detach()
        value_loss = 0.5 * (batch.values - returns).square().sum(-1).mean()
    elif baseline == "moving-average":
        if moving_average is None:
            raise ValueError("the 'moving-average' baseline needs the running averages (moving_average)")
        base = moving_average.detach().view(1, 1, -1)
    elif baseline == "self-critical":
        if batch.reference_rewards is None:
            raise ValueError(
                "the 'self-critical' baseline needs the rewards of the most likely programs (reference_rewards)"
            )
        base = beta * returns_to_go(batch.reference_rewards.detach()).unsqueeze(1)
    else:
        base = torch.zeros_like(returns)
    advantage = returns - base
    encoder_loss = -(advantage * batch.log_probs).sum(-1).mean()
    decoder_loss = beta * batch.sse.mean()
    return _finish(encoder_loss, decoder_loss, value_loss, advantage, batch, entropy_coef)


def iw(batch: SampleBatch, beta: float = 1.0, entropy_coef: float = 0.0, per_step: bool = False) -> Surrogate:
    """Self-normalised importance-weighted gradient of ``log sum_z q_e(z|x) q_r(x|z)``
    (control variate ``1/S``, or refined per step with ``per_step=True``; see the module docstring)."""
    log_likelihood = -beta * batch.sse
    f = log_likelihood.detach()
    weights = f.softmax(dim=1)
    if per_step:
        # The weight sample s would have with its return from step t on replaced by the others' mean:
        # a function of its past and of the other samples only, so E[its score term] = 0.
        replaced = _replaced_log_likelihood(f, batch.rewards, beta)
        signal = weights.unsqueeze(2) - torch.sigmoid(replaced - _others(f).logsumexp(2, keepdim=True))
        encoder_loss = -(signal * batch.log_probs).sum(-1).sum(1).mean()
    else:
        # Subtracting 1/S is a control variate: E_q[sum_s grad log q_e(z_s)] = 0, so the mean is unchanged.
        signal = weights - 1.0 / batch.num_samples
        encoder_loss = -(signal * batch.log_probs.sum(-1)).sum(1).mean()
    decoder_loss = -(weights * log_likelihood).sum(1).mean()
    return _finish(encoder_loss, decoder_loss, batch.log_probs.new_zeros(()), signal, batch, entropy_coef)


def _replaced_log_likelihood(f: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """``(N, S, T)``: each sample's log-likelihood ``f`` ``(N, S)`` with the part decided from step t
    on (its return-to-go) replaced by the mean of the other samples' returns-to-go."""
    future = beta * returns_to_go(rewards.detach())
    return f.unsqueeze(2) - future + leave_one_out_mean(future)


def _others(f: torch.Tensor) -> torch.Tensor:
    """``(N, S, S)``: row s holds the other samples' values of ``f`` ``(N, S)``, ``-inf`` at s itself."""
    samples = f.shape[1]
    return (
        f.unsqueeze(1)
        .expand(-1, samples, -1)
        .masked_fill(torch.eye(samples, dtype=torch.bool, device=f.device), float("-inf"))
    )


def vimco(batch: SampleBatch, beta: float = 1.0, entropy_coef: float = 0.0, per_step: bool = False) -> Surrogate:
    """VIMCO: unbiased gradient of ``log (1/S) sum_s q_r(x|z_s)`` with leave-one-out signals
    (one per program, as in the paper, or per step with ``per_step=True``; see the module docstring)."""
    samples = batch.num_samples
    log_likelihood = -beta * batch.sse
    f = log_likelihood.detach()
    bound = f.logsumexp(1, keepdim=True) - math.log(samples)
    # L^(-s): f_s replaced (by the mean of the others, or per step only its future part), then a
    # logsumexp over the S-1 others and that replacement.
    replaced = _replaced_log_likelihood(f, batch.rewards, beta) if per_step else leave_one_out_mean(f).unsqueeze(2)
    loo_bound = torch.logaddexp(_others(f).logsumexp(2, keepdim=True), replaced) - math.log(samples)
    signal = bound.unsqueeze(2) - loo_bound
    encoder_loss = -(signal * batch.log_probs).sum(-1).sum(1).mean()
    decoder_loss = -(f.softmax(1) * log_likelihood).sum(1).mean()
    return _finish(encoder_loss, decoder_loss, batch.log_probs.new_zeros(()), signal, batch, entropy_coef)


def half_batch_gradients(halves: tuple[Surrogate, Surrogate], parameters: list[torch.Tensor]) -> float:
    """Set the parameters' gradients to the mean of the two half-batch surrogates' gradients (the
    full batch's); return ``||g1 - g2||^2 / 4``, an unbiased estimate of the trace of its covariance."""
    first = torch.autograd.grad(halves[0].loss, parameters, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(halves[1].loss, parameters, allow_unused=True)
    spread = 0.0
    for a, b, p in zip(first, second, parameters):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        p.grad = (a + b) / 2
        spread += float((a - b).square().sum()) / 4
    return spread


ESTIMATORS = {"reinforce": reinforce, "iw": iw, "vimco": vimco}
