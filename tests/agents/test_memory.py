"""The program memory: the best of what it holds and the candidates, by SSE under the current dictionary."""

import torch

from agents.gibbs import program_sse
from agents.memory import ProgramMemory
from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry
from tests.conftest import random_actions, random_dictionary

GEOMETRY = CanvasGeometry(6, 6, 3, 2)


def _setup(seed=0):
    generator = torch.Generator().manual_seed(seed)
    dictionary = random_dictionary(3, 1, 3, 2, generator)
    targets = torch.rand(5, 1, 6, 6, generator=generator)
    candidates = random_actions(5 * 3, 4, GEOMETRY, dictionary, generator).view(5, 3, 4, 4)
    return dictionary, targets, candidates


def _sse(targets, programs, dictionary: PatchDictionary):
    values, support = dictionary.patches()
    return program_sse(targets, programs, values.detach(), support, dictionary.num_levels, GEOMETRY)


def test_an_empty_memory_returns_the_best_candidate():
    dictionary, targets, candidates = _setup()
    memory = ProgramMemory(10, 4)
    index = torch.tensor([7, 2, 0, 9, 4])
    best, sse = memory.best(index, targets, candidates, dictionary, GEOMETRY)
    every = torch.stack([_sse(targets, candidates[:, c], dictionary) for c in range(3)], 1)
    torch.testing.assert_close(sse, every.min(1).values)
    assert torch.equal(best, candidates[torch.arange(5), every.argmin(1)])


def test_a_remembered_program_is_kept_until_a_candidate_beats_it():
    dictionary, targets, candidates = _setup(1)
    memory = ProgramMemory(5, 4)
    index = torch.arange(5)
    first, first_sse = memory.best(index, targets, candidates, dictionary, GEOMETRY)
    memory.store(index, first)
    worse = candidates[:, :1].flip(0)  # other images' programs: some better, some worse
    second, second_sse = memory.best(index, targets, worse, dictionary, GEOMETRY)
    assert (second_sse <= first_sse + 1e-6).all()
    kept = _sse(targets, worse[:, 0], dictionary) >= first_sse
    assert kept.any() and torch.equal(second[kept], first[kept])


def test_store_keeps_the_last_program_of_a_repeated_image_and_round_trips():
    memory = ProgramMemory(4, 2)
    programs = torch.arange(3 * 2 * 4).view(3, 2, 4)
    memory.store(torch.tensor([1, 3, 1]), programs)
    assert torch.equal(memory.programs[1], programs[2]) and torch.equal(memory.programs[3], programs[1])
    assert memory.filled.tolist() == [False, True, False, True]
    copy = ProgramMemory(4, 2)
    copy.load_state_dict(memory.state_dict())
    assert torch.equal(copy.programs, memory.programs) and torch.equal(copy.filled, memory.filled)
