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
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, policy_encoder
from agents.estimators import BASELINES, ESTIMATORS, SampleBatch, returns_to_go
from agents.policy import PainterPolicy, PolicyConfig, policy_for
from agents.rollout import rollout
from decoders.dictionary import PatchDictionary
from decoders.kernel import decode, patch_ids
from painter_env.config import PainterConfig, build_painter, device_of
from train.common.checkpoint import generator_states, load_checkpoint, restore_generator_states, save_checkpoint
from train.common.config import arg, parse_args
from train.common.metrics import psnr, write_metrics_json
from train.common.tensorboard import log_dictionary, log_hparams_text, log_image_grid, log_rollout_gif, make_writer
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
    baseline: str = arg("loo", "REINFORCE baseline", choices=BASELINES)
    samples: int = arg(4, "programs sampled per image (S)")
    beta: float = arg(1.0, "inverse temperature: log q_r(x|z) = -beta * SSE")
    entropy_coef: float = arg(0.0, "weight of the policy-entropy bonus")
    batch_size: int = arg(16, "images per iteration (each sampled --samples times)")
    iterations: int = arg(600, "training iterations")
    minutes: float = arg(9.0, "stop training after this many minutes (the final evaluation comes after)")
    lr: float = arg(1e-3, "Adam learning rate of the policy")
    dictionary_lr: float = arg(3e-4, "Adam learning rate of the dictionary")
    max_grad_norm: float = arg(5.0, "gradient-norm clipping of the policy")
    moving_average_decay: float = arg(0.9, "decay of the moving-average baseline")
    hidden_size: int = arg(64, "GRU hidden units")
    feature_size: int = arg(16, "per-position feature channels")
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
        dataset=args.dataset, data_root=args.data_root, split=split, image_size=args.image_size, patch_size=args.patch_size,
        num_prototypes=args.num_prototypes, num_levels=args.num_levels, move_radius=args.move_radius,
        max_steps=args.steps, dictionary=dictionary if dictionary is not None else args.dictionary, seed=args.seed,
    )


def sample_batch(policy, dictionary, targets, geometry, steps, args, generator, freeze):
    """Roll out S programs per image and assemble the estimator's input."""
    count = targets.shape[0]
    repeated = targets.repeat_interleave(args.samples, 0)
    out = rollout(policy, repeated, dictionary, geometry, steps, generator=generator)
    values, support = dictionary.patches()
    if freeze:
        values = values.detach()
    canvas = decode(out.actions, values, support, dictionary.num_levels, geometry)
    sse = (repeated - canvas).square().flatten(1).sum(1)
    shape = (count, args.samples, steps)
    batch = SampleBatch(
        out.log_probs.view(shape), out.rewards.view(shape), sse.view(count, args.samples),
        out.entropy.view(shape), out.values.view(shape),
    )
    return batch, out


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


