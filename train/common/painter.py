"""The painter's flags, shared by the commands that paint (``train.reinforce``, ``train.sb3``,
``train.evaluate``): the action space, the program length and the start dictionary.

:func:`env_config` turns them into ``Painter-v0``'s keyword arguments; :func:`fit_action_space`
picks the program length T (and the move radius) for ``--match-bits``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from decoders.dictionary import PatchDictionary
from painter_env.config import PainterConfig, build_painter
from train.common.config import arg
from train.common.run import CommonArgs


@dataclass
class PainterArgs(CommonArgs):
    """The data and run flags of every trainer, and the painter's own."""

    steps: int = arg(None, "program length T (default: 8 on shapes, 16 otherwise)", type=int, at_least=1)
    match_bits: float = arg(
        None,
        "choose T so that the program's bits, T log2((2M+1)^2 K L), are closest to this (M: see --move-radius)",
        type=float,
        above=0,
    )
    patch_size: int = arg(
        None,
        "patch size R (default: the given dictionary's; shapes: its scenes'; else probed on the fit split)",
        type=int,
        at_least=1,
    )
    num_prototypes: int = arg(None, "K (default: 12 ground-truth shapes, else 32 k-means++)", type=int, at_least=1)
    num_levels: int = arg(None, "L, code levels per prototype (default 3)", type=int, at_least=1)
    move_radius: int = arg(
        None,
        "largest cursor move M (default: the whole canvas; with --match-bits, every position from the centre)",
        type=int,
        at_least=0,
    )
    support_threshold: float = arg(
        0.1, "k-means++ dictionaries: a prototype paints only where it is brighter than this (0: its whole square)"
    )
    dictionary: str = arg(None, "start from this dictionary file or checkpoint", type=str)
    background: str = arg(
        None,
        "the canvas starts black, or in each image's border colour (default: border if the fit images' borders are "
        "not black)",
        type=str,
        choices=("black", "border"),
    )


def env_config(args: PainterArgs, split: str, dictionary: PatchDictionary | None = None) -> PainterConfig:
    """``Painter-v0``'s keyword arguments for ``split``, with ``dictionary`` instead of ``--dictionary`` if given."""
    return PainterConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        split=split,
        download=args.download,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_prototypes=args.num_prototypes,
        num_levels=args.num_levels,
        move_radius=args.move_radius,
        max_steps=args.steps,
        dictionary=dictionary if dictionary is not None else args.dictionary,
        background=args.background,
        support_threshold=args.support_threshold,
        seed=args.seed,
    )


def fit_action_space(args: PainterArgs, dictionary: PatchDictionary | None = None) -> PainterArgs:
    """``args`` with ``steps`` and ``move_radius`` for ``--match-bits`` (unchanged without it, or
    when ``--steps`` is given): the program length T whose bits, T log2((2M+1)^2 K L) plus the
    background's, are closest to the budget (at least one step).

    M is ``--move-radius`` if given, else the smallest radius that reaches every position from the
    centre, where episodes start: the whole-canvas radius codes about four times as many moves as
    there are positions, so it spends about 2 bits per step on moves that clamp. The default patch
    size is chosen for T (``painter_env.defaults``) and the bits per step depend on the patch size,
    so T is found as a fixed point, starting from the dataset's default length.
    """
    if args.match_bits is None or args.steps is not None:
        return args
    steps, radius_for = None, {}
    while steps not in radius_for:
        painter = build_painter(env_config(dataclasses.replace(args, steps=steps), args.split, dictionary))
        move_radius = painter.geometry.centre_radius if args.move_radius is None else args.move_radius
        radius_for[steps] = move_radius
        per_step = math.log2((2 * move_radius + 1) ** 2 * painter.dictionary.num_patches)
        steps = max(1, round((args.match_bits - painter.dictionary.background_bits) / per_step))
    return dataclasses.replace(args, steps=steps, move_radius=radius_for[steps])
