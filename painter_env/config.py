"""Keyword arguments of ``Painter-v0``, validated once and turned into data, dictionary and geometry.

Shared by the single env and the batched env so that both accept exactly the same arguments
and build exactly the same painter. Images and data-initialised dictionaries are cached per
process: a thousand environments share one copy.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from decoders.dictionary import PatchDictionary, dictionary_from_images
from decoders.kernel import CanvasGeometry
from painter_env.datasets import DATASETS, ImageSet, load_images
from painter_env.defaults import BACKGROUND_LEVELS, background_levels, probe_patch_size
from painter_env.shapes import SHAPE_NAMES, shapes_dictionary

DEFAULT_PROTOTYPES = 32
DEFAULT_LEVELS = 3
DEFAULT_STEPS = {"shapes": 8}
DEFAULT_STEPS_OTHER = 16
DEFAULT_SUPPORT_THRESHOLD = 0.1
SHAPES_IMAGE_SIZE = 28


@dataclass(frozen=True)
class PainterConfig:
    """The environment's keyword arguments (see ``PainterEnv``'s docstring for their meaning)."""

    dataset: str = "shapes"
    data_root: str | None = None
    split: str = "train"
    download: bool = False
    image_size: int | None = None
    patch_size: int | None = None
    num_prototypes: int | None = None
    num_levels: int | None = None
    move_radius: int | None = None
    max_steps: int | None = None
    dictionary: str | os.PathLike | PatchDictionary | None = None
    background: str | None = None
    max_shapes: int = 4
    support_threshold: float = DEFAULT_SUPPORT_THRESHOLD
    seed: int = 0

    def __post_init__(self):
        _require_int("max_shapes", self.max_shapes, minimum=1)
        for name, minimum in (
            ("patch_size", 1),
            ("image_size", 1),
            ("num_prototypes", 1),
            ("num_levels", 1),
            ("move_radius", 0),
            ("max_steps", 1),
        ):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name), minimum=minimum)
        if self.image_size is not None and self.patch_size is not None and self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        if self.background not in (None, "black", "border"):
            raise ValueError(
                f"background must be 'black', 'border' or None (chosen from the data), got {self.background!r}"
            )
        if not 0.0 <= self.support_threshold < 1.0:
            raise ValueError(f"support_threshold must be in [0, 1), got {self.support_threshold!r}")
        if self.dataset not in DATASETS[:-1] and not str(self.dataset).startswith("folder:"):
            raise ValueError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}")

    def to_dict(self) -> dict:
        """The arguments as plain values (a dictionary object is not included)."""
        values = asdict(self)
        if isinstance(self.dictionary, PatchDictionary):
            values["dictionary"] = None
        return values


def _require_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class Painter:
    """Everything an environment needs: the images, the dictionary, the geometry, the horizon."""

    config: PainterConfig
    data: ImageSet
    dictionary: PatchDictionary
    geometry: CanvasGeometry
    max_steps: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (observations carry them flattened)."""
        return tuple(self.data.images.shape[1:])


def default_patch_size(height: int, width: int, steps: int) -> int:
    """The patch size R of ``shapes`` scenes: the T strokes of a program together cover about half
    the canvas, ``T R^2 ~ H W / 2``."""
    return max(1, min(height, width, round(math.sqrt(height * width / (2 * steps)))))


