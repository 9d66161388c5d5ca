"""Evaluate a trained painter with an encoder on any dataset and split.

    python -m train.evaluate --checkpoint runs/checkpoints/RUN/checkpoint.pt --encoder policy
    python -m train.evaluate --checkpoint CKPT --encoder greedy --dataset mnist \\
        --data-root /path/to/mnist --eval-split "test[8000:]" --gif rollout.gif
    python -m train.evaluate --checkpoint CKPT --encoder policy --untrained    # the untrained twin

The painter (dataset, patch size, action space, number of steps, dictionary) comes from the
checkpoint; the flags override it. Without a checkpoint (``--encoder greedy``) the dictionary is
fitted to ``--split`` as ``Painter-v0`` fits it. ``--eval-split`` is scored. ``--untrained`` scores
a new, untrained encoder of the checkpoint's architecture on the checkpoint's dictionary (seeded
by ``--seed``; for a Stable-Baselines3 agent, ``MODEL.zip --encoder policy``, an agent of the same
algorithm, policy class and policy kwargs, ``agents.sb3.encoder.untrained_twin``): what training
added is the difference. Prints a table of SSE, PSNR, bits per image and images per second (and the
fraction of the optimal return on ``shapes``), writes ``--metrics-json`` and ``--gif``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, ENCODERS, Encoder, build_encoder, policy_encoder
from agents.gibbs import SWEEPS as GIBBS_SWEEPS
from decoders.dictionary import PatchDictionary
from decoders.kernel import decode
from decoders.storage import load_checkpoint
from painter_env.animation import rollout_frames
from painter_env.config import Painter, PainterConfig, build_painter, device_of
from painter_env.rendering import gif_bytes
from train.common.config import arg, parse_args
from train.common.metrics import program_bits, reconstruction_metrics, write_metrics_json
from train.common.run import DataArgs, user_errors


@dataclass
class Args(DataArgs):
    dataset: str = arg(
        None, "shapes, mnist, fashion-mnist, cifar10 or folder:PATH (default: the checkpoint's)", type=str
    )
    data_root: str = arg(None, "folder holding the dataset files (default: the checkpoint's)", type=str)
    eval_split: str = arg(
        None, "split scored, e.g. test, 'test[8000:]' (default: the checkpoint's, else test)", type=str
    )
    image_size: int = arg(None, "resize images to S x S (default: the checkpoint's)", type=int, at_least=1)
    checkpoint: str = arg(
        None,
        "train.reinforce checkpoint (.pt) or Stable-Baselines3 agent (.zip); optional for --encoder greedy",
        type=str,
    )
    encoder: str = arg("policy", "how programs are written", choices=ENCODERS)
    untrained: bool = arg(False, "score a new, untrained encoder of the checkpoint's architecture on its dictionary")
    dictionary: str = arg(None, "dictionary file or checkpoint (default: the checkpoint's)", type=str)
    steps: int = arg(None, "program length T (default: the checkpoint's)", type=int, at_least=1)
    batch_size: int = arg(256, "images encoded at once", at_least=1)
    policy_samples: int = arg(1, "policy: keep the best of its most likely program and N-1 sampled ones", at_least=1)
    gibbs_sweeps: int = arg(GIBBS_SWEEPS, "sweeps of Gibbs refinement (--encoder gibbs, greedy-gibbs)", at_least=0)
    gif: str = arg(None, "write an animated GIF of painting rollouts to this path", type=str)
    gif_images: int = arg(4, "images shown in the GIF", at_least=1)


def painter_from_checkpoint(args: Args, payload: dict | None) -> Painter:
    """The painter to score ``--eval-split`` with: the checkpoint's environment with the flags'
    overrides. For a Stable-Baselines3 agent (``.zip``) the settings ``train.sb3`` saved beside it
    are used; without a checkpoint the dictionary is fitted to ``--split``."""
    base = dict(payload["env_config"]) if payload else {}
    if payload is None and args.checkpoint and str(args.checkpoint).endswith(".zip"):
        from agents.sb3.encoder import sb3_env_config

        base = sb3_env_config(args.checkpoint) or {}
    overrides = {"dataset": args.dataset, "data_root": args.data_root, "image_size": args.image_size}
    base.update({key: value for key, value in overrides.items() if value is not None})
    base.update(download=args.download, max_steps=args.steps or base.get("max_steps"))
    if args.dictionary is not None:
        base["dictionary"] = args.dictionary
    elif payload is not None:
        base["dictionary"] = PatchDictionary.from_payload(payload["dictionary"])
    elif not base.get("dictionary"):
        base["dictionary"] = build_painter(PainterConfig(**{**base, "split": args.split, "seed": args.seed})).dictionary
    scored = args.eval_split or (payload or {}).get("args", {}).get("eval_split") or "test"
    return build_painter(PainterConfig(**{**base, "split": scored}))


def evaluate_encoder(
    encoder: Encoder,
    images: torch.Tensor,
    painter: Painter,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[dict, torch.Tensor]:
    """Encode ``images`` in batches; return the standard figures and the programs ``(N, T, 4)``."""
    programs, seconds = [], 0.0
    for start in tqdm(range(0, len(images), batch_size), desc="encoding", disable=not progress, leave=False):
        batch = images[start : start + batch_size].to(device)
        began = time.perf_counter()
        with torch.no_grad():
            programs.append(encoder(batch))
        seconds += time.perf_counter() - began
    programs = torch.cat(programs).to(device)
    dictionary = painter.dictionary.to(device)
    with torch.no_grad():
        values, support = dictionary.patches()
        canvases = torch.cat(
            [
                decode(
                    programs[i : i + batch_size],
                    values,
                    support,
                    dictionary.num_levels,
                    painter.geometry,
                    dictionary.start_canvas(images[i : i + batch_size].to(device)),
                )
                for i in range(0, len(programs), batch_size)
            ]
        )
    geometry = painter.geometry
    num_actions = geometry.num_moves**2 * dictionary.num_patches
    images = images.to(device)
    bits = program_bits(programs.shape[1], num_actions) + dictionary.background_bits
    metrics = reconstruction_metrics(images, canvases, bits, seconds)
    if painter.data.programs is not None:  # shapes: the optimal return is the blank canvas's SSE
        blank = images.square().flatten(1).sum(1).mean()
        metrics["optimal_return_fraction"] = float((blank - metrics["sse"]) / blank)
    return metrics, programs


def policy_sse(policy, painter: Painter, images: torch.Tensor, device, samples: int = 1, seed: int = 0) -> float:
    """Mean SSE of ``policy``'s most likely programs (the best of ``samples`` with more) on ``images``."""
    encoder = policy_encoder(policy, painter, samples, seed)
    return evaluate_encoder(encoder, images, painter, 256, device, progress=False)[0]["sse"]


