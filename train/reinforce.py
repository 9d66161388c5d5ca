"""Train the RNN encoder (and the dictionary) with REINFORCE, importance weighting or VIMCO.

    python -m train.reinforce --env painter                     # shapes, a few minutes on a CPU
    python -m train.reinforce --env painter --dataset mnist --data-root DIR \\
        --split "test[:8000]" --eval-split "test[8000:]" --minutes 30

Each iteration draws a batch of images, samples ``--samples`` programs per image from the
policy, paints them with the kernel and turns them into a surrogate loss with the chosen
estimator (``agents.estimators``): the policy learns through the score function, the dictionary
through the painted reconstruction with the programs held fixed. TensorBoard logs go to
``--logdir/RUN``, checkpoints to ``--checkpoint-dir/RUN/checkpoint.pt`` (atomically, every
``--save-every`` iterations, at the end and on Ctrl-C). ``--resume CHECKPOINT`` continues a run
and ends with the same figures as an uninterrupted run with the same seed and ``--iterations``.
At the end the policy is scored on ``--eval-split`` (held-out images).

Data-parallel on several processes (gloo on CPU, NCCL on CUDA; ``--batch-size`` images per rank):

    torchrun --standalone --nproc-per-node 2 -m train.reinforce --env painter

Each rank draws and samples its own shards of the batch with its own generators (shard ``s`` is
seeded ``seed + SHARD_SEED_STRIDE * s``); gradients, the moving-average baseline and the logged
figures are averaged over the ranks; rank 0 alone writes TensorBoard, checkpoints and metrics.
``--shards N`` on one process draws the same shards as N ranks, so it reproduces their run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, policy_encoder
from agents.estimators import BASELINES, ESTIMATORS, SampleBatch, returns_to_go
from agents.policy import PainterPolicy, PolicyConfig, policy_for
from agents.rollout import rollout
from decoders.dictionary import PatchDictionary
from decoders.kernel import decode, patch_ids
from decoders.storage import load_checkpoint
from painter_env.config import PainterConfig, build_painter, device_of
from train.common.checkpoint import generator_states, restore_generator_states, save_checkpoint
from train.common.config import arg, parse_args
from train.common.distributed import (
    average_,
    broadcast_,
    init_from_env,
    mean_across,
    merge_across,
    report_failure,
    shutdown,
)
from train.common.metrics import psnr, write_metrics_json
from train.common.tensorboard import (
    claim_run_name,
    log_dictionary,
    log_hparams_text,
    log_image_grid,
    log_rollout_gif,
    make_writer,
)
from train.evaluate import evaluate_encoder


@dataclass
class Args:
    env: str = arg("painter", "environment to train on (the patch painter)", choices=("painter",))
    dataset: str = arg("shapes", "shapes (built in), mnist, fashion-mnist or folder:PATH")
    data_root: str = arg(None, "folder holding the dataset files", type=str)
    split: str = arg("train", "split to fit, e.g. train, 'test[:8000]'")
    eval_split: str = arg("test", "held-out split scored at the end, e.g. test, 'test[8000:]'")
    eval_images: int = arg(1000, "number of held-out images scored at the end")
    image_size: int = arg(None, "resize images to this size (shapes: generate at it; default 28)", type=int)
    steps: int = arg(None, "program length T (default: 8 on shapes, 16 otherwise)", type=int)
    patch_size: int = arg(7, "patch size R")
    num_prototypes: int = arg(None, "K (default: 12 ground-truth shapes, else 32 k-means++)", type=int)
    num_levels: int = arg(3, "L, code levels per prototype")
    move_radius: int = arg(None, "largest cursor move M (default: the whole canvas)", type=int)
    dictionary: str = arg(None, "start from this dictionary file or checkpoint", type=str)
    freeze_dictionary: bool = arg(False, "keep the dictionary fixed (train the encoder only)")
    estimator: str = arg("iw", "gradient estimator", choices=tuple(ESTIMATORS))
    baseline: str = arg(
        "loo",
        "REINFORCE baseline (self-critical: the return of the policy's own most likely "
        "program, which then improves what the encoder outputs)",
        choices=BASELINES,
    )
    vimco_per_program: bool = arg(
        True,
        "vimco: one learning signal per program, as in the paper; "
        "--no-vimco-per-program refines it per step (less variance on the exact "
        "tiny problem, more on shapes and on a trained MNIST policy, the same SSE "
        "after 8 minutes)",
    )
    iw_per_step: bool = arg(
        False,
        "iw: refine the control variate per step (less variance on the exact tiny "
        "problem, no gain measured in training; default: 1/S, one signal per program)",
    )
    samples: int = arg(4, "programs sampled per image (S)")
    beta: float = arg(1.0, "inverse temperature: log q_r(x|z) = -beta * SSE")
    entropy_coef: float = arg(0.0, "weight of the policy-entropy bonus")
    batch_size: int = arg(16, "images per iteration and per rank (each sampled --samples times)")
    shards: int = arg(
        1,
        "shards per rank, each drawn and sampled with its own generators "
        "(one process with --shards N reproduces N ranks of torchrun)",
    )
    iterations: int = arg(600, "training iterations")
    minutes: float = arg(9.0, "stop training after this many minutes (the final evaluation comes after)")
    lr: float = arg(1e-3, "Adam learning rate of the policy")
    dictionary_lr: float = arg(3e-4, "Adam learning rate of the dictionary")
    max_grad_norm: float = arg(5.0, "gradient-norm clipping of the policy")
    moving_average_decay: float = arg(0.9, "decay of the moving-average baseline")
    hidden_size: int = arg(64, "GRU hidden units")
    feature_size: int = arg(16, "per-position feature channels")
    score_scale: float = arg(
        50.0,
        "starting inverse temperature of the matched-filter logits (learned): "
        "large values start the policy close to greedy search",
    )
    seed: int = arg(1, "random seed (data order, sampling, initialisation)")
    device: str = arg("cpu", "cpu or cuda")
    threads: int = arg(1, "CPU threads for torch (1 is fastest on a busy machine: more threads spin-wait)")
    logdir: str = arg("runs", "TensorBoard folder (one sub-folder per run)")
    checkpoint_dir: str = arg("runs/checkpoints", "checkpoint folder (one sub-folder per run)")
    run_name: str = arg(None, "name of the run (default: dataset, estimator, seed and time)", type=str)
    resume: str = arg(None, "continue the run saved in this checkpoint", type=str)
    save_every: int = arg(50, "iterations between checkpoints")
    log_every: int = arg(10, "iterations between scalar logs (with a gradient-variance estimate)")
    image_every: int = arg(100, "iterations between image, dictionary and rollout-GIF logs")
    metrics_json: str = arg(None, "write the final figures (on --eval-split) as JSON here", type=str)


def env_config(args: Args, split: str, dictionary=None) -> PainterConfig:
    return PainterConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        split=split,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_prototypes=args.num_prototypes,
        num_levels=args.num_levels,
        move_radius=args.move_radius,
        max_steps=args.steps,
        dictionary=dictionary if dictionary is not None else args.dictionary,
        seed=args.seed,
    )


def sample_batch(policy, dictionary, targets, geometry, steps, args, generator, freeze):
    """Roll out S programs per image and assemble the estimator's input."""
    count = targets.shape[0]
    repeated = targets.repeat_interleave(args.samples, 0)
    out = rollout(policy, repeated, dictionary, geometry, steps, generator=generator)
    reference = None
    if args.estimator == "reinforce" and args.baseline == "self-critical":
        with torch.no_grad():  # the most likely program: what the encoder will output at test time
            reference = rollout(policy, targets, dictionary, geometry, steps, mode="greedy").rewards
    values, support = dictionary.patches()
    if freeze:
        values = values.detach()
    canvas = decode(out.actions, values, support, dictionary.num_levels, geometry)
    sse = (repeated - canvas).square().flatten(1).sum(1)
    shape = (count, args.samples, steps)
    batch = SampleBatch(
        out.log_probs.view(shape),
        out.rewards.view(shape),
        sse.view(count, args.samples),
        out.entropy.view(shape),
        out.values.view(shape),
        reference,
    )
    return batch, out