def usage_entropy(actions: torch.Tensor, num_levels: int, num_patches: int) -> float:
    """Entropy (bits) of how often each (k, b) patch is used: low means a few patches do everything."""
    counts = torch.bincount(patch_ids(actions, num_levels).flatten(), minlength=num_patches).float()
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
    device = device_of(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dictionary = PatchDictionary.from_payload(resumed["dictionary"]) if resumed else None
    painter = build_painter(env_config(args, args.split, dictionary))
    dictionary, geometry, steps = painter.dictionary.to(device), painter.geometry, painter.max_steps
    images = painter.data.images
    policy = (PainterPolicy(PolicyConfig(**resumed["policy_config"])) if resumed else policy_for(
        geometry, dictionary.channels, dictionary.num_prototypes, dictionary.num_levels,
        hidden_size=args.hidden_size, feature_size=args.feature_size,
    )).to(device)
    groups = [{"params": list(policy.parameters()), "lr": args.lr}]
    if not args.freeze_dictionary:
        groups.append({"params": list(dictionary.parameters()), "lr": args.dictionary_lr})
    optimizer = torch.optim.Adam(groups)
    generators = {"data": torch.Generator().manual_seed(args.seed), "sample": torch.Generator(device).manual_seed(args.seed + 1)}
    moving_average = torch.zeros(steps, device=device)
    start, elapsed = 0, 0.0
    run_name = args.run_name or f"{args.dataset}__{args.estimator}__s{args.seed}__{int(time.time())}"
    if resumed:
        policy.load_state_dict(resumed["policy"])
        optimizer.load_state_dict(resumed["optimizer"])
        restore_generator_states(generators, resumed["rng"])
        moving_average = resumed["moving_average"].to(device)
        start, elapsed, run_name = resumed["iteration"], resumed["elapsed"], resumed["run_name"]
    checkpoint_path = Path(args.checkpoint_dir) / run_name / "checkpoint.pt"
    writer = make_writer(args.logdir, run_name)
    log_hparams_text(writer, {**dataclasses.asdict(args), "run_name": run_name})
    estimator = ESTIMATORS[args.estimator]
    options = {"beta": args.beta, "entropy_coef": args.entropy_coef}
    if args.estimator == "reinforce":
        options.update(baseline=args.baseline, moving_average=moving_average)
    parameters = [p for group in groups for p in group["params"]]

    def checkpoint(iteration: int, rng: dict | None = None) -> None:
        save_checkpoint({
            "kind": CHECKPOINT_KIND, "version": 1, "run_name": run_name, "iteration": iteration,
            "elapsed": elapsed, "args": dataclasses.asdict(args), "env_config": env_config(args, args.split).to_dict(),
            "dictionary": dictionary.to_payload(), "policy_config": policy.config.to_dict(),
            "policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng or generator_states(generators), "moving_average": moving_average.cpu(),
        }, checkpoint_path)

    iteration = done = start
    snapshot, variances, sse = None, [], None
    bar = tqdm(range(start, args.iterations), initial=start, total=args.iterations, desc="training")
    began = time.perf_counter() - elapsed
    try:
        for iteration in bar:
            if (time.perf_counter() - began) / 60 > args.minutes:
                break
            snapshot = generator_states(generators)  # what a checkpoint of an unfinished iteration restores
            index = torch.randint(len(images), (args.batch_size,), generator=generators["data"])
            targets = images[index].to(device)
            batch, out = sample_batch(policy, dictionary, targets, geometry, steps, args, generators["sample"],
                                      args.freeze_dictionary)
            logging = (iteration + 1) % args.log_every == 0
            optimizer.zero_grad()
            if logging:
                half = args.batch_size // 2
                fields = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
                halves = [estimator(SampleBatch(*(None if t is None else t[part] for t in fields)), **options)
                          for part in (slice(0, half), slice(half, None))]
                grads, spread = gradient_variance([h.loss for h in halves], parameters)
                for p, g in zip(parameters, grads):
                    p.grad = g
                surrogate = halves[0]
            else:
                surrogate = estimator(batch, **options)
                surrogate.loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
            moving_average.mul_(args.moving_average_decay).add_(
                (1 - args.moving_average_decay) * args.beta * returns_to_go(batch.rewards.detach()).mean((0, 1))
            )
            optimizer.step()
            done, snapshot = iteration + 1, None
            returns = batch.rewards.sum(-1).detach()
            sse = float(batch.sse.detach().mean())
            blank = float(targets.square().flatten(1).sum(1).mean())
            bar.set_postfix(sse=f"{sse:.3f}", entropy=f"{float(batch.entropy.detach().sum(-1).mean()):.2f}")
            elapsed = time.perf_counter() - began
            if logging:
                step = iteration + 1
                writer.add_scalar("charts/sse", sse, step)
                writer.add_scalar("charts/psnr", psnr(sse, targets[0].numel()), step)
                writer.add_scalar("charts/return", float(returns.mean()), step)
                if painter.data.programs is not None:
                    writer.add_scalar("charts/optimal_return_fraction", float(returns.mean()) / blank, step)
                writer.add_scalar("charts/images_per_second", (step - start) * args.batch_size / max(elapsed, 1e-9), step)
                writer.add_scalar("losses/encoder", float(surrogate.encoder_loss.detach()), step)
                writer.add_scalar("losses/decoder", float(surrogate.decoder_loss.detach()), step)
                writer.add_scalar("losses/value", float(surrogate.value_loss.detach()), step)
                writer.add_scalar("policy/entropy", float(batch.entropy.detach().sum(-1).mean()), step)
                writer.add_scalar("policy/gradient_variance", spread, step)
                variances.append(spread)
                writer.add_scalar("policy/position_scale", float(policy.log_position_scale.detach().exp()), step)
                writer.add_scalar("dictionary/usage_entropy_bits",
                                  usage_entropy(out.actions, dictionary.num_levels, dictionary.num_patches), step)
            if (iteration + 1) % args.image_every == 0 or iteration == start:
                show = slice(0, 4 * args.samples, args.samples)
                log_image_grid(writer, "images/targets", targets[:4], iteration + 1)
                log_image_grid(writer, "images/reconstructions", out.canvas[show], iteration + 1)
                log_dictionary(writer, dictionary, iteration + 1)
                log_rollout_gif(writer, "rollouts/painting", targets[:4], out.actions[show], dictionary, geometry,
                                iteration + 1)
            if (iteration + 1) % args.save_every == 0:
                checkpoint(iteration + 1)
        else:
            iteration = args.iterations
    except KeyboardInterrupt:
        bar.close()
        checkpoint(done, snapshot)
        print(f"\ninterrupted after iteration {done}: checkpoint saved to {checkpoint_path}")
        print(f"continue with: python -m train.reinforce --resume {checkpoint_path} --iterations {args.iterations}")
        writer.close()
        return {}
    bar.close()
    wall = time.perf_counter() - began
    checkpoint(iteration)

    held_out = build_painter(env_config(args, args.eval_split, dictionary))
    eval_images = held_out.data.images[: args.eval_images]
    policy.eval()
    metrics, programs = evaluate_encoder(policy_encoder(policy, held_out), eval_images, held_out, 256, device)
    metrics.update(wall_seconds=wall, iterations=iteration, estimator=args.estimator, dataset=args.dataset,
                   eval_split=args.eval_split, train_sse_sampled=sse,
                   gradient_variance=float(torch.tensor(variances).median()) if variances else None)
    for name in ("sse", "psnr", "optimal_return_fraction"):
        if name in metrics:
            writer.add_scalar(f"eval/{name}", metrics[name], iteration)
    log_rollout_gif(writer, "eval/rollouts", eval_images[:4], programs[:4], dictionary, geometry, iteration)
    writer.close()
    write_metrics_json(args.metrics_json, metrics)
    print(f"TensorBoard logs: {Path(args.logdir) / run_name}  (tensorboard --logdir {args.logdir})")
    print(f"checkpoint: {checkpoint_path}")
    figures = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("sse", "psnr", "optimal_return_fraction", "images_per_second")
                        if k in metrics)
    print(f"held-out {args.eval_split} ({metrics['num_images']} images): {figures}; "
          f"{iteration} iterations in {wall / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
