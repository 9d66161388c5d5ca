"""Train the RNN encoder and the dictionary with REINFORCE, importance weighting or VIMCO.

    python -m train.reinforce --env painter                     # shapes, a minute or two on a CPU
    python -m train.reinforce --env painter --dataset mnist --data-root DIR \\
        --split "test[:8000]" --eval-split "test[8000:]" --minutes 30

Each iteration draws a batch of images, samples ``--samples`` programs per image from the policy,
paints them with the kernel and turns them into a surrogate loss with the chosen estimator
(``agents.estimators``): the policy learns through the score function, the dictionary through the
painted reconstruction with the programs held fixed. The run trains for ``--minutes``
(``--iterations`` caps it), then scores the policy's most likely programs on ``--eval-split`` beside
its untrained twin (the policy as initialised, on the learned dictionary). Checkpoints are written
atomically every ``--save-every`` iterations, at the end and on Ctrl-C; ``--resume`` continues a run
exactly. Under ``torchrun`` each rank draws its own shards of the batch and gradients are averaged
(docs/scaling.md); ``--shards N`` on one process reproduces N ranks.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from agents.encoders import CHECKPOINT_KIND, policy_encoder
from agents.estimators import BASELINES, ESTIMATORS, SampleBatch, half_batch_gradients, returns_to_go
from agents.policy import PainterPolicy, PolicyConfig, policy_for
from agents.rollout import Rollout, sample_batch
from decoders.cgae import usage_entropy
from decoders.dictionary import PatchDictionary
from decoders.kernel import patch_ids
from decoders.storage import atomic_save, load_checkpoint
from painter_env.config import Painter, build_painter
from train.common import distributed as dist
from train.common.checkpoint import generator_states, restore_generator_states
from train.common.config import arg, parse_args
from train.common.metrics import learning_gain, psnr
from train.common.painter import PainterArgs, env_config, fit_action_space
from train.common.run import INTERRUPTED, Budget, apply_threads_and_seed, default_run_name, report, user_errors
from train.common.tensorboard import claim_run_name, log_hparams_text, log_rollout_gif, log_samples, make_writer
from train.evaluate import evaluate_encoder, policy_sse

KEPT_ON_RESUME = ("iterations", "minutes", "resume", "device", "threads", "metrics_json")


@dataclass
class Args(PainterArgs):
    env: str = arg("painter", "environment to train on (the patch painter)", choices=("painter",))
    iterations: int = arg(None, "stop after this many iterations even if --minutes are left", type=int, at_least=0)
    freeze_dictionary: bool = arg(False, "keep the dictionary fixed (train the encoder only)")
    hard_em: bool = arg(False, "fit only the dictionary, to the untrained policy's most likely programs (hard EM)")
    estimator: str = arg("iw", "gradient estimator", choices=tuple(ESTIMATORS))
    baseline: str = arg("loo", "REINFORCE baseline (self-critical: the most likely program's)", choices=BASELINES)
    per_step: bool = arg(False, "iw and vimco: a learning signal per step (default: one per program)")
    samples: int = arg(4, "programs sampled per image (S)", at_least=1)
    beta: float = arg(1.0, "inverse temperature: log q_r(x|z) = -beta * SSE", above=0)
    entropy_coef: float = arg(0.0, "weight of the policy-entropy bonus", at_least=0)
    batch_size: int = arg(16, "images per iteration and per rank (even: the halves estimate the variance)", at_least=2)
    shards: int = arg(1, "shards per rank, each with its own generators (--shards N reproduces N ranks)", at_least=1)
    lr: float = arg(1e-3, "Adam learning rate of the policy", at_least=0)
    dictionary_lr: float = arg(3e-4, "Adam learning rate of the dictionary", at_least=0)
    max_grad_norm: float = arg(5.0, "gradient-norm clipping of the policy", above=0)
    moving_average_decay: float = arg(0.9, "decay of the moving-average baseline", at_least=0)
    hidden_size: int = arg(64, "GRU hidden units", at_least=1)
    feature_size: int = arg(16, "per-position feature channels", at_least=1)
    score_scale: float = arg(50.0, "starting scale of the matched-filter logits (large: start near greedy)", above=0)
    passes: int = arg(2, "encoder passes: a draft, then rewrites that see what later strokes cover", at_least=1)
    resume: str = arg(None, "continue the run saved in this checkpoint", type=str)
    save_every: int = arg(50, "iterations between checkpoints", at_least=1)
    log_every: int = arg(10, "iterations between scalar logs (with a gradient-variance estimate)", at_least=1)
    image_every: int = arg(100, "iterations between image, dictionary and rollout-GIF logs", at_least=1)
    curve_every: int = arg(250, "iterations between held-out learning-curve points (0: none)", at_least=0)
    curve_images: int = arg(256, "held-out images of each learning-curve point", at_least=1)


@dataclass
class Trainer:
    """What the loop carries from one iteration to the next; ``done`` iterations are finished."""

    args: Args
    context: dist.Context
    device: torch.device
    painter: Painter
    held_out: Painter
    policy: PainterPolicy
    twin: PainterPolicy  # the policy as initialised: what training adds is measured against it
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]
    moving_average: torch.Tensor
    name: str = ""
    writer: object = None
    done: int = 0
    elapsed: float = 0.0
    resumed_at: tuple[int, float] = (0, 0.0)
    variances: list = dataclasses.field(default_factory=list)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.args.checkpoint_dir) / self.name / "checkpoint.pt"


@dataclass
class Step:
    """What one iteration reports: figures averaged over the ranks, and its first shard's samples."""

    sse: float
    returns: float
    blank_sse: float
    entropy: float
    losses: torch.Tensor
    spread: float | None
    targets: torch.Tensor
    rollout: Rollout


