"""The painting kernel against a plain, obviously-correct reference of last-write-wins compositing."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.kernel import (
    CanvasGeometry,
    act_,
    cursor_path,
    decode,
    move_cursor,
    patch_ids,
    placement_rewards,
    position_index,
    table_on,
    window_index,
)
from tests.conftest import random_actions, random_dictionary


def reference_paint(target, dictionary, actions, geometry):
    """Pixel loops in Python: move, clamp, then copy the patch where its mask is set."""
    mean, basis, mask, levels = (
        t.detach().numpy() for t in (dictionary.mean, dictionary.basis, dictionary.mask, dictionary.levels)
    )
    canvases, rewards = [], []
    for image, program in zip(target.numpy(), actions.numpy()):
        canvas = np.zeros_like(image)
        row, col = geometry.start
        image_rewards = []
        for di, dj, k, b in program:
            row = min(max(row + di - geometry.move_radius, 0), geometry.rows - 1)
            col = min(max(col + dj - geometry.move_radius, 0), geometry.cols - 1)
            before = float(((image - canvas) ** 2).sum())
            patch = np.clip(mean[k] + levels[b] * basis[k], 0, 1)
            for y in range(geometry.patch_size):
                for x in range(geometry.patch_size):
                    if mask[k, 0, y, x]:
                        canvas[:, row + y, col + x] = patch[:, y, x]
            image_rewards.append(before - float(((image - canvas) ** 2).sum()))
        canvases.append(canvas)
        rewards.append(image_rewards)
    return torch.from_numpy(np.stack(canvases)), torch.tensor(rewards)


def paint_program(target, dictionary, actions, geometry):
    """Step the kernel through whole programs, as the environments do."""
    values, support = (tensor.detach() for tensor in dictionary.patches())
    canvas = torch.zeros_like(target).flatten(2)
    cursor = torch.tensor(geometry.start).repeat(target.shape[0], 1)
    rewards = []
    for t in range(actions.shape[1]):
        cursor, reward = act_(
            canvas, target.flatten(2), cursor, actions[:, t], values, support, dictionary.num_levels, geometry
        )
        rewards.append(reward)
    return canvas.view_as(target), torch.stack(rewards, 1)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(3, 10),
    width=st.integers(3, 10),
    patch=st.integers(1, 4),
    radius=st.integers(0, 4),
    channels=st.sampled_from([1, 3]),
    prototypes=st.integers(1, 4),
    levels=st.integers(1, 3),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_matches_reference_compositing(height, width, patch, radius, channels, prototypes, levels, steps, seed):
    patch = min(patch, height, width)
    generator = torch.Generator().manual_seed(seed)
    geometry = CanvasGeometry(height, width, patch, radius)
    dictionary = random_dictionary(prototypes, channels, patch, levels, generator)
    target = torch.rand(3, channels, height, width, generator=generator)
    actions = random_actions(3, steps, geometry, dictionary, generator)

    expected_canvas, expected_rewards = reference_paint(target, dictionary, actions, geometry)
    canvas, rewards = paint_program(target, dictionary, actions, geometry)
    values, support = dictionary.patches()
    decoded = decode(actions, values, support, dictionary.num_levels, geometry)

    torch.testing.assert_close(canvas, expected_canvas)
    torch.testing.assert_close(decoded.detach(), expected_canvas)
    torch.testing.assert_close(rewards, expected_rewards, atol=1e-4, rtol=1e-4)
    # the rewards telescope: their sum is the drop of the SSE from the blank canvas
    sse_drop = target.square().flatten(1).sum(1) - (target - canvas).square().flatten(1).sum(1)
    torch.testing.assert_close(rewards.sum(1), sse_drop, atol=1e-4, rtol=1e-4)


def test_act_paints_strided_images_like_contiguous_ones():
    """act_ honours any batch/channel strides and touches only the windows."""
    generator = torch.Generator().manual_seed(5)
    geometry = CanvasGeometry(9, 8, 3, 4)
    dictionary = random_dictionary(3, 2, 3, 2, generator)
    values, support = (tensor.detach() for tensor in dictionary.patches())
    storage = torch.rand(4, 3, 72, generator=generator)
    canvas = storage[::2, 1:]  # (2, 2, 72): every other image, two of three channels
    target = torch.rand(1, 2, 72, generator=generator).expand(2, -1, -1)  # one target for both canvases
    expected, expected_cursor = canvas.clone(), torch.tensor([[0, 5], [6, 0]])
    cursor = expected_cursor
    for actions in random_actions(2, 4, geometry, dictionary, generator).unbind(1):
        before = storage.clone()
        cursor, reward = act_(canvas, target, cursor, actions, values, support, 2, geometry)
        expected_cursor, expected_reward = act_(
            expected, target.contiguous(), expected_cursor, actions, values, support, 2, geometry
        )
        assert torch.equal(canvas, expected) and torch.equal(cursor, expected_cursor)
        torch.testing.assert_close(reward, expected_reward)
        untouched = torch.ones_like(storage, dtype=torch.bool)
        untouched[::2, 1:] = False
        assert torch.equal(storage[untouched], before[untouched])
    empty = act_(canvas[:0], target[:0], cursor[:0], actions[:0], values, support, 2, geometry)
    assert empty[0].shape == (0, 2) and empty[1].shape == (0,)


def test_decode_gradient_reaches_only_the_last_writer():
    generator = torch.Generator().manual_seed(0)
    geometry = CanvasGeometry(8, 8, 3, 5)
    dictionary = random_dictionary(3, 1, 3, 2, generator)
    target = torch.rand(4, 1, 8, 8, generator=generator)
    actions = random_actions(4, 5, geometry, dictionary, generator)

    values, support = dictionary.patches()
    loss = (target - decode(actions, values, support, 2, geometry)).square().sum()
    grads = torch.autograd.grad(loss, [dictionary.mean, dictionary.basis])

    # reference: differentiable out-of-place compositing, window by window
    values, support = dictionary.patches()
    canvas = torch.zeros(4, 1, 64)
    path = cursor_path(actions, geometry)
    ids = patch_ids(actions, 2)
    table = table_on(geometry, "cpu")
    for t in range(actions.shape[1]):
        index = window_index(table, position_index(path[:, t], geometry), 1)
        old = canvas.gather(2, index)
        canvas = canvas.scatter(2, index, torch.where(support[ids[:, t]].bool(), values[ids[:, t]], old))
    reference_loss = (target.flatten(2) - canvas).square().sum()
    reference_grads = torch.autograd.grad(reference_loss, [dictionary.mean, dictionary.basis])
    for got, expected in zip(grads, reference_grads):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("with_visibility", [False, True])
def test_placement_rewards_equal_painting_each_placement(with_visibility):
    generator = torch.Generator().manual_seed(1)
    geometry = CanvasGeometry(7, 6, 3, 6)
    dictionary = random_dictionary(2, 2, 3, 2, generator)
    target = torch.rand(2, 2, 7, 6, generator=generator)
    canvas = torch.rand(2, 2, 7, 6, generator=generator)
    visible = (torch.rand(2, 1, 7, 6, generator=generator) < 0.6).float() if with_visibility else None
    values, support = (t.detach() for t in dictionary.patches())

    scores = placement_rewards(target, canvas, values, support, 3, visible)

    weight = torch.ones(2, 1, 7, 6) if visible is None else visible
    still = geometry.move_radius  # the move component that leaves the cursor in place
    for patch in range(values.shape[0]):
        for row in range(geometry.rows):
            for col in range(geometry.cols):
                painted = canvas.clone().flatten(2)
                cursor = torch.tensor([[row, col]] * 2)
                actions = torch.tensor([[still, still, patch // 2, patch % 2]] * 2)
                act_(painted, target.flatten(2), cursor, actions, values, support, 2, geometry)
                before = ((target - canvas).square() * weight).flatten(1).sum(1)
                after = ((target - painted.view_as(target)).square() * weight).flatten(1).sum(1)
                torch.testing.assert_close(scores[:, patch, row, col], before - after, atol=1e-4, rtol=1e-4)


def test_cursor_moves_clamp_at_the_border_and_index_the_tables():
    geometry = CanvasGeometry(10, 12, 4, 3)
    cursor = torch.tensor([[0, 0], [6, 8], [3, 4], [6, 0]])
    move = torch.tensor([[0, 6], [6, 6], [2, 1], [3, 0]])
    moved = move_cursor(cursor, move, geometry)
    assert moved.tolist() == [[0, 3], [6, 8], [2, 2], [6, 0]]
    assert cursor.tolist() == [[0, 0], [6, 8], [3, 4], [6, 0]]  # the old cursor is left alone
    assert position_index(moved, geometry).tolist() == [3, 6 * 9 + 8, 2 * 9 + 2, 6 * 9]
    window = window_index(table_on(geometry, "cpu"), position_index(moved, geometry), 3)
    assert window.shape == (4, 3, 16) and window[1, 2, 0] == 6 * 12 + 8 and window[1, 2, -1] == 9 * 12 + 11
    assert patch_ids(torch.tensor([[0, 0, 2, 1], [5, 5, 0, 2]]), 3).tolist() == [7, 2]


@pytest.mark.parametrize(("height", "width", "patch"), [(28, 28, 5), (28, 28, 7), (10, 13, 3), (6, 6, 6)])
def test_centre_radius_is_the_smallest_that_reaches_every_position_from_the_start(height, width, patch):
    def reached(radius):
        geometry = CanvasGeometry(height, width, patch, radius)
        moves = torch.cartesian_prod(torch.arange(geometry.num_moves), torch.arange(geometry.num_moves))
        start = torch.tensor(geometry.start).expand(len(moves), 2)
        return len(set(map(tuple, move_cursor(start, moves, geometry).tolist())))

    radius = CanvasGeometry(height, width, patch, 0).centre_radius
    positions = (height - patch + 1) * (width - patch + 1)
    assert reached(radius) == positions
    assert radius == 0 or reached(radius - 1) < positions


def test_geometry_rejects_impossible_settings():
    with pytest.raises(ValueError, match="larger than the canvas"):
        CanvasGeometry(5, 5, 6, 1)
    with pytest.raises(ValueError, match="move_radius"):
        CanvasGeometry(5, 5, 2, -1)