SHARD_SEED_STRIDE = 10_000


def shard_generators(seed: int, shards: range, device) -> dict[str, torch.Generator]:
    """Data and sampling generators of each shard; shard 0's are the single-process run's ones."""
    generators = {}
    for shard in shards:
        data, sample = shard_names(shard)
        generators[data] = torch.Generator().manual_seed(seed + SHARD_SEED_STRIDE * shard)
        generators[sample] = torch.Generator(device).manual_seed(seed + SHARD_SEED_STRIDE * shard + 1)
    return generators


def shard_names(shard: int) -> tuple[str, str]:
    return ("data", "sample") if shard == 0 else (f"data{shard}", f"sample{shard}")


def draw_shards(policy, dictionary, images, geometry, steps, args, generators, shards, device):
    """Draw each shard's images and programs with its own generators and concatenate the shards."""
    parts = []
    for shard in shards:
        data, sample = shard_names(shard)
        index = torch.randint(len(images), (args.batch_size // args.shards,), generator=generators[data])
        targets = images[index].to(device)
        parts.append(
            (
                targets,
                *sample_batch(
                    policy, dictionary, targets, geometry, steps, args, generators[sample], args.freeze_dictionary
                ),
            )
        )
    return parts[0] if len(parts) == 1 else tuple(concatenate(list(column)) for column in zip(*parts))


def concatenate(items: list):
    """Concatenate tensors, or dataclasses of tensors (``None`` fields stay ``None``), along the batch."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(items)
    return type(first)(
        *(
            None if getattr(first, f.name) is None else torch.cat([getattr(i, f.name) for i in items])
            for f in dataclasses.fields(first)
        )
    )


def gradient_variance(loss_halves, parameters) -> tuple[list[torch.Tensor], float]:
    """Gradients of the two half-batch losses: their mean (the full-batch gradient) and
    ``||g1 - g2||^2 / 4``, an unbiased estimate of the trace of the full-batch gradient's covariance."""
    first = torch.autograd.grad(loss_halves[0], parameters, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(loss_halves[1], parameters, allow_unused=True)
    mean, spread = [], 0.0
    for a, b, p in zip(first, second, parameters):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        mean.append((a + b) / 2)
        spread += float((a - b).square().sum()) / 4
    return mean, spread


def usage_entropy(counts: torch.Tensor) -> float:
    """Entropy (bits) of how often each (k, b) patch is used: low means a few patches do everything."""
    p = counts / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log2()).sum())


def main(argv=None) -> dict:
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    resumed = load_checkpoint(args.resume, CHECKPOINT_KIND) if args.resume else None
    if resumed is not None:  # the run's settings win, except how long to go on
        keep = {name: getattr(args, name) for name in ("iterations", "minutes", "resume", "device", "metrics_json")}
        args = dataclasses.replace(Args(**resumed["args"]), **keep)
    if args.samples < 1 or args.batch_size < 2 or args.batch_size % 2:
        raise ValueError("--samples must be >= 1 and --batch-size an even number >= 2")
    if args.shards < 1 or args.batch_size % args.shards:
        raise ValueError(f"--shards must be >= 1 and divide --batch-size ({args.batch_size}), got {args.shards}")
    context, device = init_from_env(args.device)
    if resumed is not None and resumed.get("world_size", 1) != context.world_size:
        raise ValueError(
            f"{args.resume} was written by a run on {resumed.get('world_size', 1)} process(es); resume it "
            f"on as many (torchrun --nproc-per-node), not {context.world_size}"
        )
    device = device_of(device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dictionary = PatchDictionary.from_payload(resumed["dictionary"]) if resumed else None
    painter = build_painter(env_config(args, args.split, dictionary))
    dictionary, geometry, steps = painter.dictionary.to(device), painter.geometry, painter.max_steps
    images = painter.data.images
    policy = (
        PainterPolicy(PolicyConfig(**resumed["policy_config"]))
        if resumed
        else policy_for(
            geometry,
            dictionary.channels,
            dictionary.num_prototypes,
            dictionary.num_levels,
            hidden_size=args.hidden_size,
            feature_size=args.feature_size,
            score_scale=args.score_scale,
        )
    ).to(device)
    groups = [{"params": list(policy.parameters()), "lr": args.lr}]
    if not args.freeze_dictionary:
        groups.append({"params": list(dictionary.parameters()), "lr": args.dictionary_lr})
    optimizer = torch.optim.Adam(groups)
    shards = range(context.rank * args.shards, (context.rank + 1) * args.shards)
    generators = shard_generators(args.seed, shards, device)
    moving_average = torch.zeros(steps, device=device)
    start, elapsed = 0, 0.0
    lead = context.lead
    run_name = args.run_name
    if resumed:
        policy.load_state_dict(resumed["policy"])
        optimizer.load_state_dict(resumed["optimizer"])
        restore_generator_states(generators, resumed["rng"])
        moving_average = resumed["moving_average"].to(device)
        start, elapsed, run_name = resumed["iteration"], resumed["elapsed"], resumed["run_name"]
    elif run_name is None and lead:
        run_name = claim_run_name(
            f"{args.dataset}__{args.estimator}__s{args.seed}__{int(time.time())}", args.logdir, args.checkpoint_dir
        )
    run_name = merge_across({"run_name": run_name}, context)["run_name"]  # rank 0 names the run
    checkpoint_path = Path(args.checkpoint_dir) / run_name / "checkpoint.pt"
    writer = make_writer(args.logdir, run_name) if lead else None
    if lead:
        log_hparams_text(writer, {**dataclasses.asdict(args), "run_name": run_name, "world_size": context.world_size})
    estimator = ESTIMATORS[args.estimator]
    options = {"beta": args.beta, "entropy_coef": args.entropy_coef}
    if args.estimator == "reinforce":
        options.update(baseline=args.baseline, moving_average=moving_average)
    if args.estimator == "iw":
        options.update(per_step=args.iw_per_step)
    if args.estimator == "vimco":
        options.update(per_step=not args.vimco_per_program)
    parameters = [p for group in groups for p in group["params"]]
    broadcast_(parameters, context)
    images_per_iteration = args.batch_size * context.world_size

    def checkpoint(iteration: int, rng: dict | None = None) -> None:
        """Every rank gives its generator states; rank 0 writes the checkpoint."""
        rng = merge_across(rng or generator_states(generators), context)
        if not lead:
            return
        save_checkpoint(
            {
                "kind": CHECKPOINT_KIND,
                "version": 1,
                "run_name": run_name,
                "iteration": iteration,
                "world_size": context.world_size,
                "elapsed": elapsed,
                "args": dataclasses.asdict(args),
                "env_config": env_config(args, args.split).to_dict(),
                "dictionary": dictionary.to_payload(),
                "policy_config": policy.config.to_dict(),
                "policy": policy.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "moving_average": moving_average.cpu(),
            },
            checkpoint_path,
        )

    iteration = done = start
    snapshot, variances, sse = None, [], None
    bar = tqdm(range(start, args.iterations), initial=start, total=args.iterations, desc="training", disable=not lead)
    began, resumed_elapsed = time.perf_counter() - elapsed, elapsed
    try:
        for iteration in bar:
            out_of_time = torch.tensor([float((time.perf_counter() - began) / 60 > args.minutes)], device=device)
            broadcast_([out_of_time], context)  # rank 0's clock decides, so every rank stops at the same iteration
            if out_of_time.item():
                break
            snapshot = generator_states(generators)  # what a checkpoint of an unfinished iteration restores
            targets, batch, out = draw_shards(
                policy, dictionary, images, geometry, steps, args, generators, shards, device
            )
            logging = (iteration + 1) % args.log_every == 0
            optimizer.zero_grad()
            if logging:
                half = args.batch_size // 2
                fields = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
                halves = [
                    estimator(SampleBatch(*(None if t is None else t[part] for t in fields)), **options)
                    for part in (slice(0, half), slice(half, None))
                ]
                grads, spread = gradient_variance([h.loss for h in halves], parameters)
                for p, g in zip(parameters, grads):
                    p.grad = g
                surrogate = halves[0]
            else:
                surrogate = estimator(batch, **options)
                surrogate.loss.backward()
            # Gradients are averaged by hand rather than by a DistributedDataParallel wrapper: the policy
            # runs step by step inside `rollout` (no single forward for DDP to hook), and logging
            # iterations take half-batch gradients with torch.autograd.grad, which DDP does not reduce.
            average_([p.grad for p in parameters if p.grad is not None], context)
            torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
            figures = mean_across(
                torch.cat(
                    [
                        returns_to_go(batch.rewards.detach()).mean((0, 1)),
                        torch.stack(
                            [
                                batch.sse.mean(),
                                batch.rewards.sum(-1).mean(),
                                targets.square().flatten(1).sum(1).mean(),
                                batch.entropy.sum(-1).mean(),
                            ]
                        ).detach(),
                    ]
                ),
                context,
            )
            moving_average.mul_(args.moving_average_decay).add_(
                (1 - args.moving_average_decay) * args.beta * figures[:steps]
            )
            optimizer.step()
            done, snapshot = iteration + 1, None
            sse, returns, blank, entropy = figures[steps:].tolist()
            bar.set_postfix(sse=f"{sse:.3f}", entropy=f"{entropy:.2f}")
            elapsed = time.perf_counter() - began
            if logging:
                counts = torch.bincount(
                    patch_ids(out.actions, dictionary.num_levels).flatten(), minlength=dictionary.num_patches
                ).float()
                # the spread of the mean of W ranks' gradients is 1/W of one rank's
                losses = mean_across(
                    torch.cat(
                        [
                            torch.stack(
                                [
                                    surrogate.encoder_loss,
                                    surrogate.decoder_loss,
                                    surrogate.value_loss,
                                    surrogate.loss.new_tensor(spread / context.world_size),
                                ]
                            ).detach(),
                            counts,
                        ]
                    ),
                    context,
                )
                variances.append(float(losses[3]))
            if logging and lead:
                step = iteration + 1
                writer.add_scalar("charts/sse", sse, step)
                writer.add_scalar("charts/psnr", psnr(sse, targets[0].numel()), step)
                writer.add_scalar("charts/return", returns, step)
                if painter.data.programs is not None:
                    writer.add_scalar("charts/optimal_return_fraction", returns / blank, step)
                writer.add_scalar(
                    "charts/images_per_second",
                    (step - start) * images_per_iteration / max(elapsed - resumed_elapsed, 1e-9),
                    step,
                )
                writer.add_scalar("losses/encoder", float(losses[0]), step)
                writer.add_scalar("losses/decoder", float(losses[1]), step)
                writer.add_scalar("losses/value", float(losses[2]), step)
                writer.add_scalar("policy/entropy", entropy, step)
                writer.add_scalar("policy/gradient_variance", variances[-1], step)
                writer.add_scalar("policy/position_scale", float(policy.log_position_scale.detach().exp()), step)
                writer.add_scalar("dictionary/usage_entropy_bits", usage_entropy(losses[4:]), step)
            if lead and ((iteration + 1) % args.image_every == 0 or iteration == start):
                show = slice(0, 4 * args.samples, args.samples)
                log_image_grid(writer, "images/targets", targets[:4], iteration + 1)
                log_image_grid(writer, "images/reconstructions", out.canvas[show], iteration + 1)
                log_dictionary(writer, dictionary, iteration + 1)
                log_rollout_gif(
                    writer, "rollouts/painting", targets[:4], out.actions[show], dictionary, geometry, iteration + 1
                )
            if (iteration + 1) % args.save_every == 0:
                checkpoint(iteration + 1)
        else:
            iteration = args.iterations
    except KeyboardInterrupt:
        bar.close()
        if context.distributed:  # the ranks stopped at different points: no consistent state to save
            print(f"\ninterrupted: resume from the last periodic checkpoint, {checkpoint_path}", file=sys.stderr)
            raise
        checkpoint(done, snapshot)
        print(f"\ninterrupted after iteration {done}: checkpoint saved to {checkpoint_path}")
        print(f"continue with: python -m train.reinforce --resume {checkpoint_path} --iterations {args.iterations}")
        writer.close()
        return {}
    except Exception as error:
        report_failure(context, error, checkpoint_path)
        raise
    bar.close()
    wall = time.perf_counter() - began
    checkpoint(iteration)
    shutdown(context)
    if not lead:
        return {}

    held_out = build_painter(env_config(args, args.eval_split, dictionary))
    eval_images = held_out.data.images[: args.eval_images]
    policy.eval()
    metrics, programs = evaluate_encoder(policy_encoder(policy, held_out), eval_images, held_out, 256, device)
    metrics.update(
        wall_seconds=wall,
        iterations=iteration,
        estimator=args.estimator,
        dataset=args.dataset,
        eval_split=args.eval_split,
        train_sse_sampled=sse,
        world_size=context.world_size,
        train_images_per_second=(iteration - start) * images_per_iteration / max(wall - resumed_elapsed, 1e-9),
        gradient_variance=float(torch.tensor(variances).median()) if variances else None,
    )
    for name in ("sse", "psnr", "optimal_return_fraction"):
        if name in metrics:
            writer.add_scalar(f"eval/{name}", metrics[name], iteration)
    log_rollout_gif(writer, "eval/rollouts", eval_images[:4], programs[:4], dictionary, geometry, iteration)
    writer.close()
    write_metrics_json(args.metrics_json, metrics)
    print(f"TensorBoard logs: {Path(args.logdir) / run_name}  (tensorboard --logdir {args.logdir})")
    print(f"checkpoint: {checkpoint_path}")
    figures = ", ".join(
        f"{k}={metrics[k]:.4g}" for k in ("sse", "psnr", "optimal_return_fraction", "images_per_second") if k in metrics
    )
    print(
        f"held-out {args.eval_split} ({metrics['num_images']} images): {figures}; "
        f"{iteration} iterations in {wall / 60:.1f} min"
    )
    return metrics


if __name__ == "__main__":
    record(main)()  # under torchrun, the failing rank's traceback is shown in the run's summary
