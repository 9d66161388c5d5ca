"""Image sets for the painter: ``shapes`` (built in), ``mnist``, ``fashion-mnist``, ``cifar10`` and
``folder:PATH``.

:func:`load_images` returns an :class:`ImageSet` of float images in [0, 1], shape
``(N, C, S, S)``, for a split such as ``"train"``, ``"test"``, ``"test[:8000]"`` or
``"test[8000:]"`` (a folder has the single split ``"all"``). MNIST and Fashion-MNIST are read
from their IDX files, CIFAR-10 with torchvision's ``CIFAR10`` (``download=True`` fetches either);
a folder holds images of any size and mode, resized to ``image_size`` (default: their own size,
when they all share one square size). Loaded sets are cached per process, so many environments
share one copy.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from painter_env import shapes

DATASETS = ("shapes", "mnist", "fashion-mnist", "cifar10", "folder:PATH")
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_PREFIXES = {"train": "train", "test": "t10k"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLIT_PATTERN = re.compile(r"^(?P<base>[a-z]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
DEFAULT_DATA_ROOT = os.environ.get("PAINTER_DATA_ROOT", "data")


@dataclass(frozen=True)
class ImageSet:
    """Images ``(N, C, S, S)`` in [0, 1]; for ``shapes`` also the ground-truth programs.

    ``programs`` are absolute rows ``(i, j, k, b)`` (cursor position, prototype, level) of
    length ``max_shapes``, padded by repeating the last row; ``lengths`` gives the true lengths.
    """

    name: str
    split: str
    images: torch.Tensor
    programs: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def parse_split(split: str) -> tuple[str, slice]:
    """``"test[8000:]"`` -> ``("test", slice(8000, None))``; a clear error for anything else."""
    match = SPLIT_PATTERN.match(str(split).strip())
    if match is None:
        raise ValueError(f"bad split {split!r}: expected a name with an optional slice, e.g. 'test' or 'test[:8000]'")
    start, stop = match["start"], match["stop"]
    return match["base"], slice(int(start) if start else None, int(stop) if stop else None)


def load_images(
    dataset: str = "shapes",
    split: str = "train",
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
    patch_size: int | None = None,
    num_levels: int = 3,
    max_shapes: int = 4,
    seed: int = 0,
) -> ImageSet:
    """Load (or generate) one split of a dataset; see the module docstring for names and splits."""
    base, window = parse_split(split)
    root = str(Path(data_root if data_root is not None else DEFAULT_DATA_ROOT).expanduser())
    if dataset == "shapes":  # generated on demand: only the scenes of the slice
        if base not in shapes.SPLIT_SIZES:
            raise ValueError(f"shapes has splits {sorted(shapes.SPLIT_SIZES)}, not {base!r}")
        indices = range(shapes.SPLIT_SIZES[base])[window]
        full, window = (
            _shapes(base, indices, image_size or 28, patch_size or 7, num_levels, max_shapes, seed),
            slice(None),
        )
    elif dataset in IDX_FOLDERS:
        full = _idx_dataset(dataset, base, root, download, image_size)
    elif dataset == "cifar10":
        full = _cifar10(base, root, download, image_size)
    elif dataset.startswith("folder:"):
        full = _folder(dataset.removeprefix("folder:"), base, image_size)
    else:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    images = full.images[window]
    if images.shape[0] == 0:
        raise ValueError(f"split {split!r} of {dataset!r} is empty ({len(full)} images before slicing)")
    programs = None if full.programs is None else full.programs[window]
    lengths = None if full.lengths is None else full.lengths[window]
    return ImageSet(dataset, split, images, programs, lengths)


@lru_cache(maxsize=16)
def _shapes(
    base: str, indices: range, image_size: int, patch_size: int, num_levels: int, max_shapes: int, seed: int
) -> ImageSet:
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
    if patch_size > image_size:
        raise ValueError(f"patch_size {patch_size} is larger than image_size {image_size}")
    if len(indices) == 0:
        return ImageSet("shapes", base, torch.zeros(0, 1, image_size, image_size))
    images, programs, lengths = shapes.make_scenes(indices, base, seed, image_size, patch_size, num_levels, max_shapes)
    return ImageSet("shapes", base, images, programs, lengths)


def _find_idx_file(root: Path, folder: str, prefix: str) -> Path | None:
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    for directory in (root, root / folder / "raw", root / folder, root / "raw"):
        for name in names:
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def _read_idx(path: Path) -> torch.Tensor:
    """Read an IDX image file (gz or not) with torchvision's reader."""
    from torchvision.datasets.mnist import read_image_file

    try:
        if path.suffix != ".gz":
            return read_image_file(str(path))
        with tempfile.TemporaryDirectory() as scratch:
            plain = Path(scratch) / path.stem
            plain.write_bytes(gzip.decompress(path.read_bytes()))
            return read_image_file(str(plain))
    except (OSError, EOFError, AssertionError, RuntimeError, ValueError, gzip.BadGzipFile) as error:
        raise ValueError(f"corrupt or unreadable IDX file {path}: {error!r}") from error


