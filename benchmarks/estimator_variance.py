"""Gradient variance of the estimators at the same parameters, from the same sampled programs.

    python -m benchmarks.estimator_variance --checkpoint runs/checkpoints/RUN/checkpoint.pt --json variance.json

The ``policy/gradient_variance`` that training logs compares estimators along different
trajectories (each at its own parameters). Here every estimator sees the policy and dictionary
of one ``train.reinforce`` checkpoint and, replicate by replicate, the same images and the same
S sampled programs per image (common random numbers), so the differences are the estimators'
alone. For each replicate batch the gradient of each estimator's encoder loss with respect to
the policy's parameters is taken; the table gives the trace of its covariance over the
replicates, the ratio to REINFORCE with the leave-one-out baseline, and the relative variance
``trace / ||E g||^2`` (``||E g||^2`` estimated without bias), which removes the different scales
of the objectives (IW's gradient is about (S-1)/S times REINFORCE's when the samples' weights
are nearly equal). REINFORCE's moving-average baseline is taken at the value training drives it
to: the mean return-to-go of each step, over ``--baseline-batches`` batches drawn before the
replicates (so it is a constant, as the baseline is within one training batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, load_policy
from agents.estimators import iw, reinforce, returns_to_go, vimco
from agents.rollout import sample_batch
from decoders.dictionary import PatchDictionary
from decoders.storage import load_checkpoint
from painter_env.config import PainterConfig, build_painter
from train.common.config import arg, parse_args

ESTIMATORS = {
    "reinforce (loo)": (reinforce, {"baseline": "loo"}),
    "reinforce (moving average)": (reinforce, {"baseline": "moving-average"}),
    "reinforce (no baseline)": (reinforce, {"baseline": "none"}),
    "iw": (iw, {}),
    "iw (per step)": (iw, {"per_step": True}),
    "vimco (per step)": (vimco, {"per_step": True}),
    "vimco (per program)": (vimco, {"per_step": False}),
}
REFERENCE = "reinforce (loo)"


@dataclass
class Args:
    checkpoint: str = arg(None, "a train.reinforce checkpoint (policy and dictionary); required", type=str)
    data_root: str = arg(None, "folder of the dataset files (default: the checkpoint's)", type=str)
    split: str = arg(None, "images to draw (default: the checkpoint's training split)", type=str)
    replicates: int = arg(64, "replicate batches (gradients per estimator)")
    batch_size: int = arg(16, "images per replicate batch")
    samples: int = arg(4, "programs sampled per image (S)")
    beta: float = arg(None, "inverse temperature (default: the checkpoint's)", type=float)
    baseline_batches: int = arg(
        16, "batches drawn first to set REINFORCE's moving-average baseline (each step's mean return)"
    )
    seed: int = arg(0, "seed of the images and samples")
    threads: int = arg(1, "torch CPU threads")
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def replicate_gradients(
    policy, painter, replicates: int, batch_size: int, samples: int, beta: float, seed: int, baseline_batches: int = 16
) -> dict[str, torch.Tensor]:
    """``(replicates, parameters)`` encoder gradients per estimator, all from the same batches."""
    generator = torch.Generator().manual_seed(seed)
    images, parameters = painter.data.images, list(policy.parameters())

    def draw():
        targets = images[torch.randint(len(images), (batch_size,), generator=generator)]
        steps = painter.max_steps
        return sample_batch(policy, painter.dictionary, targets, painter.geometry, steps, samples, generator)[0]

    with torch.no_grad():  # the moving average's fixed point: each step's mean return-to-go
        moving_average = torch.stack(
            [beta * returns_to_go(draw().rewards).mean((0, 1)) for _ in range(baseline_batches)]
        ).mean(0)
    gradients = {name: [] for name in ESTIMATORS}
    for _ in tqdm(range(replicates), desc="replicates"):
        batch = draw()
        for name, (estimator, options) in ESTIMATORS.items():
            extra = {"moving_average": moving_average} if options.get("baseline") == "moving-average" else {}
            loss = estimator(batch, beta=beta, **options, **extra).encoder_loss
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            gradients[name].append(
                torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, parameters)])
            )
    return {name: torch.stack(rows) for name, rows in gradients.items()}


def variance_rows(gradients: dict[str, torch.Tensor]) -> list[dict]:
    """Per estimator: the covariance trace, its ratio to the reference, and the relative variance.

    ``||mean||^2`` overestimates ``||E g||^2`` by ``trace / R``; the relative variance uses the
    unbiased difference and is ``None`` where the mean gradient is not resolved from the noise.
    """
    traces = {name: float(g.var(0).sum()) for name, g in gradients.items()}
    rows = []
    for name, g in gradients.items():
        signal = float(g.mean(0).square().sum()) - traces[name] / g.shape[0]
        rows.append(
            {
                "estimator": name,
                "variance": traces[name],
                "ratio_to_reinforce_loo": traces[name] / traces[REFERENCE],
                "relative_variance": traces[name] / signal if signal > 0 else None,
                "replicates": g.shape[0],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| estimator | variance (trace) | ratio to reinforce (loo) | relative variance |", "|---|---|---|---|"]
    for r in rows:
        relative = "not resolved" if r["relative_variance"] is None else f"{r['relative_variance']:.4g}"
        lines.append(f"| {r['estimator']} | {r['variance']:.4g} | {r['ratio_to_reinforce_loo']:.3f} | {relative} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    if args.checkpoint is None:
        raise ValueError("--checkpoint is required: a train.reinforce checkpoint (policy and dictionary)")
    if args.replicates < 2 or args.samples < 2:
        raise ValueError(f"--replicates and --samples must be at least 2, got {args.replicates} and {args.samples}")
    if args.baseline_batches < 1:
        raise ValueError(f"--baseline-batches must be at least 1, got {args.baseline_batches}")
    torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint, CHECKPOINT_KIND)
    config = dict(payload["env_config"], dictionary=PatchDictionary.from_payload(payload["dictionary"]))
    config.update({key: value for key, value in (("data_root", args.data_root), ("split", args.split)) if value})
    painter = build_painter(PainterConfig(**config))
    policy = load_policy(payload, "cpu")
    beta = payload["args"]["beta"] if args.beta is None else args.beta
    gradients = replicate_gradients(
        policy, painter, args.replicates, args.batch_size, args.samples, beta, args.seed, args.baseline_batches
    )
    result = {
        "checkpoint": str(args.checkpoint),
        "split": config["split"],
        "samples": args.samples,
        "batch_size": args.batch_size,
        "beta": beta,
        "rows": variance_rows(gradients),
    }
    print(
        f"Encoder-gradient variance at the checkpoint's parameters, S={args.samples}, "
        f"{args.batch_size} images per batch, {args.replicates} replicate batches (common random numbers)\n"
    )
    print(table(result["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