def parse(argv) -> tuple[Args, dict | None]:
    """The flags, or a resumed run's own flags with how long to go on and where from this command."""
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    resumed = load_checkpoint(args.resume, CHECKPOINT_KIND) if args.resume else None
    if resumed is not None:
        args = dataclasses.replace(Args(**resumed["args"]), **{key: getattr(args, key) for key in KEPT_ON_RESUME})
    if args.hard_em and args.freeze_dictionary:
        raise ValueError("--hard-em fits the dictionary: it cannot be combined with --freeze-dictionary")
    args = dataclasses.replace(args, samples=1) if args.hard_em else args  # one program per image: the most likely
    if args.batch_size % (2 * args.shards):
        raise ValueError(f"--batch-size must be an even multiple of --shards ({args.shards}), got {args.batch_size}")
    return args, resumed


def set_up(argv) -> tuple[Trainer, Budget]:
    """Build the painter, policy, optimiser and generators (from a checkpoint when resuming)."""
    args, resumed = parse(argv)
    context, device_name = dist.init_from_env(args.device)
    if resumed is not None and resumed.get("world_size", 1) != context.world_size:
        size = resumed.get("world_size", 1)
        raise ValueError(
            f"{args.resume} was written by {size} process(es): resume it on as many, not {context.world_size}"
        )
    device = apply_threads_and_seed(dataclasses.replace(args, device=device_name))
    dictionary = PatchDictionary.from_payload(resumed["dictionary"]) if resumed else None
    args = fit_action_space(args, dictionary)
    painter = build_painter(env_config(args, args.split, dictionary))
    painter.dictionary.to(device)
    held_out = build_painter(env_config(args, args.eval_split, painter.dictionary))
    if resumed is not None:
        policy = PainterPolicy(PolicyConfig(**resumed["policy_config"])).to(device)
    else:
        sizes = dict(hidden_size=args.hidden_size, feature_size=args.feature_size, score_scale=args.score_scale)
        policy = policy_for(painter.geometry, painter.dictionary, passes=args.passes, **sizes).to(device)
    groups = [] if args.hard_em else [{"params": list(policy.parameters()), "lr": args.lr}]
    if not args.freeze_dictionary:
        groups.append({"params": list(painter.dictionary.parameters()), "lr": args.dictionary_lr})
    shards = range(context.rank * args.shards, (context.rank + 1) * args.shards)
    generators = dist.shard_generators(args.seed, shards, device)
    moving_average = torch.zeros(painter.max_steps, device=device)
    twin = copy.deepcopy(policy).requires_grad_(False)
    trainer = Trainer(
        args, context, device, painter, held_out, policy, twin, torch.optim.Adam(groups), generators, moving_average
    )
    if resumed is not None:
        policy.load_state_dict(resumed["policy"])
        twin.load_state_dict(resumed["twin"])
        trainer.optimizer.load_state_dict(resumed["optimizer"])
        restore_generator_states(trainer.generators, resumed["rng"])
        trainer.moving_average = resumed["moving_average"].to(device)
        trainer.done, trainer.elapsed, trainer.name = resumed["iteration"], resumed["elapsed"], resumed["run_name"]
        trainer.resumed_at = (trainer.done, trainer.elapsed)
    budget = Budget(args.minutes, args.iterations, "--iterations", trainer.done, trainer.elapsed, not context.lead)
    dist.broadcast_(trainer.parameters, context)
    return trainer, budget