def build_painter(config: PainterConfig) -> Painter:
    """Load the data, resolve the dictionary and the geometry; ``ValueError`` on impossible settings.

    The painter's ``config`` holds the resolved values: ``max_steps``, ``patch_size`` (from the
    given dictionary, else chosen from the data by ``painter_env.defaults``) and ``background``
    are never None there.
    """
    steps = config.max_steps or DEFAULT_STEPS.get(config.dataset, DEFAULT_STEPS_OTHER)
    given = given_dictionary(config)
    patch_size = config.patch_size or (given.patch_size if given is not None else None)
    if patch_size is None and config.dataset == "shapes":  # the scenes are painted with patches of this size
        size = config.image_size or SHAPES_IMAGE_SIZE
        patch_size = default_patch_size(size, size, steps)
    data = load_images(
        config.dataset,
        config.split,
        config.data_root,
        config.download,
        config.image_size,
        patch_size,
        config.num_levels or DEFAULT_LEVELS,
        config.max_shapes,
        config.seed,
    )
    height, width = data.images.shape[-2:]
    if given is None and config.background is None:  # the shapes' ground truth paints on black
        bordered = not ground_truth(config) and background_levels(data.images)
        config = dataclasses.replace(config, background="border" if bordered else "black")
    if patch_size is None:
        patch_size, _ = probe_patch_size(
            data.images,
            steps,
            config.num_prototypes or DEFAULT_PROTOTYPES,
            config.num_levels or DEFAULT_LEVELS,
            config.support_threshold,
            config.seed,
            BACKGROUND_LEVELS if config.background == "border" else 0,
        )
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} is larger than the images ({height}x{width})")
    config = dataclasses.replace(config, patch_size=patch_size, max_steps=steps)
    dictionary = given if given is not None else data_dictionary(config, data)
    check_dictionary(config, data, dictionary)
    config = dataclasses.replace(config, background="border" if dictionary.background_levels else "black")
    move_radius = max(height, width) - patch_size if config.move_radius is None else config.move_radius
    geometry = CanvasGeometry(height, width, patch_size, move_radius)
    return Painter(config, data, dictionary, geometry, steps)


def given_dictionary(config: PainterConfig) -> PatchDictionary | None:
    """The ``dictionary`` argument as an object (loaded from its file), or None."""
    if config.dictionary is None or isinstance(config.dictionary, PatchDictionary):
        return config.dictionary
    return PatchDictionary.load(config.dictionary)


def ground_truth(config: PainterConfig) -> bool:
    """Whether the painter paints ``shapes`` with the dictionary that drew them."""
    return config.dataset == "shapes" and config.num_prototypes in (None, len(SHAPE_NAMES))


def data_dictionary(config: PainterConfig, data: ImageSet) -> PatchDictionary:
    """The ground-truth shapes, or k-means++ over patches of the data."""
    if ground_truth(config):
        return shapes_dictionary(config.patch_size, config.num_levels or DEFAULT_LEVELS, data.channels)
    background = BACKGROUND_LEVELS if config.background == "border" else 0
    payload = _kmeans_payload(
        data.images,
        config.patch_size,
        config.num_prototypes or DEFAULT_PROTOTYPES,
        config.num_levels or DEFAULT_LEVELS,
        config.support_threshold,
        config.seed,
        background,
    )
    return PatchDictionary.from_payload(payload)


def check_dictionary(config: PainterConfig, data: ImageSet, dictionary: PatchDictionary) -> None:
    if dictionary.patch_size != config.patch_size or dictionary.channels != data.channels:
        raise ValueError(
            f"the dictionary has {dictionary.channels}-channel {dictionary.patch_size}x{dictionary.patch_size} "
            f"patches but the data needs {data.channels}-channel {config.patch_size}x{config.patch_size} patches"
        )
    background = "border" if dictionary.background_levels else "black"
    for name, wanted, actual in (
        ("num_prototypes", config.num_prototypes, dictionary.num_prototypes),
        ("num_levels", config.num_levels, dictionary.num_levels),
        ("background", config.background, background),
    ):
        if wanted is not None and wanted != actual:
            raise ValueError(f"{name}={wanted} conflicts with the dictionary, which has {actual}")


@lru_cache(maxsize=8)
def _kmeans_payload(
    images: torch.Tensor,
    patch_size: int,
    num_prototypes: int,
    num_levels: int,
    threshold: float,
    seed: int,
    background: int,
) -> dict:
    """k-means++ dictionary of a (cached, hence identical) image tensor; each env gets its own copy."""
    dictionary = dictionary_from_images(
        images, num_prototypes, patch_size, num_levels, seed, 20000, threshold, background
    )
    return dictionary.to_payload()


def device_of(device: str | torch.device | None) -> torch.device:
    """``torch.device`` with a clear error for an unavailable CUDA device."""
    try:
        device = torch.device(device or "cpu")
    except RuntimeError as error:  # an unknown device name
        raise ValueError(f"unknown device {device!r}: use cpu or cuda ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine")
    return device