def save_rollout_gif(path: str | Path, images: torch.Tensor, programs: torch.Tensor, painter: Painter) -> None:
    """An animated GIF of the programs painting the images (target | canvas | residual)."""
    frames = rollout_frames(images, programs, painter.dictionary, painter.geometry)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gif_bytes(frames))


def format_table(rows: dict[str, dict]) -> str:
    """A markdown table with one row per encoder and the standard figures as columns."""
    columns = ["sse", "psnr", "bits_per_image", "images_per_second", "num_images", "optimal_return_fraction"]
    columns = [c for c in columns if any(c in metrics for metrics in rows.values())]
    lines = ["| encoder | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [f"{metrics[c]:.4g}" if isinstance(metrics.get(c), float) else str(metrics.get(c, "")) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def set_up(args: Args) -> tuple[Painter, Encoder, torch.device]:
    """The painter to score and the encoder, from the checkpoint and the flags."""
    device = device_of(args.device)
    torch.set_num_threads(args.threads)
    payload = None
    if args.checkpoint is not None and not args.checkpoint.endswith(".zip"):
        payload = load_checkpoint(args.checkpoint, CHECKPOINT_KIND)
    elif args.encoder not in ("greedy", "greedy-gibbs") and args.checkpoint is None:
        raise ValueError(f"--encoder {args.encoder} needs --checkpoint")
    sb3_agent = args.checkpoint is not None and args.checkpoint.endswith(".zip")
    if args.untrained and sb3_agent and args.encoder != "policy":
        raise ValueError("--untrained with a Stable-Baselines3 agent (.zip) needs --encoder policy")
    if args.untrained and not sb3_agent and (payload is None or "policy" not in payload):
        raise ValueError(
            "--untrained needs a train.reinforce checkpoint (--checkpoint CKPT.pt) or a Stable-Baselines3 agent "
            "(--checkpoint MODEL.zip) for its architecture"
        )
    painter = painter_from_checkpoint(args, payload)
    painter.dictionary.to(device)
    if args.untrained and sb3_agent:  # the agent's untrained twin: agents.sb3.encoder.untrained_twin
        from agents.sb3.encoder import sb3_programs

        def encoder(images: torch.Tensor) -> torch.Tensor:
            return sb3_programs(args.checkpoint, images, painter, device, untrained_seed=args.seed)

        return painter, encoder, device
    if args.untrained:
        torch.manual_seed(args.seed)
        payload = {**payload, "policy": None}  # a new policy of the checkpoint's configuration
    checkpoint = payload if payload is not None else args.checkpoint
    encoder = build_encoder(args.encoder, checkpoint, painter, device, args.gibbs_sweeps, args.policy_samples)
    return painter, encoder, device


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with user_errors():
        painter, encoder, device = set_up(args)
    images = painter.data.images[: args.eval_images]
    metrics, programs = evaluate_encoder(encoder, images, painter, args.batch_size, device)
    metrics.update(
        encoder=args.encoder,
        untrained=args.untrained,
        policy_samples=args.policy_samples,
        dataset=painter.config.dataset,
        eval_split=painter.config.split,
        steps=painter.max_steps,
    )
    print(format_table({args.encoder + (" (untrained)" if args.untrained else ""): metrics}))
    write_metrics_json(args.metrics_json, metrics)
    if args.gif:
        count = min(args.gif_images, len(images))
        save_rollout_gif(args.gif, images[:count], programs[:count], painter)
        print(f"rollout GIF: {args.gif}")
    return metrics


if __name__ == "__main__":
    main()
