"""Bad input gets a clear error at ``make`` or ``step``, never a silent clamp."""

import gymnasium
import numpy as np
import pytest
import torch

import painter_env  # noqa: F401
from decoders.dictionary import PatchDictionary
from tests.conftest import SMALL_SHAPES


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patch_size=30), "larger than"),
        (dict(image_size=10, patch_size=11), "larger than"),
        (dict(num_prototypes=0), "num_prototypes"),
        (dict(num_levels=0), "num_levels"),
        (dict(move_radius=-1), "move_radius"),
        (dict(max_steps=0), "max_steps"),
        (dict(dataset="cifar"), "unknown dataset"),
        (dict(split="tset"), "shapes has splits"),
        (dict(split="train[1:x]"), "bad split"),
        (dict(split="train[5:5]"), "empty"),
        (dict(num_levels=2, dictionary="__object__"), "num_levels=2 conflicts"),
    ],
)
def test_impossible_arguments_raise_value_error_at_make(kwargs, message, tmp_path):
    if kwargs.get("dictionary") == "__object__":
        kwargs["dictionary"] = gymnasium.make("Painter-v0", **SMALL_SHAPES).unwrapped.painter.dictionary
        kwargs.update(image_size=12, patch_size=5)
    for make in (gymnasium.make, lambda name, **kw: gymnasium.make_vec(name, num_envs=2, **kw)):
        with pytest.raises(ValueError, match=message):
            make("Painter-v0", **kwargs)


def test_dictionary_that_does_not_fit_the_data(tmp_path):
    PatchDictionary(torch.rand(3, 1, 4, 4)).save(tmp_path / "small.pt")
    with pytest.raises(ValueError, match="4x4 patches but the data needs"):
        gymnasium.make("Painter-v0", dictionary=str(tmp_path / "small.pt"), patch_size=7)
    adopted = gymnasium.make("Painter-v0", dictionary=str(tmp_path / "small.pt"))  # no patch_size: the dictionary's
    assert adopted.unwrapped.painter.geometry.patch_size == 4
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="broken.pt"):
        gymnasium.make("Painter-v0", dictionary=str(tmp_path / "broken.pt"))


@pytest.mark.parametrize("component", range(4))
@pytest.mark.parametrize("offset", [-1, 0])
def test_out_of_range_actions_name_the_component(component, offset):
    env = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    env.reset(seed=0)
    action = np.zeros(4, dtype=np.int64)
    action[component] = -1 if offset < 0 else env.action_space.nvec[component]
    with pytest.raises(
        ValueError, match=rf"component {component} .*allowed range 0\.\.{env.action_space.nvec[component] - 1}"
    ):
        env.step(action)
    batched = gymnasium.make_vec("Painter-v0", num_envs=3, **SMALL_SHAPES)
    batched.reset(seed=0)
    actions = torch.zeros(3, 4, dtype=torch.long)
    actions[1] = torch.as_tensor(action)
    with pytest.raises(ValueError, match=rf"env 1: action component {component}"):
        batched.step(actions)


def test_malformed_actions_are_rejected():
    env = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    env.reset(seed=0)
    for action in ([0, 0, 0], [0.5, 0, 0, 0], "left"):
        with pytest.raises(ValueError, match="4 integers"):
            env.step(action)
    batched = gymnasium.make_vec("Painter-v0", num_envs=3, **SMALL_SHAPES)
    batched.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        batched.step(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        batched.step(torch.zeros(3, 4))


def test_bad_vector_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        gymnasium.make_vec("Painter-v0", num_envs=0, **SMALL_SHAPES)
    with pytest.raises(ValueError, match="DISABLED"):
        gymnasium.make_vec("Painter-v0", num_envs=2, autoreset_mode="Disabled", **SMALL_SHAPES)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            gymnasium.make_vec("Painter-v0", num_envs=2, device="cuda", **SMALL_SHAPES)
    env = gymnasium.make_vec("Painter-v0", num_envs=2, **SMALL_SHAPES)
    with pytest.raises(ValueError, match="indices"):
        env.reset(options={"indices": torch.tensor([0, 10**6])})
    single = gymnasium.make("Painter-v0", **SMALL_SHAPES)
    with pytest.raises(ValueError, match="index"):
        single.reset(options={"index": -1})
