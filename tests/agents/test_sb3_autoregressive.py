"""The autoregressive action distribution against brute-force enumeration, and the policy that uses it."""

import itertools

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO

from agents.sb3 import AutoregressiveDistribution, PainterMultiInputPolicy, PainterVecEnv, painter_policy_kwargs
from agents.sb3.algorithms import load_sb3_model
from agents.sb3.autoregressive import NEGATIVE
from agents.sb3.encoder import policy_programs
from agents.sb3.extractor import start_from_matched_filter
from decoders.greedy import greedy_programs
from decoders.kernel import decode
from train.common.metrics import sse_per_image

MOVES, PROTOTYPES, LEVELS, PLACES = 3, 2, 3, 4  # MultiDiscrete([3, 3, 2, 3]), moves landing on 4 places
SMALL = dict(image_size=10, patch_size=3, max_steps=3, max_shapes=2, move_radius=2, split="test")


def tiny_distribution(batch: int = 5, seed: int = 0):
    """Random logits; several moves share a place, and one move is masked, as at a canvas edge."""
    generator = torch.Generator().manual_seed(seed)
    move_logits = torch.randn(batch, MOVES * MOVES, generator=generator) * 2
    move_logits[:, 0] = NEGATIVE
    patch_logits = torch.randn(batch, PLACES, PROTOTYPES, LEVELS, generator=generator) * 2
    place = torch.randint(0, PLACES, (batch, MOVES * MOVES), generator=generator)
    params = (move_logits, patch_logits, place)
    return AutoregressiveDistribution([MOVES, MOVES, PROTOTYPES, LEVELS]).proba_distribution(params), params


def all_actions() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(MOVES), range(MOVES), range(PROTOTYPES), range(LEVELS))))


def brute_force_log_prob(params, batch_index: int, action) -> float:
    """log p(move) + log p(k | place) + log p(b | place, k), each factor from its own softmax."""
    move_logits, patch_logits, place = (tensor[batch_index] for tensor in params)
    di, dj, k, b = (int(value) for value in action)
    move = di * MOVES + dj
    patch = patch_logits[place[move]]
    log_p_move = move_logits.log_softmax(0)[move]
    log_p_k = patch.logsumexp(1).log_softmax(0)[k]
    log_p_b = patch[k].log_softmax(0)[b]
    return float(log_p_move + log_p_k + log_p_b)


def test_log_probs_are_the_product_of_the_three_conditionals_and_sum_to_one():
    distribution, params = tiny_distribution()
    actions = all_actions()
    for row in range(5):
        log_probs = distribution.proba_distribution(
            tuple(p[row : row + 1].expand(len(actions), *p.shape[1:]) for p in params)
        ).log_prob(actions)
        expected = torch.tensor([brute_force_log_prob(params, row, action) for action in actions])
        torch.testing.assert_close(log_probs, expected, rtol=0, atol=1e-5)
        assert float(log_probs.exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_entropy_equals_the_enumerated_entropy():
    distribution, params = tiny_distribution()
    entropy = distribution.entropy()
    actions = all_actions()
    for row in range(5):
        log_probs = torch.tensor([brute_force_log_prob(params, row, action) for action in actions])
        expected = -(log_probs.exp() * log_probs.clamp_min(-1e4)).sum()
        assert float(entropy[row]) == pytest.approx(float(expected), abs=1e-4)


def test_entropy_gradient_is_finite_with_masked_moves():
    _, (move_logits, patch_logits, place) = tiny_distribution()
    move_logits.requires_grad_()
    patch_logits.requires_grad_()
    distribution = AutoregressiveDistribution([MOVES, MOVES, PROTOTYPES, LEVELS])
    distribution.proba_distribution((move_logits, patch_logits, place)).entropy().sum().backward()
    assert bool(move_logits.grad.isfinite().all()) and bool(patch_logits.grad.isfinite().all())


def test_samples_follow_the_law_and_never_take_a_masked_move():
    distribution, params = tiny_distribution(batch=1, seed=1)
    draws = 20_000
    distribution.proba_distribution(tuple(p.expand(draws, *p.shape[1:]) for p in params))
    torch.manual_seed(0)
    samples = distribution.sample()
    assert not bool(((samples[:, 0] == 0) & (samples[:, 1] == 0)).any())  # move 0 is masked
    actions = all_actions()
    codes = samples @ torch.tensor([MOVES * PROTOTYPES * LEVELS, PROTOTYPES * LEVELS, LEVELS, 1])
    frequencies = torch.bincount(codes, minlength=len(actions)).double() / draws
    expected = torch.tensor([brute_force_log_prob(params, 0, action) for action in actions]).exp().double()
    # Binomial standard errors are at most 0.0036 with 20,000 draws: five of them.
    assert float((frequencies - expected).abs().max()) < 0.018


def test_mode_is_the_likeliest_move_then_the_likeliest_patch_there():
    distribution, (move_logits, patch_logits, place) = tiny_distribution()
    mode = distribution.mode()
    move = move_logits.argmax(1)
    assert torch.equal(mode[:, 0] * MOVES + mode[:, 1], move)
    patches = patch_logits[torch.arange(5), place.gather(1, move[:, None]).squeeze(1)].flatten(1)
    assert torch.equal(mode[:, 2] * LEVELS + mode[:, 3], patches.argmax(1))
    sampled, log_prob = distribution.log_prob_from_params((move_logits, patch_logits, place))
    torch.testing.assert_close(log_prob, distribution.log_prob(sampled))


def test_untrained_policy_paints_as_well_as_greedy_search_and_survives_save_load(tmp_path):
    venv = PainterVecEnv(8, horizon_is_terminal=True, **SMALL)
    painter = venv.painter
    kwargs = painter_policy_kwargs(cnn_features=32, channels=8, painter=painter, net_arch=dict(pi=[], vf=[16]))
    model = PPO(PainterMultiInputPolicy, venv, policy_kwargs=kwargs, n_steps=8, batch_size=64, seed=0)
    start_from_matched_filter(model.policy)
    targets = painter.data.images[:256]
    greedy, _ = greedy_programs(targets, painter.dictionary, painter.geometry, SMALL["max_steps"])
    values, support = painter.dictionary.patches()

    def sse(programs):
        canvases = decode(programs, values.detach(), support, painter.dictionary.num_levels, painter.geometry)
        return float(sse_per_image(targets, canvases).mean())

    # Greedy search's choices, up to ties between equally good placements (which may go either way).
    assert sse(policy_programs(model, targets, painter)) < 1.02 * sse(greedy)
    model.learn(128)
    model.save(tmp_path / "ppo.zip")
    loaded = load_sb3_model(tmp_path / "ppo.zip")
    assert isinstance(loaded.policy, PainterMultiInputPolicy)
    assert torch.equal(policy_programs(loaded, targets, painter), policy_programs(model, targets, painter))


def test_policy_needs_the_dictionary_and_runs_with_a2c():
    venv = PainterVecEnv(4, horizon_is_terminal=True, **SMALL)
    with pytest.raises(ValueError, match="painter_policy_kwargs\\(painter="):
        PPO(PainterMultiInputPolicy, venv, policy_kwargs=painter_policy_kwargs())
    kwargs = painter_policy_kwargs(cnn_features=16, channels=4, painter=venv.painter)
    model = A2C(PainterMultiInputPolicy, venv, policy_kwargs=kwargs, n_steps=4).learn(32)
    actions, _ = model.predict(venv.reset())
    assert np.all((actions >= 0) & (actions < venv.action_space.nvec))
