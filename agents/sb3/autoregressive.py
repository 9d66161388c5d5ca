"""An autoregressive action distribution for the painter, and the SB3 policy (PPO, A2C) that uses it.

SB3's ``MultiCategoricalDistribution`` picks ``(di, dj, k, b)`` independently, so it cannot say
"the best patch for the position I chose". :class:`AutoregressiveDistribution` samples, as the
project's RNN policy does,

    p(di, dj, k, b) = p(move) p(k | place) p(b | place, k)

with ``move = (di, dj)`` one choice of ``(2M+1)^2`` and ``place`` the cursor position the move
leads to: first the move, then the prototype given where it lands, then the level given the
prototype. Log-probabilities and the entropy are exact (the entropy sums the patch entropy of
every place, weighted by the probability of moving there).

:class:`PainterMultiInputPolicy` feeds it from the painter's observation: the move logits are
the best placement reward at each place (greedy search's score, ``decoders.kernel.placement_rewards``)
plus a learned term, the patch logits the placement rewards of every ``(k, b)`` at the place plus a
learned term. The two reward scales are learned, and moves that the canvas edge would clamp onto a
reachable position are masked (``painter_env.masks``), so each place has exactly one move. Its
untrained deterministic action is greedy search's; PPO learns from there. Usage::

    PPO(PainterMultiInputPolicy, env, policy_kwargs=painter_policy_kwargs(painter=env.unwrapped.painter))
"""

from __future__ import annotations

import math

import torch
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from decoders.kernel import CanvasGeometry, placement_rewards
from painter_env.masks import move_masks

NEGATIVE = -1e9  # the logit of a masked move: finite, so that 0 * log 0 stays 0 in the entropy


