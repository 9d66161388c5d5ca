"""The RNN encoder q_e(z|x): a recurrent policy that writes a painting program one action at a time.

Each step it looks at the residual x - c and the canvas through two cheap lenses, both laid out
on the grid of cursor positions (``rows x cols``):

- *matched filters*: the reward of painting every dictionary patch at every position (the
  kernel's ``placement_rewards`` identity, no gradient; ``agents.scorers`` keeps it up to date
  step by step). The encoder uses the decoder to compute the residual, and the greedy choice is
  easy to represent, so learning starts from a sensible policy;
- a small CNN over the residual and the canvas, average-pooled over each patch window, which
  lets the policy see beyond the immediate reward (what a stroke will occlude, what is left).

With ``passes`` > 1 the encoder plans: a first pass writes a draft, and each further pass
rewrites the previous pass's program step by step, scoring every stroke only on the pixels that
the draft's later strokes leave visible (``agents.scorers.make_scorer`` with a plan). That is the
conditional a Gibbs move uses, with the draft standing in for the rest of the program: the
encoder sees what its next strokes will occlude. Each pass is one forward pass per step; there is
no search.

A GRU carries the history (previous patch, cursor, step) into the decision. The action is
sampled autoregressively, as a local RNN encoder moves: the row move
``di``, then the column move ``dj`` given ``di``, then the prototype ``k`` and code ``b`` of the
patch at the new position (``k`` first, then ``b`` given ``k``). Every factor is a
``torch.distributions.Categorical``. Moves that the canvas edge would clamp onto an
already-reachable position get probability zero, so each position has exactly one action.

References:
    Xia et al., Deliberation Networks: Sequence Generation Beyond One-Pass
    Decoding, 2017 (a second decoding pass that reads the first pass's draft).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from agents.scorers import PlacementScorer, PlanScorer
from decoders.dictionary import PatchDictionary
from decoders.greedy import reachable
from decoders.kernel import CanvasGeometry, move_cursor

NEGATIVE = -1e9


@dataclass(frozen=True)
class PolicyConfig:
    """Shapes of the action space and sizes of the network (stored in checkpoints)."""

    channels: int
    height: int
    width: int
    patch_size: int
    move_radius: int
    num_prototypes: int
    num_levels: int
    hidden_size: int = 64
    feature_size: int = 16
    cnn_channels: int = 8
    score_scale: float = 50.0
    passes: int = 1

    def __post_init__(self):
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")

    @property
    def geometry(self) -> CanvasGeometry:
        return CanvasGeometry(self.height, self.width, self.patch_size, self.move_radius)

    @property
    def num_patches(self) -> int:
        return self.num_prototypes * self.num_levels

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepOutput:
    """One step of the policy: the action ``(B, 4)``, its log-probability, entropy and value ``(B,)``."""

    action: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor
    hidden: torch.Tensor


def _pick(logits: torch.Tensor, given: torch.Tensor | None, generator: torch.Generator | None):
    """Choose from ``Categorical(logits)`` (the given choice, or a sample); return it, its log-prob
    and the entropy."""
    dist = Categorical(logits=logits)
    if given is None:
        given = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
    return given, dist.log_prob(given), dist.entropy()


def _pick_pair(logits: torch.Tensor, given: tuple | None, mode: str, generator: torch.Generator | None):
    """Choose a pair (first, second) from joint logits ``(B, n1, n2)``, autoregressively: the first
    from its marginal, the second given the first. ``mode="greedy"`` takes the joint argmax (the
    most likely pair, which the two marginal argmaxes need not be)."""
    if given is None and mode == "greedy":
        best = logits.flatten(1).argmax(1)
        given = (best // logits.shape[2], best % logits.shape[2])
    rows = torch.arange(logits.shape[0], device=logits.device)
    first, first_log_prob, first_entropy = _pick(logits.logsumexp(2), None if given is None else given[0], generator)
    second, second_log_prob, second_entropy = _pick(logits[rows, first], None if given is None else given[1], generator)
    return first, second, first_log_prob + second_log_prob, first_entropy + second_entropy


class PainterPolicy(nn.Module):
    """Recurrent encoder: ``step`` maps (target, canvas, cursor, history) to the next action."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        c, f, hidden = config.channels, config.feature_size, config.hidden_size
        patches = config.num_patches
        # One R x R convolution: its output is already on the grid of cursor positions.
        self.residual_cnn = nn.Conv2d(2 * c, config.cnn_channels, config.patch_size)
        self.position_features = nn.Sequential(nn.Conv2d(1 + config.cnn_channels, f, 1), nn.ReLU())
        self.patch_embedding = nn.Embedding(patches + 1, 16)
        self.gru = nn.GRUCell(2 * f + 16 + 3, hidden)
        self.position_head = nn.Conv2d(f, 1, 1)
        self.position_film = nn.Linear(hidden, f)
        self.patch_head = nn.Sequential(nn.Linear(hidden + f, hidden), nn.ReLU(), nn.Linear(hidden, patches))
        self.value_head = nn.Linear(hidden, 1)
        # Inverse temperatures of the matched-filter logits (log-parametrised, learned). They start
        # at ``score_scale``: at the default 50 the untrained policy's most likely program is greedy
        # search's and its samples stay near it, so training improves on greedy rather than first
        # having to find it (starting at 4 on MNIST, the most likely program ended worse than greedy).
        start = torch.tensor(float(config.score_scale)).log()
        self.log_position_scale = nn.Parameter(start.clone())
        self.log_patch_scale = nn.Parameter(start.clone())

    def initial_state(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state ``(B, hidden)`` and "previous patch" (the start token) for a new episode."""
        hidden = torch.zeros(batch, self.config.hidden_size, device=device)
        return hidden, torch.full((batch,), self.config.num_patches, dtype=torch.long, device=device)

    def step(
        self,
        target: torch.Tensor,
        canvas: torch.Tensor,
        cursor: torch.Tensor,
        hidden: torch.Tensor,
        previous_patch: torch.Tensor,
        step_fraction: float,
        scorer: PlacementScorer | PlanScorer,
        action: torch.Tensor | None = None,
        mode: str = "sample",
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Choose (or, given ``action``, score) the next action for images ``(B, C, H, W)``.

        ``scorer`` (made once per episode by :func:`make_scorer` and told of every step with
        ``painted``) supplies the matched-filter rewards of ``canvas``, without gradient: the encoder
        treats the decoder as part of its input. ``mode`` is ``"sample"`` or ``"greedy"``.
        """
        if mode not in ("sample", "greedy"):
            raise ValueError(f"mode must be 'sample' or 'greedy', got {mode!r}")
        config, geometry = self.config, self.config.geometry
        batch = target.shape[0]
        with torch.no_grad():
            best = scorer.best().unsqueeze(1)
        residual = F.relu(self.residual_cnn(torch.cat([target - canvas, canvas], dim=1)))
        features = self.position_features(torch.cat([best / config.patch_size**2, residual], dim=1))

        history = torch.cat(
            [
                self.patch_embedding(previous_patch),
                cursor.float()
                / torch.tensor([max(geometry.rows - 1, 1), max(geometry.cols - 1, 1)], device=cursor.device),
                torch.full((batch, 1), step_fraction, device=cursor.device),
            ],
            dim=1,
        )
        global_features = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        hidden = self.gru(torch.cat([global_features, history], dim=1), hidden)

        # The 1x1 position head and the FiLM term in one weighted sum over the features.
        weights = self.position_film(hidden) + self.position_head.weight.view(1, -1)
        correction = (features * weights[:, :, None, None]).sum(1) + self.position_head.bias
        position_logits = self.log_position_scale.exp() * best.squeeze(1) + correction
        position_logits = position_logits.masked_fill(~reachable(cursor, geometry), NEGATIVE)
        given_position = given_patch = None
        if action is not None:  # a clamped move is scored as the position it reaches
            given_position = move_cursor(cursor, action[:, :2], geometry).unbind(1)
            given_patch = (action[:, 2], action[:, 3])
        row, col, position_log_prob, position_entropy = _pick_pair(position_logits, given_position, mode, generator)

        rows = torch.arange(batch, device=target.device)
        with torch.no_grad():
            patch_scores = scorer.at(row, col)
        patch_correction = self.patch_head(torch.cat([hidden, features[rows, :, row, col]], dim=1))
        patch_logits = self.log_patch_scale.exp() * patch_scores + patch_correction
        patch_logits = patch_logits.view(batch, config.num_prototypes, config.num_levels)
        k, b, patch_log_prob, patch_entropy = _pick_pair(patch_logits, given_patch, mode, generator)

        chosen = torch.stack(
            [row - cursor[:, 0] + geometry.move_radius, col - cursor[:, 1] + geometry.move_radius, k, b], dim=1
        )
        return StepOutput(
            action=chosen,
            log_prob=position_log_prob + patch_log_prob,
            entropy=position_entropy + patch_entropy,
            value=self.value_head(hidden).squeeze(1),
            hidden=hidden,
        )


def policy_for(geometry: CanvasGeometry, dictionary: PatchDictionary, **sizes) -> PainterPolicy:
    """A policy for a canvas geometry and a dictionary's shape; ``sizes`` override the network sizes
    (``hidden_size``, ``feature_size``, ``score_scale``, ``passes``, ...)."""
    config = PolicyConfig(
        dictionary.channels,
        geometry.height,
        geometry.width,
        geometry.patch_size,
        geometry.move_radius,
        dictionary.num_prototypes,
        dictionary.num_levels,
        **sizes,
    )
    return PainterPolicy(config)
