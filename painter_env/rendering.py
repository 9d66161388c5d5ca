"""Pictures of painting: target | canvas | residual frames, tiled rollouts and animated GIFs."""

from __future__ import annotations

import io

import numpy as np

GAP = 4
WINDOW_COLOUR = (255, 210, 0)
CURSOR_COLOUR = (0, 220, 90)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    image = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    return (image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def _residual_rgb(target: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """Signed residual: red where ink is missing (target > canvas), blue where there is too much."""
    residual = np.clip(np.asarray(target, np.float32) - np.asarray(canvas, np.float32), -1, 1).mean(axis=0)
    rgb = np.zeros(residual.shape + (3,), np.float32)
    rgb[..., 0] = np.clip(residual, 0, 1)
    rgb[..., 2] = np.clip(-residual, 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _outline(panel: np.ndarray, top: int, left: int, size: int, colour, thickness: int) -> None:
    bottom, right = top + size, left + size
    panel[top : top + thickness, left:right] = colour
    panel[bottom - thickness : bottom, left:right] = colour
    panel[top:bottom, left : left + thickness] = colour
    panel[top:bottom, right - thickness : right] = colour


def render_frame(
    target: np.ndarray,
    canvas: np.ndarray,
    cursor: tuple[int, int] | None,
    patch_size: int,
    scale: int = 8,
) -> np.ndarray:
    """One RGB frame ``(H*s, 3*W*s + 2*GAP, 3)``: target | canvas | residual, enlarged ``scale`` times.

    The last painted window (at the cursor) is outlined on each panel, the cursor corner marked.
    """
    panels = [_to_rgb(target), _to_rgb(canvas), _residual_rgb(target, canvas)]
    panels = [np.kron(p, np.ones((scale, scale, 1), np.uint8)) for p in panels]
    if cursor is not None:
        top, left = int(cursor[0]) * scale, int(cursor[1]) * scale
        thickness = max(1, scale // 4)
        for panel in panels:
            _outline(panel, top, left, patch_size * scale, WINDOW_COLOUR, thickness)
            panel[top : top + 2 * thickness, left : left + 2 * thickness] = CURSOR_COLOUR
    height = panels[0].shape[0]
    gap = np.full((height, GAP, 3), 64, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def tile_frames(frames: list[np.ndarray], columns: int = 1) -> np.ndarray:
    """Stack frames of equal size into a grid (rows of ``columns``), separated by GAP pixels."""
    height, width = frames[0].shape[:2]
    rows = -(-len(frames) // columns)
    grid = np.full((rows * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), 32, np.uint8)
    for index, frame in enumerate(frames):
        row, col = divmod(index, columns)
        grid[
            row * (height + GAP) : row * (height + GAP) + height, col * (width + GAP) : col * (width + GAP) + width
        ] = frame
    return grid


def gif_bytes(frames: list[np.ndarray], frame_seconds: float = 0.4, hold_last: int = 3) -> bytes:
    """Encode RGB frames as a looping animated GIF with Pillow (the last frame held a little longer)."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to encode")
    pictures = [Image.fromarray(np.asarray(frame, np.uint8)) for frame in frames]
    pictures += [pictures[-1]] * hold_last
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=int(frame_seconds * 1000),
        loop=0,
        optimize=False,
    )
    return buffer.getvalue()
