"""``Painter-v0``: explain an image by a short program of patch-painting actions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from decoders.kernel import act_
from painter_env.config import Painter, PainterConfig, build_painter
from painter_env.masks import action_masks
from painter_env.rendering import render_frame


def observation_space(painter: Painter) -> spaces.Dict:
    """One environment's observation space (also the batched env's ``single_observation_space``).

    Images are flat vectors of ``C*H*W`` floats (reshape with ``painter.image_shape``): SB3 warns
    about any image smaller than 36x36 or not uint8, and flat float vectors keep the exact values.
    """
    image = spaces.Box(0.0, 1.0, (int(np.prod(painter.image_shape)),), np.float32)
    return spaces.Dict(
        {
            "target": image,
            "canvas": image,
            # A Box, not MultiDiscrete: SB3 sizes a MultiDiscrete input by a numpy integer, which
            # torch's LSTM rejects (RecurrentPPO's MultiInputLstmPolicy).
            "cursor": spaces.Box(0, np.array([painter.geometry.rows - 1, painter.geometry.cols - 1]), (2,), np.int64),
            "step": spaces.Discrete(painter.max_steps + 1),
        }
    )


def action_space(painter: Painter) -> spaces.MultiDiscrete:
    """``MultiDiscrete([2M+1, 2M+1, K, L])``: move rows, move columns, prototype, code level."""
    moves = painter.geometry.num_moves
    return spaces.MultiDiscrete([moves, moves, painter.dictionary.num_prototypes, painter.dictionary.num_levels])


ACTION_COMPONENTS = ("di (row move)", "dj (column move)", "k (prototype)", "b (code level)")


def invalid_action_message(component: int, value: int, nvec: np.ndarray) -> str:
    return (
        f"action component {component} {ACTION_COMPONENTS[component]} = {value} is outside its allowed "
        f"range 0..{int(nvec[component]) - 1} (action space {list(map(int, nvec))})"
    )


class PainterEnv(gym.Env):
    """Paint an image with a short program of patches from a dictionary.

    ## Description
    The agent sees a target image and a canvas that starts blank. Each step it moves a cursor
    and paints one patch of a learned dictionary there: prototype k modulated by a quantised
    linear code b, last write wins inside the patch's support. An episode is a program of
    ``max_steps`` actions; the better the program, the closer the canvas to the target.

    ## Action Space
    ``MultiDiscrete([2M+1, 2M+1, K, L])``: ``(di, dj, k, b)``. The cursor (the patch's
    top-left corner) moves by ``(di - M, dj - M)``, clamped so the patch stays on the canvas;
    then patch ``(k, b)`` is painted. An action outside the space raises ``ValueError``.

    ## Observation Space
    ``Dict``: ``target`` and ``canvas`` ``Box(0, 1, (C*H*W,), float32)``, the images flattened
    (``env.unwrapped.painter.image_shape`` is ``(C, H, W)``); ``cursor``
    ``Box(0, (H-R, W-R), (2,), int64)``, the patch's top-left corner; ``step`` ``Discrete(max_steps + 1)``.

    ## Rewards
    The decrease of the squared error: ``||x - c_{t-1}||^2 - ||x - c_t||^2`` (pixels in [0, 1]).
    The rewards of an episode add up to ``sse_0 - sse_T``. ``info["sse"]`` is the current SSE
    (after reset: of the blank canvas). Computed from the painted window only, O(R^2) per step.

    ## Starting State
    A random image of the split (or ``options={"index": i}``), a blank canvas, the cursor in
    the middle of the canvas.

    ## Episode End
    No termination; truncated after ``max_steps`` steps.

    ## Arguments
    ``dataset`` ("shapes" default, "mnist", "fashion-mnist", "folder:PATH"), ``data_root``,
    ``split`` ("train", "test", "test[:8000]", ...), ``download``, ``image_size``,
    ``patch_size`` R (7), ``num_prototypes`` K (shapes: its 12 ground-truth shapes; other
    data: 32 by k-means++), ``num_levels`` L (3, or the given dictionary's), ``move_radius`` M (default: the whole
    canvas), ``max_steps`` (shapes 8, otherwise 16), ``dictionary`` (a saved dictionary, a
    training checkpoint, or a ``PatchDictionary``), ``max_shapes`` (shapes per scene, 4),
    ``seed`` (scenes and k-means), ``render_mode`` ("rgb_array").

    On ``shapes`` ``info["optimal_return"]`` is the return of the ground-truth program.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.painter = build_painter(PainterConfig(**kwargs))
        self.observation_space = observation_space(self.painter)
        self.action_space = action_space(self.painter)
        self._nvec = self.action_space.nvec
        self._bounds = self._nvec.tolist()
        self._geometry = self.painter.geometry
        self._images = self.painter.data.images.flatten(2)
        self._backgrounds = self.painter.dictionary.background_colours(self.painter.data.images)
        self.refresh_dictionary()
        self._levels = self.painter.dictionary.num_levels
        self._index = 0
        self._target = self._images[:1]
        self._canvas = torch.zeros_like(self._target)
        self._start = torch.tensor([self._geometry.start])
        self._cursor = self._start
        self._steps = 0
        self._sse = self._sse_start = 0.0

    def refresh_dictionary(self) -> None:
        """Re-read the dictionary's patches (call after training it in place)."""
        with torch.no_grad():
            values, support = self.painter.dictionary.patches()
        self._values, self._support = values.detach().cpu(), support.cpu()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        count = self._images.shape[0]
        index = options.get("index")
        if index is None:
            index = int(self.np_random.integers(count))
        elif not 0 <= int(index) < count:
            raise ValueError(f"options['index'] = {index} is outside the split's 0..{count - 1}")
        self._index = int(index)
        self._target = self._images[self._index : self._index + 1]
        self._canvas.copy_(self._backgrounds[self._index].view(1, -1, 1))
        self._cursor = self._start
        self._steps = 0
        residual = (self._target - self._canvas).numpy().astype(np.float64).ravel()
        self._sse = float(np.dot(residual, residual))
        self._sse_start = self._sse
        return self._observation(), self._info()

    def step(self, action):
        actions = torch.from_numpy(self._checked(action).reshape(1, 4))  # a batch of one
        self._cursor, reward = act_(
            self._canvas, self._target, self._cursor, actions, self._values, self._support, self._levels, self._geometry
        )
        reward = float(reward)
        self._steps += 1
        self._sse -= reward
        truncated = self._steps >= self.painter.max_steps
        return self._observation(), reward, False, truncated, self._info()

    def _checked(self, action) -> np.ndarray:
        """The action as an int64 array, after checking it against the action space.

        The bounds are compared as Python ints: for four numbers, a batch-of-one step spends over
        10% of its time in numpy's comparisons otherwise.
        """
        array = np.asarray(action)
        if array.shape != (4,) or array.dtype.kind not in "iu":
            raise ValueError(f"an action is 4 integers (di, dj, k, b), got {action!r}")
        for component, (value, bound) in enumerate(zip(array.tolist(), self._bounds)):
            if not 0 <= value < bound:
                raise ValueError(invalid_action_message(component, value, self._nvec))
        return array.astype(np.int64, copy=False)

    def _observation(self) -> dict:
        return {  # new arrays every step, as Gymnasium's checker asks
            "target": self._target.numpy().flatten(),
            "canvas": self._canvas.numpy().flatten(),
            "cursor": self._cursor.numpy().flatten(),
            "step": self._steps,
        }

    def _info(self) -> dict:
        info = {"sse": self._sse, "index": self._index}
        if self.painter.data.programs is not None:
            info["optimal_return"] = self._sse_start
        return info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        cursor = tuple(self._cursor[0].tolist()) if self._steps else None
        shape = self.painter.image_shape
        return render_frame(
            self._target.view(shape).numpy(), self._canvas.view(shape).numpy(), cursor, self._geometry.patch_size
        )

    def action_masks(self) -> np.ndarray:
        """``(2(2M+1) + K + L,)`` bool: the actions allowed now, one per reachable position, in the flat
        per-component layout of sb3-contrib's ``MaskablePPO`` (see ``painter_env.masks``)."""
        return action_masks(self._cursor, self._geometry, *self._bounds[2:])[0].numpy()
