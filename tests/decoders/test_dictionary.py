"""The patch dictionary: data initialisation, patches, saving and loading."""

import pytest
import torch

from decoders.dictionary import PatchDictionary, code_levels, dictionary_from_images
from decoders.storage import atomic_save
from painter_env.datasets import load_images
from tests.conftest import random_dictionary


@pytest.fixture(scope="module")
def scenes():
    return load_images("shapes", "train[:300]").images


def test_kmeans_initialisation_is_deterministic_per_seed(scenes):
    first = dictionary_from_images(scenes, 8, 7, 3, seed=0)
    again = dictionary_from_images(scenes, 8, 7, 3, seed=0)
    other = dictionary_from_images(scenes, 8, 7, 3, seed=1)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.basis, again.basis)
    assert not torch.equal(first.mean, other.mean)
    assert first.num_prototypes == 8 and first.num_levels == 3 and torch.isfinite(first.basis).all()
    # prototypes are data patches' centres: non-empty, within the pixel range
    energy = first.mean.flatten(1).square().sum(1)
    assert (energy > 0).all() and first.mean.min() >= 0 and first.mean.max() <= 1


def test_patches_are_clamped_and_vanish_outside_the_support():
    dictionary = random_dictionary(3, 2, 4, 3, torch.Generator().manual_seed(0))
    values, support = dictionary.patches()
    assert values.shape == (9, 2, 16) and support.shape == (9, 1, 16)
    assert values.min() >= 0 and values.max() <= 1
    assert set(support.unique().tolist()) <= {0.0, 1.0} and (values * (1 - support) == 0).all()
    # row k*L + b is prototype k at level b
    expected = (dictionary.mean[1] + code_levels(3)[2] * dictionary.basis[1]).clamp(0, 1) * dictionary.mask[1]
    torch.testing.assert_close(values[1 * 3 + 2], expected.flatten(1))


def test_save_and_load_roundtrip_including_training_checkpoints(tmp_path):
    dictionary = random_dictionary(4, 1, 5, 2, torch.Generator().manual_seed(1))
    dictionary.save(tmp_path / "dictionary.pt")
    loaded = PatchDictionary.load(tmp_path / "dictionary.pt")
    for name, value in dictionary.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    atomic_save({"dictionary": dictionary.to_payload(), "iteration": 3}, tmp_path / "checkpoint.pt")
    assert torch.equal(PatchDictionary.load(tmp_path / "checkpoint.pt").mean, dictionary.mean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "dictionary.pt"]  # no temporaries left


def test_unreadable_dictionary_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        PatchDictionary.load(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt.pt"):
        PatchDictionary.load(tmp_path / "corrupt.pt")
    atomic_save({"something": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="does not hold a painter dictionary"):
        PatchDictionary.load(tmp_path / "foreign.pt")


def test_nan_prototypes_are_rejected():
    mean = torch.zeros(2, 1, 3, 3)
    mean[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        PatchDictionary(mean)


def test_ink_support_keeps_the_pixels_some_level_paints_and_never_empties_a_prototype():
    from decoders.dictionary import ink_support

    mean = torch.zeros(2, 1, 3, 3)
    basis = torch.zeros(2, 1, 3, 3)
    mean[0, 0, 1, 1], basis[0, 0, 0, 0] = 0.5, -0.3  # level -1 paints 0.3 at (0, 0)
    mean[1, 0, 2, 2] = 0.01  # faint: only its brightest pixel
    support = ink_support(mean, basis, 0.2)
    assert support[0, 0].nonzero().tolist() == [[0, 0], [1, 1]]
    assert support[1, 0].nonzero().tolist() == [[2, 2]]
