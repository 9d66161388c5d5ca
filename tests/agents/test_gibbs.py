"""Gibbs refinement of painter programs: exact conditionals, consistent moves, never worse."""

import torch

from agents.gibbs import positions_to_actions, program_sse, refine_programs
from decoders.dictionary import PatchDictionary
from decoders.greedy import greedy_programs, reachable
from decoders.kernel import CanvasGeometry, cursor_path, decode, ownership, patch_ids, placement_rewards


def conditional_rewards(targets, actions, step, values, support, num_levels, geometry):
    """Reference: the reward of every (patch, position) for ``step`` with the other steps fixed, from
    the decoded prefix and the ownership of the whole program (recomputed from scratch)."""
    canvas = decode(actions[:, :step], values, support, num_levels, geometry)
    owner, _ = ownership(actions, support, num_levels, geometry)
    visible = (owner <= step).to(targets.dtype).view(-1, 1, geometry.height, geometry.width)
    return placement_rewards(targets, canvas, values, support, geometry.patch_size, visible)


def reference_argmax_sweep(targets, actions, dictionary, geometry):
    """One sweep of coordinate ascent with every conditional recomputed from scratch."""
    values, support = dictionary.patches()
    levels = dictionary.num_levels
    path, ids = cursor_path(actions, geometry), patch_ids(actions, levels)
    start = torch.tensor(geometry.start).expand(actions.shape[0], 2)
    places = geometry.rows * geometry.cols
    for step in range(actions.shape[1]):
        program = positions_to_actions(path, ids, levels, geometry)
        rewards = conditional_rewards(targets, program, step, values, support, levels, geometry)
        allowed = reachable(path[:, step - 1] if step else start, geometry)
        if step + 1 < actions.shape[1]:
            allowed = allowed & reachable(path[:, step + 1], geometry)
        choice = rewards.masked_fill(~allowed.unsqueeze(1), float("-inf")).flatten(1).argmax(1)
        ids[:, step] = choice // places
        path[:, step] = torch.stack((choice % places // geometry.cols, choice % places % geometry.cols), dim=1)
    return positions_to_actions(path, ids, levels, geometry)


def tiny_setup(move_radius: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    geometry = CanvasGeometry(6, 6, 3, move_radius)
    mask = torch.rand(3, 1, 3, 3, generator=generator) > 0.3
    dictionary = PatchDictionary(
        torch.rand(3, 1, 3, 3, generator=generator),
        0.3 * torch.randn(3, 1, 3, 3, generator=generator),
        mask,
        num_levels=2,
    )
    targets = torch.rand(4, 1, 6, 6, generator=generator)
    moves = torch.randint(2 * move_radius + 1, (4, 5, 2), generator=generator)
    kinds = torch.randint(3, (4, 5, 1), generator=generator)
    levels = torch.randint(2, (4, 5, 1), generator=generator)
    return geometry, dictionary, targets, torch.cat([moves, kinds, levels], dim=-1)


def test_conditional_matches_brute_force_replacement():
    geometry, dictionary, targets, actions = tiny_setup(move_radius=3)
    values, support = dictionary.patches()
    path, ids = cursor_path(actions, geometry), patch_ids(actions, 2)
    for step in (0, 2, 4):
        rewards = conditional_rewards(targets, actions, step, values, support, 2, geometry)
        for image in range(2):
            brute = torch.empty(6, geometry.rows, geometry.cols)
            for patch in range(6):
                for i in range(geometry.rows):
                    for j in range(geometry.cols):
                        new_path, new_ids = path[image : image + 1].clone(), ids[image : image + 1].clone()
                        new_path[0, step] = torch.tensor([i, j])
                        new_ids[0, step] = patch
                        program = positions_to_actions(new_path, new_ids, 2, geometry)
                        brute[patch, i, j] = -program_sse(
                            targets[image : image + 1], program, values, support, 2, geometry
                        )[0]
            difference = rewards[image] - brute
            torch.testing.assert_close(difference, difference.mean().expand_as(difference), rtol=0, atol=1e-4)


def test_reexpressed_program_resolves_clamped_moves_identically():
    geometry = CanvasGeometry(8, 8, 3, 5)
    dictionary = PatchDictionary(torch.rand(2, 1, 3, 3), num_levels=1)
    values, support = dictionary.patches()
    actions = torch.tensor([[[0, 0, 0, 0], [0, 10, 1, 0], [10, 10, 0, 0], [10, 0, 1, 0]]])
    path = cursor_path(actions, geometry)
    assert path[0, 0].tolist() == [0, 0]
    rewritten = positions_to_actions(path, patch_ids(actions, 1), 1, geometry)
    assert not torch.equal(rewritten, actions)
    assert torch.equal(cursor_path(rewritten, geometry), path)
    torch.testing.assert_close(
        decode(rewritten, values, support, 1, geometry), decode(actions, values, support, 1, geometry)
    )


def test_refinement_with_short_moves_keeps_moves_valid_and_never_worsens():
    geometry, dictionary, targets, actions = tiny_setup(move_radius=1, seed=1)
    values, support = dictionary.patches()
    refined = refine_programs(
        targets,
        actions,
        dictionary,
        geometry,
        sweeps=3,
        beta_start=0.5,
        beta_end=50.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert refined.shape == actions.shape and refined.dtype == torch.long
    assert ((refined[..., :2] >= 0) & (refined[..., :2] <= 2)).all()
    start = torch.tensor(geometry.start).expand(4, 1, 2)
    path = cursor_path(refined, geometry)
    unclamped = torch.cat([start, path[:, :-1]], dim=1) + refined[..., :2] - geometry.move_radius
    assert torch.equal(path, unclamped)
    assert (
        program_sse(targets, refined, values, support, 2, geometry)
        <= program_sse(targets, actions, values, support, 2, geometry) + 1e-5
    ).all()


def test_refinement_improves_greedy_and_zero_sweeps_changes_nothing():
    geometry, dictionary, targets, _ = tiny_setup(move_radius=3, seed=2)
    values, support = dictionary.patches()
    greedy, _ = greedy_programs(targets, dictionary, geometry, steps=4)
    before = program_sse(targets, greedy, values, support, 2, geometry)
    same = refine_programs(targets, greedy, dictionary, geometry, sweeps=0)
    torch.testing.assert_close(program_sse(targets, same, values, support, 2, geometry), before)
    refined = refine_programs(
        targets, greedy, dictionary, geometry, sweeps=4, generator=torch.Generator().manual_seed(1)
    )
    after = program_sse(targets, refined, values, support, 2, geometry)
    assert (after <= before + 1e-5).all() and after.mean() < before.mean() - 1e-3


def test_an_incremental_sweep_makes_the_choices_of_conditionals_recomputed_from_scratch():
    for move_radius in (1, 3):
        geometry, dictionary, targets, actions = tiny_setup(move_radius=move_radius, seed=3)
        expected = reference_argmax_sweep(targets, actions, dictionary, geometry)
        # beta so large that the draw is the argmax: the sampler's choice is then deterministic
        swept = refine_programs(targets, actions, dictionary, geometry, sweeps=1, beta_start=1e6, beta_end=1e6)
        values, support = dictionary.patches()
        before = program_sse(targets, actions, values, support, 2, geometry)
        after = program_sse(targets, expected, values, support, 2, geometry)
        improved = after < before  # refine_programs keeps the input where the sweep did not improve it
        assert improved.any()
        assert torch.equal(swept[improved], expected[improved])
