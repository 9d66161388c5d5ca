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
replicates (so it is a constant, as the baseline is within one training batch). Ctrl-C stops it
with the rows of the replicates done so far (two at least; the JSON marked ``"interrupted": true``)
and exit status 130.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, load_policy
from agents.estimators import iw, reinforce, returns_to_go, vimco
from agents.rollout import sample_batch
from benchmarks.jobs import check_output, interrupted, setting_up, write_json
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
    checkpoint: str = arg(
        None, "the train.reinforce checkpoint (policy and dictionary) to measure at (default: none, required)", type=str
    )
    data_root: str = arg(None, "folder of the dataset files (default: the checkpoint's)", type=str)
    split: str = arg(None, "images to draw (default: the checkpoint's training split)", type=str)
    replicates: int = arg(64, "replicate batches (gradients per estimator)", at_least=2)
    batch_size: int = arg(16, "images per replicate batch", at_least=1)
    samples: int = arg(4, "programs sampled per image (S)", at_least=2)
    beta: float = arg(None, "inverse temperature (default: the checkpoint's)", type=float, above=0)
    baseline_batches: int = arg(
        16, "batches drawn first to set REINFORCE's moving-average baseline (each step's mean return)", at_least=1
    )
    seed: int = arg(0, "seed of the images and samples")
    threads: int = arg(1, "torch CPU threads", at_least=1)
    json: str = arg(None, "write the rows as JSON to this path", type=str)


def replicate_gradients(
    policy, painter, replicates: int, batch_size: int, samples: int, beta: float, seed: int, baseline_batches: int = 16
) -> Iterator[dict[str, torch.Tensor]]:
    """Per replicate batch, the flattened encoder gradient of each estimator, all from that same batch."""
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
    for _ in range(replicates):
        batch, gradients = draw(), {}
        for name, (estimator, options) in ESTIMATORS.items():
            extra = {"moving_average": moving_average} if options.get("baseline") == "moving-average" else {}
            loss = estimator(batch, beta=beta, **options, **extra).encoder_loss
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            gradients[name] = torch.cat(
                [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, parameters)]
            )
        yield gradients


def variance_rows(gradients: dict[str, torch.Tensor]) -> list[dict]:
    """Per estimator: the covariance trace, its ratio to the reference (None when the reference's is 0),
    and the relative variance.

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
                "ratio_to_reinforce_loo": traces[name] / traces[REFERENCE] if traces[REFERENCE] > 0 else None,
                "relative_variance": traces[name] / signal if signal > 0 else None,
                "replicates": g.shape[0],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| estimator | variance (trace) | ratio to reinforce (loo) | relative variance |", "|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio_to_reinforce_loo"] is None else f"{r['ratio_to_reinforce_loo']:.3f}"
        relative = "not resolved" if r["relative_variance"] is None else f"{r['relative_variance']:.4g}"
        lines.append(f"| {r['estimator']} | {r['variance']:.4g} | {ratio} | {relative} |")
    return "\n".join(lines)


def set_up(args: Args):
    """The checkpoint's painter (on ``--split`` from ``--data-root`` when given), its policy and beta."""
    check_output(args.json, "--json")
    if args.checkpoint is None:
        raise ValueError("argument --checkpoint: required, a train.reinforce checkpoint (policy and dictionary)")
    torch.set_num_threads(args.threads)
    try:
        payload = load_checkpoint(args.checkpoint, CHECKPOINT_KIND)
    except (OSError, ValueError) as error:  # torch's reasons for an unreadable file run over several lines
        raise ValueError(f"argument --checkpoint: {str(error).splitlines()[0].split('. ')[0]}") from None
    config = dict(payload["env_config"], dictionary=PatchDictionary.from_payload(payload["dictionary"]))
    config.update({key: value for key, value in (("data_root", args.data_root), ("split", args.split)) if value})
    painter = build_painter(PainterConfig(**config))
    policy = load_policy(payload, "cpu")
    beta = payload["args"]["beta"] if args.beta is None else args.beta
    return painter, policy, beta


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with setting_up():
        painter, policy, beta = set_up(args)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": painter.config.split,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "beta": beta,
        "interrupted": False,
        "rows": [],
    }
    done = []
    replicates = replicate_gradients(
        policy, painter, args.replicates, args.batch_size, args.samples, beta, args.seed, args.baseline_batches
    )
    try:
        for gradients in tqdm(replicates, total=args.replicates, desc="replicates"):
            done.append(gradients)
    except KeyboardInterrupt:
        if len(done) >= 2:  # a variance needs two replicates
            result["rows"] = variance_rows(stacked(done))
            print(table(result["rows"]))
        interrupted(args.json, result, f"after {len(done)} of {args.replicates} replicate batches")
    result["rows"] = variance_rows(stacked(done))
    print(
        f"Encoder-gradient variance at the checkpoint's parameters, S={args.samples}, "
        f"{args.batch_size} images per batch, {args.replicates} replicate batches (common random numbers)\n"
    )
    print(table(result["rows"]))
    write_json(args.json, result)
    return result


def stacked(replicates: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``(replicates, parameters)`` gradients per estimator."""
    return {name: torch.stack([gradients[name] for gradients in replicates]) for name in ESTIMATORS}


if __name__ == "__main__":
    main()
