"""The defaults the painter chooses from the data, checked against their neighbours on held-out images.

    python -m benchmarks.defaults --json defaults.json                              # shapes
    python -m benchmarks.defaults --dataset mnist --data-root DIR --split "test[:8000]" \\
        --eval-split "test[8000:]" --json defaults_mnist.json
    python -m benchmarks.defaults --dataset folder:../shared/data/cifar10/train --split "all[:4000]" \\
        --eval-split "all[4000:]" --json defaults_cifar10.json

For each program length of ``--steps``, the painter ``Painter-v0`` builds with no other setting
(``painter_env.defaults``: the background from the fit images' borders, the patch size R probed
with greedy search on fit images) is scored by greedy search with its k-means++ start dictionary
on ``--eval-images`` held-out images, and so is each variant that changes one choice: R - 2 ..
R + 2, the other background, and the half-canvas patch size ``T R^2 = H W / 2`` of earlier
versions. No training: the table checks the defaults themselves. Prints a markdown table and
writes ``--json``; Ctrl-C writes the rows done and exits 130.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from benchmarks.jobs import check_output, interrupted, setting_up, write_json
from decoders.greedy import greedy_programs
from painter_env.config import PainterConfig, build_painter, default_patch_size
from painter_env.datasets import load_images
from train.common.config import arg, parse_args
from train.common.run import DataArgs


@dataclass
class Args(DataArgs):
    steps: list = arg([8, 16, 32], "program lengths T to check", type=int, at_least=1)
    eval_images: int = arg(500, "held-out images scored per variant", type=int, at_least=1)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def score(config: PainterConfig, images: torch.Tensor) -> dict:
    """Greedy search's figures with the painter ``config`` builds (its start dictionary) on ``images``."""
    painter = build_painter(config)
    dictionary, geometry = painter.dictionary, painter.geometry
    with torch.no_grad():
        _, canvases = greedy_programs(images, dictionary, geometry, painter.max_steps)
    per_step = math.log2(geometry.num_moves**2 * dictionary.num_patches)
    return {
        "patch_size": geometry.patch_size,
        "background": painter.config.background,
        "bits_per_image": painter.max_steps * per_step + dictionary.background_bits,
        "sse": float((images - canvases).square().flatten(1).sum(1).mean()),
    }


def variants(chosen: PainterConfig, height: int, width: int) -> dict[str, dict]:
    """The changes of one choice each, as keyword overrides of the chosen configuration (none on
    ``shapes``: its scenes are drawn with the chosen patches on black, the ground truth)."""
    if chosen.dataset == "shapes":
        return {}
    size, steps = chosen.patch_size, chosen.max_steps
    changes = {f"R = {size + delta}": {"patch_size": size + delta} for delta in (-2, -1, 1, 2)}
    changes = {name: change for name, change in changes.items() if 1 <= change["patch_size"] <= min(height, width)}
    other = "black" if chosen.background == "border" else "border"
    changes[f"background {other}"] = {"background": other}
    changes["half-canvas R"] = {"patch_size": default_patch_size(height, width, steps)}
    return changes


def rows_for(args: Args, steps: int, images: torch.Tensor) -> list[dict]:
    """The chosen defaults at ``steps`` and their variants, scored."""
    base = PainterConfig(args.dataset, args.data_root, args.split, args.download, args.image_size, max_steps=steps)
    chosen = build_painter(dataclasses.replace(base, seed=args.seed)).config
    rows = [{"steps": steps, "variant": "chosen from the data", **score(chosen, images)}]
    for name, change in variants(chosen, *images.shape[-2:]).items():
        rows.append({"steps": steps, "variant": name, **score(dataclasses.replace(chosen, **change), images)})
    for row in rows:
        row["sse_over_chosen"] = row["sse"] / rows[0]["sse"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| T | variant | R | background | bits | SSE | SSE / chosen |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['steps']} | {row['variant']} | {row['patch_size']} | {row['background']} "
            f"| {row['bits_per_image']:.0f} | {row['sse']:.3f} | {row['sse_over_chosen']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with setting_up():
        check_output(args.json, "--json")
        if not args.steps:
            raise ValueError("argument --steps: give at least one program length")
        torch.set_num_threads(args.threads)
        load_images(args.dataset, args.split, args.data_root, args.download, args.image_size)  # fails now, not later
        images = load_images(args.dataset, args.eval_split, args.data_root, args.download, args.image_size).images
        images = images[: args.eval_images]
    result = {"dataset": args.dataset, "split": args.split, "eval_split": args.eval_split, "rows": []}
    try:
        for steps in tqdm(args.steps, desc="program lengths"):
            result["rows"] += rows_for(args, steps, images)
    except KeyboardInterrupt:
        interrupted(args.json, result, f"after {len(result['rows'])} rows")
    print(f"\nDefaults on {args.dataset}: fit {args.split}, greedy search on {len(images)} {args.eval_split} images\n")
    print(markdown(result["rows"]))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