@lru_cache(maxsize=8)
def _idx_dataset(dataset: str, base: str, root: str, download: bool, image_size: int | None) -> ImageSet:
    if base not in IDX_PREFIXES:
        raise ValueError(f"{dataset} has splits 'train' and 'test', not {base!r}")
    folder, prefix = IDX_FOLDERS[dataset], IDX_PREFIXES[base]
    path = _find_idx_file(Path(root), folder, prefix)
    if path is None and download:
        from torchvision import datasets

        reader = datasets.MNIST if dataset == "mnist" else datasets.FashionMNIST
        reader(root, train=base == "train", download=True)
        path = _find_idx_file(Path(root), folder, prefix)
    if path is None:
        raise FileNotFoundError(
            f"{dataset} {base} images not found under {root!r}: put {prefix}-images-idx3-ubyte(.gz) in "
            f"{root}/ or {root}/{folder}/raw/, or pass download=True (--download) to fetch them there"
        )
    raw = _read_idx(path)
    if raw.dim() != 3:
        raise ValueError(f"{path} holds tensors of shape {tuple(raw.shape)}, not a stack of images")
    images = raw.unsqueeze(1).float() / 255.0
    return ImageSet(dataset, base, checked(_resize(images, image_size), str(path)))


@lru_cache(maxsize=4)
def _cifar10(base: str, root: str, download: bool, image_size: int | None) -> ImageSet:
    from torchvision.datasets import CIFAR10

    if base not in IDX_PREFIXES:
        raise ValueError(f"cifar10 has splits 'train' and 'test', not {base!r}")
    try:
        dataset = CIFAR10(root, train=base == "train", download=download)
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"cifar10 not found under {root!r} (it looks for {root}/cifar-10-batches-py): pass download=True "
            f"(--download) to fetch it there ({error})"
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).float() / 255.0
    return ImageSet("cifar10", base, checked(_resize(images, image_size), root))


@lru_cache(maxsize=4)
def _folder(path: str, base: str, image_size: int | None) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    if base != "all":
        raise ValueError(f"a folder dataset has the single split 'all' (slice it, e.g. 'all[:800]'), not {base!r}")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {directory}")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as picture:
                pictures.append(
                    picture.convert("RGB") if picture.mode not in ("L", "1", "I;16") else picture.convert("L")
                )
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {file}: {error}") from error
    mode = "L" if all(p.mode == "L" for p in pictures) else "RGB"
    if image_size is None:
        sizes = {p.size for p in pictures}
        if len(sizes) > 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            raise ValueError(
                f"the images in {directory} are not all of one square size ({', '.join(map(str, sorted(sizes)[:3]))}"
                f"{', ...' if len(sizes) > 3 else ''}): give image_size (--image-size S) to resize them to S x S"
            )
        image_size = next(iter(sizes))[0]
    size = (image_size, image_size)
    from torchvision.transforms.functional import pil_to_tensor

    tensors = [pil_to_tensor(p.convert(mode).resize(size, Image.Resampling.BILINEAR)) for p in pictures]
    return ImageSet(f"folder:{path}", base, checked(torch.stack(tensors).float() / 255.0, str(directory)))


def _resize(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or image_size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True).clamp(0, 1)


def checked(images: torch.Tensor, where: str) -> torch.Tensor:
    """``images`` if every pixel is finite; otherwise ``ValueError`` naming the first bad image.

    Called once per loaded dataset (loads are cached), not per environment.
    """
    finite = torch.isfinite(images).flatten(1).all(1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise ValueError(f"{where}: image {first} contains NaN or infinite pixels")
    return images
