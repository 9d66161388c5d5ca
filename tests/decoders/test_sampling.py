"""The categorical sampler draws from softmax(logits) exactly (chi-square) and the schedule anneals."""

import math

import pytest
import torch
from scipy.stats import chisquare

from decoders.sampling import beta_schedule, sample_categorical

DRAWS = 40000


def per_entry_sampler(probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A tempting sampler: one uniform per entry compared with the cumulative sum."""
    cumulative = probabilities.cumsum(-1)
    _, index = (torch.rand(probabilities.shape, generator=generator) >= cumulative).max(-1)
    return index


@pytest.mark.parametrize("normalized", [False, True])
def test_frequencies_match_softmax_chi_square(normalized):
    logits = torch.tensor([0.0, 1.0, -1.0, 2.5, 0.3, -3.0])
    given = logits.log_softmax(0) if normalized else logits
    generator = torch.Generator().manual_seed(0)
    draws = sample_categorical(given.expand(DRAWS, -1), generator, normalized=normalized)
    counts = torch.bincount(draws, minlength=6).double()
    expected = torch.softmax(logits.double(), 0) * DRAWS
    assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3


def test_a_per_entry_sampler_is_biased_ours_is_not():
    """The same chi-square test rejects the per-entry sampler on a uniform distribution."""
    probabilities = torch.full((DRAWS, 8), 1 / 8)
    expected = [DRAWS / 8] * 8
    generator = torch.Generator().manual_seed(1)
    seed_counts = torch.bincount(per_entry_sampler(probabilities, generator), minlength=8)
    assert chisquare(seed_counts.numpy(), expected).pvalue < 1e-6
    ours = torch.bincount(sample_categorical(probabilities.log(), generator), minlength=8)
    assert chisquare(ours.numpy(), expected).pvalue > 1e-3


@pytest.mark.parametrize("normalized", [False, True])
def test_minus_infinity_never_drawn_and_rows_independent(normalized):
    logits = torch.tensor([[0.0, float("-inf"), 0.0], [float("-inf"), float("-inf"), 5.0]])
    logits = logits.log_softmax(1) if normalized else logits
    kept = logits.clone()
    generator = torch.Generator().manual_seed(2)
    draws = sample_categorical(logits.repeat(5000, 1), generator, normalized=normalized).view(5000, 2)
    assert torch.equal(logits, kept)
    assert (draws[:, 0] != 1).all() and (draws[:, 1] == 2).all()
    share = (draws[:, 0] == 0).double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 5000)


def test_peaked_logits_do_not_overflow_and_input_is_kept():
    logits = torch.tensor([[1e4, 0.0, -1e4, 1e4 - 1.0]])
    kept = logits.clone()
    generator = torch.Generator().manual_seed(3)
    draws = sample_categorical(logits.expand(20000, -1), generator)
    assert torch.equal(logits, kept)
    share = (draws == 0).double().mean().item()
    expected = 1 / (1 + math.exp(-1.0))
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 20000)
    assert set(draws.unique().tolist()) <= {0, 3}


def test_sampler_rejects_empty_rows():
    with pytest.raises(ValueError):
        sample_categorical(torch.zeros(3, 0))


def test_beta_schedule_is_geometric():
    betas = beta_schedule(1.0, 100.0, 3)
    assert betas == pytest.approx([1.0, 10.0, 100.0])
    assert beta_schedule(1.0, 5.0, 1) == [5.0]
    with pytest.raises(ValueError):
        beta_schedule(0.0, 1.0, 3)
