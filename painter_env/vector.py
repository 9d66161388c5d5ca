"""The natively batched ``Painter-v0``: N painters as torch tensors, one kernel call per step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from decoders.kernel import act_
from painter_env.config import PainterConfig, build_painter, device_of
from painter_env.env import action_space, invalid_action_message, observation_space
from painter_env.masks import action_masks
from painter_env.rendering import render_frame


class PainterVectorEnv(VectorEnv):
    """``gymnasium.make_vec("Painter-v0", num_envs=N, **kwargs)``: N painters batched in torch.

    Takes the single env's keyword arguments plus ``num_envs``, ``device`` ("cpu" or "cuda"),
    ``autoreset_mode`` (``AutoresetMode.NEXT_STEP``, Gymnasium's default, or ``SAME_STEP``),
    ``copy_observations`` and ``render_mode``.

    Steps take actions ``(N, 4)`` as a torch tensor (or anything ``torch.as_tensor`` reads) and
    return torch tensors on ``device``: observations (a dict like the single env's: flat images
    ``(N, C*H*W)``, reshape with ``painter.image_shape``), rewards
    ``(N,)`` float32, terminations and truncations ``(N,)`` bool, and ``info["sse"]`` ``(N,)``.
    Numpy actions are accepted too.

    Observations are the env's own buffers, not copies, so that a step costs O(N R^2) whatever
    the image size: they are valid until the next ``step``/``reset``. Clone what you keep
    (or pass ``copy_observations=True``). With ``SAME_STEP`` autoreset the final observations in
    ``info["final_obs"]`` are copies.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy_observations: bool = False,
        render_mode: str | None = None,
        **kwargs: Any,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported: use NEXT_STEP or SAME_STEP")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = render_mode
        self.num_envs = num_envs
        self.device = device_of(device)
        self.copy_observations = copy_observations
        self.painter = build_painter(PainterConfig(**kwargs))
        self.single_observation_space = observation_space(self.painter)
        self.single_action_space = action_space(self.painter)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._geometry = self.painter.geometry
        self._nvec = torch.as_tensor(self.single_action_space.nvec, device=self.device)
        self._lowest_action, self._highest_action = torch.zeros_like(self._nvec), self._nvec - 1
        self._images = self.painter.data.images.flatten(2).to(self.device)
        # Each image's background colour (None: black, every canvas starts at zero).
        dictionary = self.painter.dictionary
        self._backgrounds = None
        if dictionary.background_levels:
            self._backgrounds = dictionary.background_colours(self.painter.data.images).to(self.device)
        backgrounds = 0.0 if self._backgrounds is None else self._backgrounds.unsqueeze(-1)
        self._image_sse = (self._images - backgrounds).flatten(1).square().sum(1)  # SSE of the start canvas
        self._levels = self.painter.dictionary.num_levels
        self.refresh_dictionary()
        channels, pixels = self._images.shape[1:]
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
        self._index = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._target = torch.zeros(num_envs, channels, pixels, device=self.device)
        self._canvas = torch.zeros_like(self._target)
        self._start = torch.tensor(self._geometry.start, device=self.device)
        self._cursor = self._start.repeat(num_envs, 1)
        self._steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._sse = torch.zeros(num_envs, device=self.device)
        self._optimal = torch.zeros(num_envs, device=self.device)
        self._needs_reset: torch.Tensor | None = None  # NEXT_STEP autoreset: the envs to start over at the next step
        self._no_termination = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._image_shape = (num_envs,) + self.single_observation_space["target"].shape  # flat images

    def refresh_dictionary(self) -> None:
        """Re-read the dictionary's patches (call after training it in place)."""
        with torch.no_grad():
            values, support = self.painter.dictionary.patches()
        self._values, self._support = values.detach().to(self.device), support.to(self.device)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every env, or those in ``options["reset_mask"]`` (Gymnasium's partial reset).

        ``options["indices"]`` picks the images (one per reset env) instead of drawing them.
        """
        if seed is not None:
            first = seed[0] if isinstance(seed, (list, tuple)) else seed
            self._generator.manual_seed(int(first))
        options = options or {}
        mask = options.get("reset_mask")
        mask = torch.ones(self.num_envs, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (self.num_envs,) or not bool(mask.any()):
            raise ValueError(f"reset_mask must be {self.num_envs} booleans, at least one True")
        self._reset_envs(mask.to(self.device), options.get("indices"))
        return self._observation(), {"sse": self._sse.clone(), **self._optimal_info()}

    def _reset_envs(self, which: torch.Tensor, indices: torch.Tensor | None = None) -> None:
        """Start new episodes in the envs ``which`` (a bool mask), on images ``indices`` or random ones."""
        rows = None if bool(which.all()) else which.nonzero().squeeze(1)
        count = self.num_envs if rows is None else rows.numel()
        if indices is None:
            indices = torch.randint(self._images.shape[0], (count,), generator=self._generator, device=self.device)
        else:
            indices = torch.as_tensor(indices, device=self.device).long()
            if indices.shape != (count,) or (indices < 0).any() or (indices >= self._images.shape[0]).any():
                raise ValueError(f"indices must be {count} image numbers in 0..{self._images.shape[0] - 1}")
        sse = self._image_sse.index_select(0, indices)
        if rows is None:  # the usual case: episodes have one length, so all envs end together
            torch.index_select(self._images, 0, indices, out=self._target)
            if self._backgrounds is None:
                self._canvas.zero_()
            else:
                self._canvas.copy_(self._start_canvas(indices))
            self._cursor.copy_(self._start.expand_as(self._cursor))
            self._steps.zero_()
            for buffer, values in ((self._index, indices), (self._sse, sse), (self._optimal, sse)):
                buffer.copy_(values)
            self._needs_reset = None
            return
        self._target.index_copy_(0, rows, self._images.index_select(0, indices))
        if self._backgrounds is None:
            self._canvas.index_fill_(0, rows, 0.0)
        else:
            self._canvas.index_copy_(0, rows, self._start_canvas(indices))
        self._cursor.index_copy_(0, rows, self._start.expand(count, 2).contiguous())
        self._steps.index_fill_(0, rows, 0)
        for buffer, values in ((self._index, indices), (self._sse, sse), (self._optimal, sse)):
            buffer.index_copy_(0, rows, values)
        if self._needs_reset is not None:
            self._needs_reset.index_fill_(0, rows, False)

    def _start_canvas(self, indices: torch.Tensor) -> torch.Tensor:
        """``(n, C, H*W)``: the start canvases (in their background colours) of images ``indices``."""
        colours = self._backgrounds.index_select(0, indices).unsqueeze(-1)
        return colours.expand(-1, -1, self._images.shape[-1]).contiguous()

    def step(self, actions):
        actions = self._checked(actions)
        if self._needs_reset is not None:  # NEXT_STEP autoreset: these envs start over instead of painting
            resetting, self._needs_reset = self._needs_reset, None
            self._reset_envs(resetting)
            reward = self._paint(actions, ~resetting)
        else:
            reward = self._paint(actions)
        truncated = self._steps >= self.painter.max_steps
        info = {"sse": self._sse.clone(), **self._optimal_info()}
        if bool(truncated.any()):
            self._end_episodes(truncated, info)
        return self._observation(), reward, self._no_termination.clone(), truncated, info

    def _end_episodes(self, ended: torch.Tensor, info: dict) -> None:
        """Autoreset the envs ``ended``: with SAME_STEP now (their last observations go to ``info``),
        with NEXT_STEP at the next step."""
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            info["final_obs"] = self._observation(force_copy=True)
            info["final_info"] = {"sse": info["sse"].clone(), **self._optimal_info()}
            info["_final_obs"] = ended.clone()
            self._reset_envs(ended)
        else:
            self._needs_reset = ended.clone()  # a copy: the caller owns the returned one

    def _paint(self, actions: torch.Tensor, painting: torch.Tensor | None = None) -> torch.Tensor:
        """One kernel call for the envs ``painting`` (a bool mask; all by default, as except at an
        autoreset), which then count a step."""
        if painting is None:
            reward = self._paint_rows(actions, self._canvas, self._target, self._cursor, self._sse)
            self._steps += 1
            return reward
        reward = torch.zeros(self.num_envs, device=self.device)
        if not bool(painting.any()):
            return reward
        rows = painting.nonzero().squeeze(1)
        canvas, cursor, sse = self._canvas[rows], self._cursor[rows], self._sse[rows]
        reward[rows] = self._paint_rows(actions[rows], canvas, self._target[rows], cursor, sse)
        self._canvas[rows], self._cursor[rows], self._sse[rows] = canvas, cursor, sse
        self._steps += painting
        return reward

    def _paint_rows(self, actions, canvas, target, cursor, sse) -> torch.Tensor:
        moved, reward = act_(canvas, target, cursor, actions, self._values, self._support, self._levels, self._geometry)
        cursor.copy_(moved)
        sse -= reward
        return reward

    def _checked(self, actions) -> torch.Tensor:
        actions = torch.as_tensor(actions, device=self.device)
        if actions.shape != (self.num_envs, 4) or actions.is_floating_point() or actions.is_complex():
            raise ValueError(
                f"actions must be integers of shape ({self.num_envs}, 4), got {actions.dtype} {tuple(actions.shape)}"
            )
        actions = actions.long()
        if not torch.equal(actions.clamp(min=self._lowest_action, max=self._highest_action), actions):
            bad = (actions < 0) | (actions >= self._nvec)
            env, component = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"env {env}: "
                + invalid_action_message(component, int(actions[env, component]), self.single_action_space.nvec)
            )
        return actions

    def _observation(self, force_copy: bool = False) -> dict:
        observation = {
            "target": self._target.view(self._image_shape),
            "canvas": self._canvas.view(self._image_shape),
            "cursor": self._cursor,
            "step": self._steps,
        }
        if self.copy_observations or force_copy:
            observation = {key: value.clone() for key, value in observation.items()}
        return observation

    def _optimal_info(self) -> dict:
        if self.painter.data.programs is None:
            return {}
        return {"optimal_return": self._optimal.clone()}

    def render(self):
        """Frames (target | canvas | residual) of the first few envs, as a tuple of RGB arrays."""
        if self.render_mode != "rgb_array":
            return None
        frames = []
        for env in range(min(self.num_envs, 4)):
            target = self._target[env].view(self.painter.image_shape).cpu().numpy()
            canvas = self._canvas[env].view(self.painter.image_shape).cpu().numpy()
            cursor = tuple(self._cursor[env].tolist()) if int(self._steps[env]) else None
            frames.append(render_frame(target, canvas, cursor, self._geometry.patch_size))
        return tuple(frames)

    def action_masks(self) -> torch.Tensor:
        """``(N, 2(2M+1) + K + L)`` bool: each env's allowed actions, one per reachable position, in the
        flat per-component layout of sb3-contrib's ``MaskablePPO`` (see ``painter_env.masks``)."""
        return action_masks(self._cursor, self._geometry, *self.single_action_space.nvec[2:].tolist())
