"""SB3's ``MultiCategorical`` action distribution in a few fused tensor ops, and the policy that uses it.

SB3's ``MultiCategoricalDistribution`` builds one ``torch.distributions.Categorical`` per action
component and samples, log-probs and entropies them one by one: for the painter's four
components ``(di, dj, k, b)`` that is most of a small policy's forward pass. Here the component
logits are gathered into one ``(B, D, max_n)`` tensor padded with ``-inf`` and every component is
handled at once. The distribution is the same (log-probs, entropies and modes agree with SB3's;
samples follow the same law, from another random stream).

Usage::

    PPO(PainterMultiInputPolicy, env, policy_kwargs=painter_policy_kwargs())
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import MultiInputActorCriticPolicy

from decoders.sampling import FLOOR_NATS, sample_categorical


class FusedMultiCategoricalDistribution(MultiCategoricalDistribution):
    """``MultiCategoricalDistribution(action_dims)`` with all components in one padded tensor.

    ``self.log_probs`` ``(B, D, max_n)`` holds each component's normalised log-probabilities
    (``-inf`` past a component's size); ``self.distribution`` (SB3's list of ``Categorical``) is not
    built.
    """

    def __init__(self, action_dims: list[int]):
        super().__init__(action_dims)
        dims = torch.as_tensor([int(n) for n in action_dims])
        width = int(dims.max())
        starts = torch.cumsum(dims, 0) - dims
        slot = torch.arange(width)
        # index[d, j] = column of component d's j-th logit, or the extra -inf column past its size.
        self.index = torch.where(slot < dims[:, None], starts[:, None] + slot, int(dims.sum()))
        self.log_probs: torch.Tensor | None = None

    def proba_distribution(self, action_logits: torch.Tensor) -> FusedMultiCategoricalDistribution:
        if self.index.device != action_logits.device:
            self.index = self.index.to(action_logits.device)
        padded = F.pad(action_logits, (0, 1), value=float("-inf"))
        logits = padded.index_select(1, self.index.view(-1)).view(len(padded), *self.index.shape)  # (B, D, max_n)
        self.log_probs = logits.log_softmax(-1)
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(2, actions.long().unsqueeze(2)).squeeze(2).sum(1)

    def entropy(self) -> torch.Tensor:
        # As Categorical.entropy, 0 * log 0 counts as 0: log-probabilities are floored at -FLOOR_NATS,
        # where p * log p (under 1.4e-36) vanishes next to any entropy in float32. Categorical floors them
        # at the dtype's minimum instead, whose exp (as that of -inf) takes the CPU's slow path: a
        # third of the entropy's forward and backward time in a PPO minibatch.
        log_probs = self.log_probs.clamp(min=-FLOOR_NATS)
        return -(log_probs * log_probs.exp()).sum((1, 2))

    def sample(self) -> torch.Tensor:
        # The project's exact inverse-CDF sampler: one uniform per component, never a -inf entry.
        return sample_categorical(self.log_probs, normalized=True)

    def mode(self) -> torch.Tensor:
        return self.log_probs.argmax(2)


class PainterMultiInputPolicy(MultiInputActorCriticPolicy):
    """SB3's ``MultiInputPolicy`` (PPO, A2C) whose ``MultiDiscrete`` action distribution is
    :class:`FusedMultiCategoricalDistribution`; other action spaces are left to SB3."""

    def _build(self, lr_schedule) -> None:
        if type(self.action_dist) is MultiCategoricalDistribution:
            self.action_dist = FusedMultiCategoricalDistribution(self.action_dist.action_dims)
        super()._build(lr_schedule)