class AutoregressiveDistribution(MultiCategoricalDistribution):
    """``p(move) p(k | place(move)) p(b | place(move), k)`` over ``MultiDiscrete([n, n, K, L])``.

    ``proba_distribution((move_logits, patch_logits, place))`` takes ``move_logits`` ``(B, n*n)``
    over the moves ``di * n + dj``, ``patch_logits`` ``(B, Q, K, L)`` of the patch at each of Q
    places and ``place`` ``(B, n*n)`` long, the place each move leads to. ``mode()`` is the most
    likely move, then the most likely patch ``(k, b)`` there. (A subclass of SB3's
    ``MultiCategoricalDistribution`` so that SB3's policies build its head with
    ``proba_distribution_net``: the head comes from ``make_head(latent_dim)``.)
    """

    def __init__(self, action_dims: list[int], make_head=None):
        super().__init__(action_dims)
        self.moves, _, self.num_prototypes, self.num_levels = (int(n) for n in action_dims)
        self.make_head = make_head

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        if self.make_head is None:
            raise ValueError("AutoregressiveDistribution needs make_head to build its action head")
        return self.make_head(latent_dim)

    def proba_distribution(self, action_logits) -> AutoregressiveDistribution:
        move_logits, patch_logits, place = action_logits
        self.move_log_probs = move_logits.log_softmax(1)
        self.patch_log_probs = patch_logits.flatten(2).log_softmax(2)  # (B, Q, K*L): the patch (k, b) jointly
        self.place = place
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.long()
        move = actions[:, 0] * self.moves + actions[:, 1]
        patch = actions[:, 2] * self.num_levels + actions[:, 3]
        return self.move_log_probs.gather(1, move[:, None]).squeeze(1) + self._patch_log_prob(move, patch)

    def _patch_log_prob(self, move: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """``log p(k | place) + log p(b | place, k)``: the log-probability of the patch at the move's place."""
        place = self.place.gather(1, move[:, None]).squeeze(1)
        rows = torch.arange(len(move), device=move.device)
        return self.patch_log_probs[rows, place, patch]

    def entropy(self) -> torch.Tensor:
        move_probs = self.move_log_probs.exp()
        patch_entropy = -(self.patch_log_probs.exp() * self.patch_log_probs).sum(2)  # (B, Q)
        return -(move_probs * self.move_log_probs).sum(1) + (move_probs * patch_entropy.gather(1, self.place)).sum(1)

    def sample(self) -> torch.Tensor:
        move = torch.multinomial(self.move_log_probs.exp(), 1).squeeze(1)
        return self._action(move, lambda log_probs: torch.multinomial(log_probs.exp(), 1).squeeze(1))

    def mode(self) -> torch.Tensor:
        return self._action(self.move_log_probs.argmax(1), lambda log_probs: log_probs.argmax(1))

    def _action(self, move: torch.Tensor, pick) -> torch.Tensor:
        """``(B, 4)``: the move, and the patch that ``pick`` chooses from its place's log-probabilities."""
        place = self.place.gather(1, move[:, None]).squeeze(1)
        patch = pick(self.patch_log_probs[torch.arange(len(move), device=move.device), place])
        return torch.stack(
            [move // self.moves, move % self.moves, patch // self.num_levels, patch % self.num_levels], dim=1
        )

    def actions_from_params(self, action_logits, deterministic: bool = False) -> torch.Tensor:
        return self.proba_distribution(action_logits).get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits) -> tuple[torch.Tensor, torch.Tensor]:
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


class PainterAutoregressiveHead(nn.Module):
    """Latent ``[h | target | canvas | cursor]`` -> ``(move_logits, patch_logits, place)`` for
    :class:`AutoregressiveDistribution`; ``h`` is the policy network's output (``hidden_dim`` numbers).

    Move logits: ``exp(move_scale) * best placement reward at the place + Linear(h)``, clamped moves
    masked; patch logits: ``exp(patch_scale) * placement reward of (k, b) at the place + Linear(h)``.
    Rewards are divided by the target's blank-canvas SSE. The learned terms start near zero.
    """

    def __init__(
        self,
        hidden_dim: int,
        image_shape: tuple[int, int, int],
        geometry: CanvasGeometry,
        patch_values: torch.Tensor,
        patch_support: torch.Tensor,
        num_levels: int,
        scale: float,
    ):
        super().__init__()
        self.hidden_dim, self.image_shape, self.geometry = hidden_dim, tuple(image_shape), geometry
        self.register_buffer("patch_values", patch_values.detach().clone())
        self.register_buffer("patch_support", patch_support.detach().clone())
        self.num_levels = num_levels
        moves = geometry.num_moves
        self.move_net = nn.Linear(hidden_dim, moves * moves)
        self.patch_net = nn.Linear(hidden_dim, patch_values.shape[0])
        self.initial_log_scale = math.log(scale)
        self.log_move_scale = nn.Parameter(torch.tensor(self.initial_log_scale))
        self.log_patch_scale = nn.Parameter(torch.tensor(self.initial_log_scale))
        offsets = torch.arange(-geometry.move_radius, geometry.move_radius + 1)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, latent: torch.Tensor):
        pixels = math.prod(self.image_shape)
        hidden, target, canvas, cursor = latent.split([self.hidden_dim, pixels, pixels, 2], dim=1)
        batch, shape = latent.shape[0], (-1, *self.image_shape)
        cursor = cursor.long()
        with torch.no_grad():
            rewards = placement_rewards(
                target.view(shape), canvas.view(shape), self.patch_values, self.patch_support, self.geometry.patch_size
            )
            rewards = rewards / target.square().sum(1).clamp_min(1e-6)[:, None, None, None]
            rewards = rewards.flatten(2)  # (B, K*L, Q): the reward of each patch at each place
        place, allowed = self.places(cursor)
        best = rewards.amax(1).gather(1, place)
        move_logits = self.log_move_scale.exp() * best + self.move_net(hidden)
        move_logits = move_logits.masked_fill(~allowed, NEGATIVE)
        patch_logits = self.log_patch_scale.exp() * rewards.transpose(1, 2) + self.patch_net(hidden)[:, None, :]
        return (
            move_logits,
            patch_logits.view(batch, -1, self.patch_values.shape[0] // self.num_levels, self.num_levels),
            place,
        )

    def start_from_matched_filter(self) -> None:
        """Zero the learned terms and reset the scales: the deterministic action becomes greedy search's."""
        with torch.no_grad():
            for layer in (self.move_net, self.patch_net):
                layer.weight.zero_()
                layer.bias.zero_()
            self.log_move_scale.fill_(self.initial_log_scale)
            self.log_patch_scale.fill_(self.initial_log_scale)

    def places(self, cursor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, n*n)``: the place (``row * cols + col``) each move leads to from ``cursor`` ``(B, 2)``, and
        whether the move is allowed (not clamped by the canvas edge)."""
        geometry = self.geometry
        rows = (cursor[:, :1] + self.offsets).clamp(0, geometry.rows - 1)
        cols = (cursor[:, 1:] + self.offsets).clamp(0, geometry.cols - 1)
        place = (rows[:, :, None] * geometry.cols + cols[:, None, :]).flatten(1)
        row_ok, col_ok = move_masks(cursor, geometry)
        return place, (row_ok[:, :, None] & col_ok[:, None, :]).flatten(1)


class ObservationPassingMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` on the first ``features_dim`` features; the actor's latent also carries the
    ``observation_dim`` observation numbers that follow them (for :class:`PainterAutoregressiveHead`)."""

    def __init__(self, features_dim: int, observation_dim: int, net_arch, activation_fn, device):
        super().__init__()
        self.features_dim = features_dim
        self.mlp = MlpExtractor(features_dim, net_arch, activation_fn, device)
        self.latent_dim_pi = self.mlp.latent_dim_pi + observation_dim
        self.latent_dim_vf = self.mlp.latent_dim_vf

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        own, observation = features.split([self.features_dim, features.shape[1] - self.features_dim], dim=1)
        return torch.cat([self.mlp.forward_actor(own), observation], dim=1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_critic(features[:, : self.features_dim])


class PainterMultiInputPolicy(MultiInputActorCriticPolicy):
    """SB3's ``MultiInputPolicy`` (PPO, A2C) with :class:`AutoregressiveDistribution` and
    :class:`PainterAutoregressiveHead`. Needs ``agents.sb3.PainterExtractor`` with its matched-filter
    branch (``painter_policy_kwargs(painter=...)``), whose patches and scale the head uses."""

    def __init__(self, observation_space, action_space, lr_schedule, **kwargs):
        if len(getattr(action_space, "nvec", ())) != 4:
            raise ValueError(
                "PainterMultiInputPolicy needs the painter's MultiDiscrete([2M+1, 2M+1, K, L]) action, "
                f"got {action_space}"
            )
        extractor_kwargs = kwargs.get("features_extractor_kwargs") or {}
        if extractor_kwargs.get("patch_values") is None:
            raise ValueError(
                "PainterMultiInputPolicy scores placements with the painter's dictionary: "
                "pass policy_kwargs=painter_policy_kwargs(painter=...)"
            )
        kwargs["features_extractor_kwargs"] = {**extractor_kwargs, "append_observation": True}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        self.mlp_extractor = ObservationPassingMlpExtractor(
            self.features_dim - extractor.observation_dim,
            extractor.observation_dim,
            self.net_arch,
            self.activation_fn,
            self.device,
        )

    def _build(self, lr_schedule) -> None:
        extractor = self.features_extractor
        geometry = CanvasGeometry(
            extractor.image_shape[1], extractor.image_shape[2], extractor.patch_size, extractor.move_radius
        )

        def make_head(latent_dim: int) -> PainterAutoregressiveHead:
            return PainterAutoregressiveHead(
                latent_dim - extractor.observation_dim,
                extractor.image_shape,
                geometry,
                extractor.patch_values,
                extractor.patch_support,
                extractor.num_levels,
                extractor.matched_scale,
            )

        self.action_dist = AutoregressiveDistribution(list(self.action_space.nvec), make_head)
        super()._build(lr_schedule)