def open_run(trainer: Trainer) -> None:
    """Rank 0 names the run (``--run-name``, or dataset, estimator, seed and time) and opens TensorBoard."""
    args, context = trainer.args, trainer.context
    name = trainer.name or args.run_name
    if not name and context.lead:
        name = claim_run_name(
            default_run_name(args.dataset, args.estimator, f"s{args.seed}"), args.logdir, args.checkpoint_dir
        )
    trainer.name = dist.merge_across({"name": name}, context)["name"]
    if context.lead:
        trainer.writer = make_writer(args.logdir, trainer.name)
        hparams = {**dataclasses.asdict(args), **trainer.painter.config.to_dict(), "world_size": context.world_size}
        log_hparams_text(trainer.writer, {**hparams, "run_name": trainer.name})


def train(trainer: Trainer, budget: Budget) -> None:
    """Iterate until the budget is spent; checkpoints every ``--save-every`` iterations, at the end and on
    Ctrl-C (the last finished iteration, with the generator states the next one starts from; exit 130)."""
    args, context = trainer.args, trainer.context
    try:
        while True:
            stop = torch.tensor([float(budget.over())], device=trainer.device)
            dist.broadcast_([stop], context)  # rank 0's clock decides: every rank stops at the same iteration
            if stop.item():
                break
            snapshot = generator_states(trainer.generators)  # what a Ctrl-C checkpoint restores
            step = train_iteration(trainer, logging=(trainer.done + 1) % args.log_every == 0)
            trainer.done, trainer.elapsed = trainer.done + 1, budget.elapsed
            log(trainer, step)
            if args.curve_every and trainer.done % args.curve_every == 0 and context.lead:
                log_curve(trainer)
            budget.advance(sse=f"{step.sse:.3f}", entropy=f"{step.entropy:.2f}")
            if trainer.done % args.save_every == 0:
                save(trainer)
    except KeyboardInterrupt:
        budget.close()
        interrupted(trainer, snapshot)
    except Exception as error:
        dist.report_failure(context, error, trainer.checkpoint_path)
        raise
    budget.close()
    save(trainer)
    dist.shutdown(context)


