"""Training and encoding cost per image against image size: 28x28 grayscale, 32x32 colour, 64x64 colour.

    python -m benchmarks.image_cost --mnist-root DIR --cifar-folder ../shared/data/cifar10/train \\
        --json image_cost.json

Each configuration trains ``train.reinforce`` for ``--iterations`` iterations (one thread, T =
``--steps``) and scores its policy on ``--eval-images`` held-out images, then greedy search on them
(``train.evaluate``); the figures are the trainer's training images per second and the encoders'
images per second. Each configuration runs at the patch size its data chooses and at a fixed
``--patch-size`` (the cost of a step depends on R, and the chosen R grows with the image), so the
growth with the number of pixels can be read at both. Configurations alternate ``--repeats``
times; the table gives medians, and the cost per image relative to the first configuration beside
the ratio of their pixel counts (values: H W C). Prints a markdown table and writes ``--json``;
Ctrl-C writes the rows done and exits 130.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import train.evaluate as evaluate
import train.reinforce as reinforce
from benchmarks.jobs import check_output, ctrl_c_of_commands, interrupted, setting_up, write_json
from painter_env.datasets import load_images
from train.common.config import arg, parse_args


@dataclass
class Args:
    mnist_root: str = arg("../shared/data/mnist", "folder of the MNIST files (28x28 grayscale)")
    cifar_folder: str = arg("../shared/data/cifar10/train", "folder of colour pictures (32x32, also scaled to 64)")
    steps: int = arg(16, "program length T of every configuration", at_least=1)
    patch_size: int = arg(8, "the fixed patch size of the second row of each configuration", at_least=1)
    iterations: int = arg(30, "training iterations timed per run", at_least=1)
    fit_images: int = arg(1000, "images of each fit split (the patch size is probed on them)", at_least=1)
    eval_images: int = arg(256, "held-out images encoded per run", at_least=1)
    repeats: int = arg(3, "alternating rounds (medians are reported)", at_least=1)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def configurations(args: Args) -> dict[str, list[str]]:
    """Name -> the data flags of train.reinforce."""
    fit = f"[:{args.fit_images}]"
    cifar = ["--dataset", f"folder:{args.cifar_folder}", "--split", f"all{fit}", "--eval-split", "all[4000:]"]
    return {
        "28x28 gray": [
            "--dataset",
            "mnist",
            "--data-root",
            args.mnist_root,
            "--split",
            f"test{fit}",
            "--eval-split",
            "test[8000:]",
        ],
        "32x32 colour": [*cifar, "--image-size", "32"],
        "64x64 colour": [*cifar, "--image-size", "64"],
    }


def measure(args: Args, data: list[str], patch: list[str], workdir: Path, name: str) -> dict:
    """One run: training images/s, then the policy's and greedy search's encoding images/s."""
    flags = ["--steps", str(args.steps), "--threads", "1", "--curve-every", "0", "--run-name", name, "--minutes", "0"]
    flags += ["--logdir", str(workdir / "runs"), "--checkpoint-dir", str(workdir / "checkpoints")]
    flags += ["--iterations", str(args.iterations), "--eval-images", str(args.eval_images)]
    trained = reinforce.main([*data, *patch, *flags])
    checkpoint = workdir / "checkpoints" / name / "checkpoint.pt"
    scoring = ["--checkpoint", str(checkpoint), "--threads", "1", "--eval-images", str(args.eval_images)]
    greedy = evaluate.main([*scoring, "--encoder", "greedy"])
    return {
        "patch_size": torch.load(checkpoint, weights_only=True)["env_config"]["patch_size"],
        "train_images_per_second": trained["train_images_per_second"],
        "policy_images_per_second": trained["images_per_second"],
        "greedy_images_per_second": greedy["images_per_second"],
    }


def runs(args: Args) -> list[tuple[str, str, list[str], list[str]]]:
    """(configuration, patch choice, data flags, patch flags) of every run of a round."""
    choices = {"chosen R": [], f"R = {args.patch_size}": ["--patch-size", str(args.patch_size)]}
    return [
        (config, choice, data, patch)
        for config, data in configurations(args).items()
        for choice, patch in choices.items()
    ]


def summarise(results: dict, pixels: dict[str, int]) -> list[dict]:
    """Medians per run, and costs per image relative to the first configuration with the same patch choice."""
    rows, first = [], {}
    for (config, choice), measured in results.items():
        row = {"configuration": config, "patch": choice, "values": pixels[config]}
        row.update({key: statistics.median(m[key] for m in measured) for key in measured[0]})
        reference = first.setdefault(choice, row)
        row["value_ratio"] = row["values"] / reference["values"]
        for key in ("train", "policy", "greedy"):
            row[f"{key}_cost_ratio"] = reference[f"{key}_images_per_second"] / row[f"{key}_images_per_second"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["images", "patch", "R", "values ratio", "train img/s", "cost ratio", "policy img/s", "cost ratio"]
    header += ["greedy img/s", "cost ratio"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        lines.append(
            f"| {row['configuration']} | {row['patch']} | {row['patch_size']} | {row['value_ratio']:.2f} "
            f"| {row['train_images_per_second']:.1f} | {row['train_cost_ratio']:.2f} "
            f"| {row['policy_images_per_second']:.0f} | {row['policy_cost_ratio']:.2f} "
            f"| {row['greedy_images_per_second']:.0f} | {row['greedy_cost_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with setting_up():
        check_output(args.json, "--json")
        load_images("mnist", "test[:1]", args.mnist_root)
        shapes = {
            size: load_images(f"folder:{args.cifar_folder}", "all[:1]", image_size=size).images.shape
            for size in (32, 64)
        }
        pixels = {"28x28 gray": 28 * 28, "32x32 colour": shapes[32][1:].numel(), "64x64 colour": shapes[64][1:].numel()}
    results: dict = {}
    workdir = Path(tempfile.mkdtemp(prefix="image_cost_"))
    try:
        with ctrl_c_of_commands():
            for round_ in tqdm(range(args.repeats), desc="rounds"):
                order = runs(args) if round_ % 2 == 0 else runs(args)[::-1]
                for config, choice, data, patch in order:
                    name = f"{config}-{choice}-{round_}".replace(" ", "_").replace("=", "")
                    results.setdefault((config, choice), []).append(measure(args, data, patch, workdir, name))
    except KeyboardInterrupt:
        done = {key: value for key, value in results.items() if value}
        interrupted(args.json, {"rows": summarise(done, pixels) if done else []}, f"in round {round_ + 1}")
    rows = summarise(results, pixels)
    print(f"\nCost per image against image size (T = {args.steps}, one thread, medians of {args.repeats})\n")
    print(markdown(rows))
    result = {"steps": args.steps, "repeats": args.repeats, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