def train_iteration(trainer: Trainer, logging: bool) -> Step:
    """One gradient step of the policy and the dictionary on a batch drawn shard by shard."""
    args, painter, context = trainer.args, trainer.painter, trainer.context
    targets, batches, rollouts = [], [], []
    for shard in range(context.rank * args.shards, (context.rank + 1) * args.shards):
        data, sample = dist.shard_names(shard)
        index = torch.randint(len(painter.data), (args.batch_size // args.shards,), generator=trainer.generators[data])
        targets.append(painter.data.images[index].to(trainer.device))
        batch, rollout = sample_batch(
            trainer.policy,
            painter.dictionary,
            targets[-1],
            painter.geometry,
            painter.max_steps,
            args.samples,
            trainer.generators[sample],
            reference=args.baseline == "self-critical",
            fit_dictionary=not args.freeze_dictionary,
            mode="greedy" if args.hard_em else "sample",
        )
        batches.append(batch), rollouts.append(rollout)
    batch, targets = SampleBatch.concatenate(batches), torch.cat(targets)
    trainer.optimizer.zero_grad()
    if logging:  # two half-batch gradients: their mean is the gradient, their difference its spread
        halves = [surrogate(trainer, batch.rows(part)) for part in batch.halves()]
        loss, spread = halves[0], half_batch_gradients(halves, trainer.parameters)
    else:
        loss, spread = surrogate(trainer, batch), None
        loss.loss.backward()
    # Averaged by hand, not by DistributedDataParallel: the policy runs step by step inside the
    # rollout (no single forward for DDP to hook), and logging iterations take half-batch gradients.
    dist.average_([p.grad for p in trainer.parameters if p.grad is not None], context)
    torch.nn.utils.clip_grad_norm_(trainer.policy.parameters(), args.max_grad_norm)
    returns = dist.mean_across(returns_to_go(batch.rewards).mean((0, 1)), context)
    decay = args.moving_average_decay
    trainer.moving_average.mul_(decay).add_((1 - decay) * args.beta * returns)
    trainer.optimizer.step()
    blank = targets.square().flatten(1).sum(1)
    figures = torch.stack([batch.sse.mean(), returns[0], blank.mean(), batch.entropy.sum(-1).mean()]).detach()
    losses = torch.stack([loss.encoder_loss, loss.decoder_loss, loss.value_loss]).detach()
    first = targets[: len(targets) // args.shards]
    return Step(*dist.mean_across(figures, context).tolist(), losses, spread, first, rollouts[0])


def surrogate(trainer: Trainer, batch: SampleBatch):
    """The chosen estimator's surrogate loss (``agents.estimators``) on a batch of samples."""
    args = trainer.args
    options = {"beta": args.beta, "entropy_coef": args.entropy_coef}
    if args.estimator == "reinforce":
        options.update(baseline=args.baseline, moving_average=trainer.moving_average)
    else:
        options.update(per_step=args.per_step)
    return ESTIMATORS[args.estimator](batch, **options)


def log(trainer: Trainer, step: Step) -> None:
    """CleanRL-style scalars every ``--log-every`` iterations (``charts/``, ``losses/``, ``policy/``,
    ``dictionary/``); targets, reconstructions, the dictionary and a painting GIF every ``--image-every``."""
    args, context, dictionary = trainer.args, trainer.context, trainer.painter.dictionary
    if step.spread is not None:
        ids = patch_ids(step.rollout.actions, dictionary.num_levels).flatten()
        usage = torch.bincount(ids, minlength=dictionary.num_patches).float()
        spread = step.losses.new_tensor([step.spread / context.world_size])  # the mean of W ranks' gradients
        shared = dist.mean_across(torch.cat([step.losses, spread, usage]), context)
        trainer.variances.append(float(shared[3]))
        images = (trainer.done - trainer.resumed_at[0]) * args.batch_size * context.world_size
        scalars = {"charts/sse": step.sse, "charts/psnr": psnr(step.sse, step.targets[0].numel())}
        scalars.update({"charts/return": step.returns, "policy/entropy": step.entropy})
        scalars["charts/images_per_second"] = images / max(trainer.elapsed - trainer.resumed_at[1], 1e-9)
        scalars.update({f"losses/{name}": float(value) for name, value in zip(("encoder", "decoder", "value"), shared)})
        scalars["policy/gradient_variance"] = trainer.variances[-1]
        scalars["policy/position_scale"] = float(trainer.policy.log_position_scale.detach().exp())
        scalars["dictionary/usage_entropy_bits"] = usage_entropy(shared[4:])
        if trainer.painter.data.programs is not None:
            scalars["charts/optimal_return_fraction"] = step.returns / step.blank_sse
        for tag, value in scalars.items() if context.lead else ():
            trainer.writer.add_scalar(tag, value, trainer.done)
    if context.lead and (trainer.done % args.image_every == 0 or trainer.done - 1 == trainer.resumed_at[0]):
        shown = slice(0, 4 * args.samples, args.samples)  # the first sample of the first four images
        canvases, programs, geometry = step.rollout.canvas[shown], step.rollout.actions[shown], trainer.painter.geometry
        log_samples(trainer.writer, step.targets[:4], canvases, programs, dictionary, geometry, trainer.done)


def log_curve(trainer: Trainer) -> None:
    """A learning-curve point: held-out SSE of the most likely program, of the best of S samples, and of
    the untrained twin on the current dictionary (``eval/``); their ratio is what training has added."""
    held_out, device, samples = trainer.held_out, trainer.device, trainer.args.samples
    images = held_out.data.images[: trainer.args.curve_images]
    likely, untrained = (policy_sse(policy, held_out, images, device) for policy in (trainer.policy, trainer.twin))
    figures = {"likely_sse": likely, "untrained_sse": untrained, "learning_gain": learning_gain(untrained, likely)}
    if samples > 1:
        figures[f"best_of_{samples}_sse"] = policy_sse(trainer.policy, held_out, images, device, samples, 1)
    for name, value in figures.items() if figures["learning_gain"] is not None else ():
        trainer.writer.add_scalar(f"eval/{name}", value, trainer.done)


def save(trainer: Trainer, rng: dict | None = None) -> None:
    """Every rank gives its generator states; rank 0 writes the checkpoint atomically."""
    rng = dist.merge_across(rng or generator_states(trainer.generators), trainer.context)
    if not trainer.context.lead:
        return
    args, policy = trainer.args, trainer.policy
    run = {"kind": CHECKPOINT_KIND, "version": 1, "run_name": trainer.name, "iteration": trainer.done}
    run.update(world_size=trainer.context.world_size, elapsed=trainer.elapsed, args=dataclasses.asdict(args))
    model = {"env_config": trainer.painter.config.to_dict(), "dictionary": trainer.painter.dictionary.to_payload()}
    model.update(policy_config=policy.config.to_dict(), policy=policy.state_dict(), twin=trainer.twin.state_dict())
    state = {"optimizer": trainer.optimizer.state_dict(), "rng": rng, "moving_average": trainer.moving_average.cpu()}
    atomic_save({**run, **model, **state}, trainer.checkpoint_path)


def interrupted(trainer: Trainer, snapshot: dict | None) -> None:
    path = trainer.checkpoint_path
    if trainer.context.distributed:  # the ranks stopped at different points: no consistent state to save
        print(f"\ninterrupted: resume from the last periodic checkpoint, {path}", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    save(trainer, snapshot)
    trainer.writer.close()
    print(f"\ninterrupted after iteration {trainer.done}: checkpoint saved to {path}", file=sys.stderr)
    print(f"continue with: python -m train.reinforce --resume {path}", file=sys.stderr)
    raise SystemExit(INTERRUPTED)


def evaluate(trainer: Trainer) -> dict:
    """Score the policy's most likely programs on the held-out images; log, write and print the figures."""
    args, writer, held_out, device = trainer.args, trainer.writer, trainer.held_out, trainer.device
    images = held_out.data.images[: args.eval_images]
    metrics, programs = evaluate_encoder(policy_encoder(trainer.policy, held_out), images, held_out, 256, device)
    untrained = policy_sse(trainer.twin, held_out, images, device)
    images_seen = (trainer.done - trainer.resumed_at[0]) * args.batch_size * trainer.context.world_size
    metrics.update(
        wall_seconds=trainer.elapsed,
        iterations=trainer.done,
        estimator=args.estimator,
        dataset=args.dataset,
        eval_split=args.eval_split,
        world_size=trainer.context.world_size,
        train_images_per_second=images_seen / max(trainer.elapsed - trainer.resumed_at[1], 1e-9),
        gradient_variance=float(torch.tensor(trainer.variances).median()) if trainer.variances else None,
        untrained_sse=untrained,
        learning_gain=learning_gain(untrained, metrics["sse"]),
    )
    for name in ("sse", "psnr", "optimal_return_fraction", "untrained_sse", "learning_gain"):
        if metrics.get(name) is not None:
            writer.add_scalar(f"eval/{name}", metrics[name], trainer.done)
    dictionary = trainer.painter.dictionary
    log_rollout_gif(writer, "eval/rollouts", images[:4], programs[:4], dictionary, held_out.geometry, trainer.done)
    writer.close()
    print(f"TensorBoard logs: {Path(args.logdir) / trainer.name}  (tensorboard --logdir {args.logdir})")
    print(f"checkpoint: {trainer.checkpoint_path}")
    row = {
        "encoder": "policy",
        "bits/image": f"{metrics['bits_per_image']:.0f}",
        "SSE": f"{metrics['sse']:.4g}",
        "PSNR": f"{metrics['psnr']:.2f}",
        "untrained twin SSE": f"{untrained:.4g}",
        "images/s": f"{metrics['images_per_second']:.0f}",
        "iterations": str(trainer.done),
        "wall s": f"{trainer.elapsed:.0f}",
    }
    if "optimal_return_fraction" in metrics:
        row["optimal return"] = f"{metrics['optimal_return_fraction']:.4f}"
    return report(args, metrics, row)


def main(argv=None) -> dict:
    with user_errors():
        trainer, budget = set_up(argv)
        open_run(trainer)
    train(trainer, budget)
    return evaluate(trainer) if trainer.context.lead else {}


if __name__ == "__main__":
    record(main)()  # under torchrun, the failing rank's traceback is shown in the run's summary
