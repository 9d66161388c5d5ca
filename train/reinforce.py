"""Train the RNN encoder and the dictionary with REINFORCE, importance weighting or VIMCO.

    python -m train.reinforce --env painter                     # shapes, a few minutes on a CPU
    python -m train.reinforce --env painter --dataset mnist --data-root DIR \\
        --split "test[:8000]" --eval-split "test[8000:]" --minutes 30

Each iteration draws a batch of images, samples ``--samples`` programs per image from the policy,
paints them with the kernel and turns them into a surrogate loss with the chosen estimator
(``agents.estimators``): the policy learns through the score function, the dictionary through the
painted reconstruction with the programs held fixed. TensorBoard logs go to ``--logdir/RUN``,
checkpoints to ``--checkpoint-dir/RUN/checkpoint.pt`` (atomically, every ``--save-every``
iterations, at the end and on Ctrl-C). ``--resume CHECKPOINT`` continues a run and ends with the
same figures as an uninterrupted run with the same seed and ``--iterations``. At the end the
policy is scored on ``--eval-split`` (held-out images).

Data-parallel under ``torchrun --nproc-per-node N -m train.reinforce`` (gloo on CPU, NCCL on
CUDA; ``--batch-size`` images per rank): each rank draws its own shards of the batch with its
own generators (shard ``s`` is seeded ``seed + SHARD_SEED_STRIDE * s``); gradients, the
moving-average baseline and the logged figures are averaged over the ranks; rank 0 alone writes
TensorBoard, checkpoints and metrics. ``--shards N`` on one process draws the same shards as N
ranks, so it reproduces their run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from tqdm import tqdm

from agents.encoders import CHECKPOINT_KIND, policy_encoder
from agents.estimators import BASELINES, ESTIMATORS, SampleBatch, Surrogate, memoised, returns_to_go
from agents.gibbs import program_sse, refine_programs
from agents.greedy import greedy_programs
from agents.memory import ProgramMemory
from agents.policy import PainterPolicy, PolicyConfig, policy_for
from agents.rollout import draft, rollout
from decoders.cgae import usage_entropy
from decoders.dictionary import PatchDictionary
from decoders.kernel import patch_ids
from decoders.storage import atomic_save, load_checkpoint
from painter_env.config import Painter, PainterConfig, build_painter
from train.common.checkpoint import generator_states, restore_generator_states
from train.common.config import arg, parse_args
from train.common.distributed import (
    Context,
    average_,
    broadcast_,
    gather_across,
    init_from_env,
    mean_across,
    merge_across,
    report_failure,
    shutdown,
)
from train.common.metrics import psnr, write_metrics_json
from train.common.run import (
    INTERRUPTED,
    CommonArgs,
    apply_threads_and_seed,
    default_run_name,
    user_errors,
)
from train.common.tensorboard import (
    claim_run_name,
    log_dictionary,
    log_hparams_text,
    log_image_grid,
    log_rollout_gif,
    make_writer,
)
from train.evaluate import evaluate_encoder

SHARD_SEED_STRIDE = 10_000


@dataclass
class Args(CommonArgs):
    dataset: str = arg("shapes", "shapes (built in), mnist, fashion-mnist or folder:PATH")
    split: str = arg("train", "split to fit, e.g. train, 'test[:8000]'")
    eval_split: str = arg("test", "held-out split scored at the end, e.g. test, 'test[8000:]'")
    eval_images: int = arg(1000, "number of held-out images scored at the end")
    minutes: float = arg(9.0, "stop training after this many minutes (the final evaluation comes after)")
    env: str = arg("painter", "environment to train on (the patch painter)", choices=("painter",))
    image_size: int = arg(None, "resize images to this size (shapes: generate at it; default 28)", type=int)
    steps: int = arg(None, "program length T (default: 8 on shapes, 16 otherwise)", type=int)
    match_bits: float = arg(
        None,
        "choose T so that the program's bits, T log2((2M+1)^2 K L), are closest to this (M: see --move-radius)",
        type=float,
    )
    patch_size: int = arg(
        None,
        "patch size R (default: the given dictionary's, else T R^2 about half the canvas: 7 for T=8 at 28x28)",
        type=int,
    )
    num_prototypes: int = arg(None, "K (default: 12 ground-truth shapes, else 32 k-means++)", type=int)
    num_levels: int = arg(3, "L, code levels per prototype")
    move_radius: int = arg(
        None,
        "largest cursor move M (default: the whole canvas; with --match-bits, every position from the centre)",
        type=int,
    )
    support_threshold: float = arg(
        0.1, "k-means++ dictionaries: a prototype paints only where it is brighter than this (0: its whole square)"
    )
    dictionary: str = arg(None, "start from this dictionary file or checkpoint", type=str)
    freeze_dictionary: bool = arg(False, "keep the dictionary fixed (train the encoder only)")
    estimator: str = arg("iw", "gradient estimator", choices=tuple(ESTIMATORS))
    baseline: str = arg(
        "loo",
        "REINFORCE baseline (self-critical: the return of the policy's own most likely program)",
        choices=BASELINES,
    )
    vimco_per_program: bool = arg(
        True, "vimco: one learning signal per program, as in the paper; --no-vimco-per-program refines it per step"
    )
    iw_per_step: bool = arg(False, "iw: refine the control variate per step (default: 1/S, one per program)")
    samples: int = arg(4, "programs sampled per image (S)")
    beta: float = arg(1.0, "inverse temperature: log q_r(x|z) = -beta * SSE")
    entropy_coef: float = arg(0.0, "weight of the policy-entropy bonus")
    batch_size: int = arg(16, "images per iteration and per rank (each sampled --samples times)")
    shards: int = arg(
        1, "shards per rank, each drawn and sampled with its own generators (--shards N reproduces N ranks)"
    )
    iterations: int = arg(600, "training iterations")
    lr: float = arg(1e-3, "Adam learning rate of the policy")
    dictionary_lr: float = arg(3e-4, "Adam learning rate of the dictionary")
    max_grad_norm: float = arg(5.0, "gradient-norm clipping of the policy")
    moving_average_decay: float = arg(0.9, "decay of the moving-average baseline")
    hidden_size: int = arg(64, "GRU hidden units")
    feature_size: int = arg(16, "per-position feature channels")
    score_scale: float = arg(
        50.0, "starting inverse temperature of the matched-filter logits (learned; large: start near greedy search)"
    )
    passes: int = arg(
        2,
        "encoder passes: each pass after the first rewrites the previous pass's program, scoring strokes only on "
        "the pixels its later strokes leave visible (1: a single pass)",
    )
    fit_dictionary: str = arg(
        "samples",
        "what the dictionary is fitted to: the estimator's weighted samples, or the best program found so far "
        "for each image (memory; hard EM on refined programs)",
        choices=("samples", "memory"),
    )
    imitation_coef: float = arg(
        0.0, "weight of the encoder's imitation of the best program found so far for each image (0: none)"
    )
    proposals: list = arg(
        ["greedy", "policy"],
        "programs proposed to the memory: the policy's samples, greedy search's, the policy's most likely",
        type=str,
        choices=("samples", "greedy", "policy"),
    )
    refine_sweeps: int = arg(
        1, "Gibbs sweeps that refine an image's remembered program each time the image is drawn (memory only)"
    )
    refine_beta: float = arg(100.0, "inverse temperature of those Gibbs sweeps (large: coordinate ascent)")
    refine_candidates: int = arg(
        4, "keep each refined step among the N placements of largest immediate reward (0: any placement)"
    )
    resume: str = arg(None, "continue the run saved in this checkpoint", type=str)
    save_every: int = arg(50, "iterations between checkpoints")
    log_every: int = arg(10, "iterations between scalar logs (with a gradient-variance estimate)")
    image_every: int = arg(100, "iterations between image, dictionary and rollout-GIF logs")


@dataclass
class Trainer:
    """Everything a run holds; ``done`` iterations are finished, ``elapsed`` seconds spent training."""

    args: Args
    context: Context
    device: torch.device
    painter: Painter
    held_out: Painter
    policy: PainterPolicy
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]
    moving_average: torch.Tensor
    run_name: str
    writer: object
    memory: ProgramMemory | None = None
    done: int = 0
    elapsed: float = 0.0
    resumed_at: tuple[int, float] = (0, 0.0)
    variances: list = dataclasses.field(default_factory=list)

    @property
    def dictionary(self) -> PatchDictionary:
        return self.painter.dictionary

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.args.checkpoint_dir) / self.run_name / "checkpoint.pt"

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def shards(self) -> range:
        rank, count = self.context.rank, self.args.shards
        return range(rank * count, (rank + 1) * count)


def env_config(args: Args, split: str, dictionary=None) -> PainterConfig:
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
        support_threshold=args.support_threshold,
        seed=args.seed,
    )


def uses_memory(args: Args) -> bool:
    return args.fit_dictionary == "memory" or args.imitation_coef > 0


def check_args(args: Args) -> None:
    if args.samples < 1 or args.batch_size < 2 or args.batch_size % 2:
        raise ValueError("--samples must be >= 1 and --batch-size an even number >= 2")
    if min(args.refine_sweeps, args.refine_candidates, args.imitation_coef) < 0 or args.refine_beta <= 0:
        raise ValueError("--refine-sweeps, --refine-candidates and --imitation-coef must be >= 0, --refine-beta > 0")
    if uses_memory(args) and not args.proposals:
        raise ValueError("the memory needs at least one of --proposals samples greedy policy")
    if args.match_bits is not None and args.match_bits <= 0:
        raise ValueError(f"--match-bits must be > 0, got {args.match_bits}")
    if args.shards < 1 or args.batch_size % args.shards:
        raise ValueError(f"--shards must be >= 1 and divide --batch-size ({args.batch_size}), got {args.shards}")


def set_up(argv) -> Trainer:
    """Parse the flags (or take a resumed run's), build the painter, policy and optimiser, name the run."""
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    resumed = load_checkpoint(args.resume, CHECKPOINT_KIND) if args.resume else None
    if resumed is not None:  # the run's settings win, except how long to go on and where
        keep = {name: getattr(args, name) for name in ("iterations", "minutes", "resume", "device", "metrics_json")}
        args = dataclasses.replace(Args(**resumed["args"]), **keep)
    check_args(args)
    context, device_name = init_from_env(args.device)
    if resumed is not None and resumed.get("world_size", 1) != context.world_size:
        raise ValueError(
            f"{args.resume} was written by a run on {resumed.get('world_size', 1)} process(es); resume it "
            f"on as many (torchrun --nproc-per-node), not {context.world_size}"
        )
    device = apply_threads_and_seed(dataclasses.replace(args, device=device_name))
    dictionary = PatchDictionary.from_payload(resumed["dictionary"]) if resumed else None
    if args.match_bits is not None and args.steps is None:
        steps, move_radius = action_space_for_bits(args, dictionary)
        args = dataclasses.replace(args, steps=steps, move_radius=move_radius)
    painter = build_painter(env_config(args, args.split, dictionary))
    painter.dictionary.to(device)
    held_out = build_painter(env_config(args, args.eval_split, painter.dictionary))
    policy = new_policy(args, painter, resumed).to(device)
    groups = [{"params": list(policy.parameters()), "lr": args.lr}]
    if not args.freeze_dictionary:
        groups.append({"params": list(painter.dictionary.parameters()), "lr": args.dictionary_lr})
    trainer = Trainer(
        args, context, device, painter, held_out, policy, torch.optim.Adam(groups),
        shard_generators(args.seed, range(context.rank * args.shards, (context.rank + 1) * args.shards), device),
        torch.zeros(painter.max_steps, device=device), run_name="", writer=None,
    )  # fmt: skip
    if uses_memory(args):
        trainer.memory = ProgramMemory(len(painter.data), painter.max_steps, device)
    if resumed is not None:
        restore(trainer, resumed)
    name_run(trainer)
    broadcast_(trainer.parameters, context)
    return trainer


def action_space_for_bits(args: Args, dictionary: PatchDictionary | None) -> tuple[int, int]:
    """The program length T and move radius M whose bits per image, T log2((2M+1)^2 K L), are closest
    to ``--match-bits`` (at least one step).

    M is ``--move-radius`` if given, else the smallest radius that reaches every position from the
    centre, where episodes start: the whole-canvas radius codes about four times as many moves as
    there are positions, so it spends about 2 bits per step on moves that clamp. The default patch
    size depends on T and the bits per step on the patch size, so T is found as a fixed point,
    starting from the dataset's default length."""
    steps, radius_for = None, {}
    while steps not in radius_for:
        painter = build_painter(env_config(dataclasses.replace(args, steps=steps), args.split, dictionary))
        move_radius = painter.geometry.centre_radius if args.move_radius is None else args.move_radius
        radius_for[steps] = move_radius
        per_step = math.log2((2 * move_radius + 1) ** 2 * painter.dictionary.num_patches)
        steps = max(1, round(args.match_bits / per_step))
    return steps, radius_for[steps]


def new_policy(args: Args, painter: Painter, resumed: dict | None) -> PainterPolicy:
    if resumed is not None:
        return PainterPolicy(PolicyConfig(**resumed["policy_config"]))
    dictionary = painter.dictionary
    sizes = dict(
        hidden_size=args.hidden_size, feature_size=args.feature_size, score_scale=args.score_scale, passes=args.passes
    )
    return policy_for(painter.geometry, dictionary.channels, dictionary.num_prototypes, dictionary.num_levels, **sizes)


def restore(trainer: Trainer, resumed: dict) -> None:
    """Put a checkpoint's training state back (the dictionary came with the painter)."""
    trainer.policy.load_state_dict(resumed["policy"])
    trainer.optimizer.load_state_dict(resumed["optimizer"])
    restore_generator_states(trainer.generators, resumed["rng"])
    trainer.moving_average = resumed["moving_average"].to(trainer.device)
    if trainer.memory is not None:
        trainer.memory.load_state_dict(resumed["memory"])
    trainer.done, trainer.elapsed, trainer.run_name = resumed["iteration"], resumed["elapsed"], resumed["run_name"]
    trainer.resumed_at = (trainer.done, trainer.elapsed)


def name_run(trainer: Trainer) -> None:
    """Rank 0 names the run (``--run-name``, or dataset, estimator, seed and time) and opens TensorBoard."""
    args, context = trainer.args, trainer.context
    name = trainer.run_name or args.run_name
    if not name and context.lead:
        base = default_run_name(args.dataset, args.estimator, f"s{args.seed}")
        name = claim_run_name(base, args.logdir, args.checkpoint_dir)
    trainer.run_name = merge_across({"run_name": name}, context)["run_name"]
    if context.lead:
        trainer.writer = make_writer(args.logdir, trainer.run_name)
        hparams = {**dataclasses.asdict(args), "run_name": trainer.run_name, "world_size": context.world_size}
        log_hparams_text(trainer.writer, hparams)


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


def sample_batch(policy, dictionary, targets, geometry, steps, args, generator, plan=None):
    """Roll out S programs per image and assemble the estimator's input. With several passes every
    sample rewrites its image's draft ``plan`` (drafted here if not given: once per image)."""
    count = targets.shape[0]
    if plan is None:
        plan = draft(policy, targets, dictionary, geometry, steps)
    repeated = targets.repeat_interleave(args.samples, 0)
    repeated_plan = None if plan is None else plan.repeat_interleave(args.samples, 0)
    out = rollout(policy, repeated, dictionary, geometry, steps, generator=generator, plan=repeated_plan)
    reference = None
    if args.estimator == "reinforce" and args.baseline == "self-critical":
        with torch.no_grad():  # the most likely program: what the encoder will output at test time
            reference = rollout(policy, targets, dictionary, geometry, steps, mode="greedy", plan=plan).rewards
    sse = painted_sse(repeated, out.actions, dictionary, geometry, fitted=args.fit_dictionary == "samples" and
                      not args.freeze_dictionary)  # fmt: skip
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


def painted_sse(targets, programs, dictionary, geometry, fitted: bool) -> torch.Tensor:
    """SSE ``(B,)`` of the programs' paintings, differentiable in the dictionary when it is ``fitted`` to them."""
    values, support = dictionary.patches()
    return program_sse(targets, programs, values if fitted else values.detach(), support, dictionary.num_levels,
                       geometry)  # fmt: skip


@dataclass
class Remembered:
    """The best known program of each drawn image (after refinement): its index in the fit split,
    the program ``(B, T, 4)``, its log q_e ``(B, 1)`` (teacher-forced) and its SSE ``(B, 1)``."""

    index: torch.Tensor
    programs: torch.Tensor
    log_probs: torch.Tensor
    sse: torch.Tensor


def recall(trainer: Trainer, index, targets, out, generator, plan=None) -> Remembered:
    """Amortise, then refine: the best of the remembered program and the ``--proposals``, improved by
    ``--refine-sweeps`` Gibbs sweeps; scored by the policy (teacher forcing) and painted."""
    args, painter, dictionary = trainer.args, trainer.painter, trainer.dictionary
    geometry, steps = painter.geometry, painter.max_steps
    candidates = [out.actions.view(len(index), args.samples, steps, 4)] if "samples" in args.proposals else []
    with torch.no_grad():
        if "greedy" in args.proposals:
            candidates.append(greedy_programs(targets, dictionary, geometry, steps)[0].unsqueeze(1))
        if "policy" in args.proposals:
            likely = rollout(trainer.policy, targets, dictionary, geometry, steps, mode="greedy", plan=plan)
            candidates.append(likely.actions.unsqueeze(1))
    best, _ = trainer.memory.best(index, targets, torch.cat(candidates, 1), dictionary, geometry)
    refined = refine_programs(targets, best, dictionary, geometry, args.refine_sweeps, args.refine_beta,
                              args.refine_beta, generator, args.refine_candidates or None)  # fmt: skip
    log_probs = torch.zeros(len(index), 1, device=targets.device)
    if args.imitation_coef > 0:
        taught = rollout(trainer.policy, targets, dictionary, geometry, steps, actions=refined, plan=plan)
        log_probs = taught.log_probs.sum(1, keepdim=True)
    fitted = args.fit_dictionary == "memory" and not args.freeze_dictionary
    sse = painted_sse(targets, refined, dictionary, geometry, fitted).unsqueeze(1)
    return Remembered(index, refined, log_probs, sse)


def draw_shards(trainer: Trainer):
    """Draw each shard's images and programs with its own generators and concatenate the shards."""
    args, painter = trainer.args, trainer.painter
    parts = []
    for shard in trainer.shards:
        data, sample = shard_names(shard)
        index = torch.randint(len(painter.data), (args.batch_size // args.shards,), generator=trainer.generators[data])
        targets = painter.data.images[index].to(trainer.device)
        # With several passes, the draft: a function of the image, written once per image.
        plan = draft(trainer.policy, targets, trainer.dictionary, painter.geometry, painter.max_steps)
        batch, out = sample_batch(
            trainer.policy, trainer.dictionary, targets, painter.geometry, painter.max_steps, args,
            trainer.generators[sample], plan,
        )  # fmt: skip
        remembered = None
        if trainer.memory is not None:
            remembered = recall(trainer, index.to(trainer.device), targets, out, trainer.generators[sample], plan)
        parts.append((targets, batch, out, remembered))
    if len(parts) == 1:
        return parts[0]
    return tuple(None if column[0] is None else concatenate(list(column)) for column in zip(*parts))


def concatenate(items: list):
    """Concatenate tensors, or dataclasses of tensors (``None`` fields stay ``None``), along the batch."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(items)
    fields = [f.name for f in dataclasses.fields(first)]
    return type(first)(
        *(None if getattr(first, f) is None else torch.cat([getattr(i, f) for i in items]) for f in fields)
    )


def remember(trainer: Trainer, remembered: Remembered | None) -> None:
    """Store the refined programs of every rank's images, in rank order, so that all memories stay equal."""
    if remembered is not None:
        index = gather_across(remembered.index, trainer.context)
        trainer.memory.store(index, gather_across(remembered.programs, trainer.context))


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


def estimator_options(trainer: Trainer) -> dict:
    args = trainer.args
    options = {"beta": args.beta, "entropy_coef": args.entropy_coef}
    if args.estimator == "reinforce":
        options.update(baseline=args.baseline, moving_average=trainer.moving_average)
    elif args.estimator == "iw":
        options.update(per_step=args.iw_per_step)
    else:
        options.update(per_step=not args.vimco_per_program)
    return options


def surrogate(trainer: Trainer, batch: SampleBatch, remembered: Remembered | None) -> Surrogate:
    """The estimator's surrogate on the samples, plus, with a memory, the memoised wake-sleep terms:
    the encoder imitates the remembered programs (``--imitation-coef``), the dictionary is fitted
    to them (``--fit-dictionary memory``)."""
    args = trainer.args
    sampled = ESTIMATORS[args.estimator](batch, **estimator_options(trainer))
    if remembered is None:
        return sampled
    taught = memoised(remembered.log_probs, remembered.sse, args.beta)
    encoder = sampled.encoder_loss + args.imitation_coef * taught.encoder_loss
    decoder = taught.decoder_loss if args.fit_dictionary == "memory" else sampled.decoder_loss
    return Surrogate(encoder + decoder + sampled.value_loss, encoder, decoder, sampled.value_loss, sampled.signal)


def half(item, part: slice):
    """Rows ``part`` of a dataclass of per-image tensors (``None`` stays ``None``)."""
    if item is None:
        return None
    fields = [getattr(item, f.name) for f in dataclasses.fields(item)]
    return type(item)(*(None if t is None else t[part] for t in fields))


def backward(trainer: Trainer, batch: SampleBatch, remembered, logging: bool) -> tuple[Surrogate, float | None]:
    """Set the parameters' gradients (averaged over the ranks); on logging iterations also estimate
    their variance from two half-batches."""
    trainer.optimizer.zero_grad()
    spread = None
    if logging:
        middle = batch.log_probs.shape[0] // 2
        halves = [
            surrogate(trainer, half(batch, part), half(remembered, part))
            for part in (slice(0, middle), slice(middle, None))
        ]
        grads, spread = gradient_variance([h.loss for h in halves], trainer.parameters)
        for p, g in zip(trainer.parameters, grads):
            p.grad = g
        loss = halves[0]
    else:
        loss = surrogate(trainer, batch, remembered)
        loss.loss.backward()
    # Averaged by hand, not by a DistributedDataParallel wrapper: the policy runs step by step inside
    # `rollout` (no single forward for DDP to hook), and logging iterations take half-batch gradients.
    average_([p.grad for p in trainer.parameters if p.grad is not None], trainer.context)
    return loss, spread


def train_iteration(trainer: Trainer, iteration: int) -> dict:
    """One gradient step of the policy and the dictionary; what the logs need of it."""
    args, steps = trainer.args, trainer.painter.max_steps
    targets, batch, out, remembered = draw_shards(trainer)
    logging = (iteration + 1) % args.log_every == 0
    loss, spread = backward(trainer, batch, remembered, logging)
    remember(trainer, remembered)
    torch.nn.utils.clip_grad_norm_(trainer.policy.parameters(), args.max_grad_norm)
    figures = mean_across(
        torch.cat([
            returns_to_go(batch.rewards.detach()).mean((0, 1)),
            torch.stack([batch.sse.mean(), batch.rewards.sum(-1).mean(), targets.square().flatten(1).sum(1).mean(),
                         batch.entropy.sum(-1).mean()]).detach(),
        ]),
        trainer.context,
    )  # fmt: skip
    decay = args.moving_average_decay
    trainer.moving_average.mul_(decay).add_((1 - decay) * args.beta * figures[:steps])
    trainer.optimizer.step()
    trainer.done = iteration + 1
    sse, returns, blank, entropy = figures[steps:].tolist()
    memory_sse = None if remembered is None else float(mean_across(remembered.sse.mean().detach(), trainer.context))
    return dict(sse=sse, returns=returns, blank=blank, entropy=entropy, surrogate=loss, spread=spread,
                actions=out.actions, canvas=out.canvas, targets=targets, memory_sse=memory_sse)  # fmt: skip


def log_iteration(trainer: Trainer, step: dict) -> None:
    """Scalars every ``--log-every`` iterations, pictures every ``--image-every`` (and at the start)."""
    if step["spread"] is not None:
        log_scalars(trainer, step)
    first = trainer.done - 1 == trainer.resumed_at[0]
    if trainer.context.lead and (trainer.done % trainer.args.image_every == 0 or first):
        log_pictures(trainer, step)


def log_scalars(trainer: Trainer, step: dict) -> None:
    """CleanRL-style tags: ``charts/`` (quality, speed), ``losses/``, ``policy/``, ``dictionary/``."""
    context, dictionary, surrogate = trainer.context, trainer.dictionary, step["surrogate"]
    ids = patch_ids(step["actions"], dictionary.num_levels).flatten()
    counts = torch.bincount(ids, minlength=dictionary.num_patches)
    losses = torch.stack([surrogate.encoder_loss, surrogate.decoder_loss, surrogate.value_loss]).detach()
    # the spread of the mean of W ranks' gradients is 1/W of one rank's
    spread = losses.new_tensor([step["spread"] / context.world_size])
    losses = mean_across(torch.cat([losses, spread, counts.float()]), context)
    trainer.variances.append(float(losses[3]))
    if not context.lead:
        return
    images = (trainer.done - trainer.resumed_at[0]) * trainer.args.batch_size * context.world_size
    seconds = max(trainer.elapsed - trainer.resumed_at[1], 1e-9)
    scalars = {
        "charts/sse": step["sse"],
        "charts/psnr": psnr(step["sse"], step["targets"][0].numel()),
        "charts/return": step["returns"],
        "charts/images_per_second": images / seconds,
        "losses/encoder": float(losses[0]),
        "losses/decoder": float(losses[1]),
        "losses/value": float(losses[2]),
        "policy/entropy": step["entropy"],
        "policy/gradient_variance": trainer.variances[-1],
        "policy/position_scale": float(trainer.policy.log_position_scale.detach().exp()),
        "dictionary/usage_entropy_bits": usage_entropy(losses[4:]),
    }
    if step["memory_sse"] is not None:
        scalars["charts/memory_sse"] = step["memory_sse"]
    if trainer.painter.data.programs is not None:
        scalars["charts/optimal_return_fraction"] = step["returns"] / step["blank"]
    for tag, value in scalars.items():
        trainer.writer.add_scalar(tag, value, trainer.done)


def log_pictures(trainer: Trainer, step: dict) -> None:
    """Targets, the first sample's reconstructions, the dictionary and an animated rollout."""
    done, writer, dictionary = trainer.done, trainer.writer, trainer.dictionary
    shown, targets = slice(0, 4 * trainer.args.samples, trainer.args.samples), step["targets"][:4]
    log_image_grid(writer, "images/targets", targets, done)
    log_image_grid(writer, "images/reconstructions", step["canvas"][shown], done)
    log_dictionary(writer, dictionary, done)
    actions, geometry = step["actions"][shown], trainer.painter.geometry
    log_rollout_gif(writer, "rollouts/painting", targets, actions, dictionary, geometry, done)


def save(trainer: Trainer, rng: dict | None = None) -> None:
    """Every rank gives its generator states; rank 0 writes the checkpoint atomically."""
    rng = merge_across(rng or generator_states(trainer.generators), trainer.context)
    if not trainer.context.lead:
        return
    args = trainer.args
    atomic_save({
        "kind": CHECKPOINT_KIND, "version": 1, "run_name": trainer.run_name, "iteration": trainer.done,
        "world_size": trainer.context.world_size, "elapsed": trainer.elapsed, "args": dataclasses.asdict(args),
        "env_config": env_config(args, args.split).to_dict(), "dictionary": trainer.dictionary.to_payload(),
        "policy_config": trainer.policy.config.to_dict(), "policy": trainer.policy.state_dict(),
        "optimizer": trainer.optimizer.state_dict(), "rng": rng, "moving_average": trainer.moving_average.cpu(),
        **({"memory": trainer.memory.state_dict()} if trainer.memory is not None else {}),
    }, trainer.checkpoint_path)  # fmt: skip


def train(trainer: Trainer) -> None:
    """Iterate until ``--iterations`` or ``--minutes``; checkpoints every ``--save-every``.

    On Ctrl-C (single process) the last finished iteration is saved, with the generator states it
    started from, so ``--resume`` continues exactly; then the program exits with status 130.
    """
    args, context = trainer.args, trainer.context
    bar = tqdm(initial=trainer.done, total=args.iterations, desc="training", disable=not context.lead)
    began = time.perf_counter() - trainer.elapsed
    snapshot = None
    try:
        for iteration in range(trainer.done, args.iterations):
            out_of_time = torch.tensor([float(time.perf_counter() - began > 60 * args.minutes)], device=trainer.device)
            broadcast_([out_of_time], context)  # rank 0's clock decides, so every rank stops at the same iteration
            if out_of_time.item():
                break
            snapshot = generator_states(trainer.generators)  # what a checkpoint of an unfinished iteration restores
            step = train_iteration(trainer, iteration)
            snapshot, trainer.elapsed = None, time.perf_counter() - began
            log_iteration(trainer, step)
            bar.update()
            bar.set_postfix(sse=f"{step['sse']:.3f}", entropy=f"{step['entropy']:.2f}")
            if trainer.done % args.save_every == 0:
                save(trainer)
    except KeyboardInterrupt:
        bar.close()
        interrupted(trainer, snapshot)
    except Exception as error:
        report_failure(context, error, trainer.checkpoint_path)
        raise
    bar.close()
    save(trainer)
    shutdown(context)


def interrupted(trainer: Trainer, snapshot: dict | None) -> None:
    path = trainer.checkpoint_path
    if trainer.context.distributed:  # the ranks stopped at different points: no consistent state to save
        print(f"\ninterrupted: resume from the last periodic checkpoint, {path}", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    save(trainer, snapshot)
    print(f"\ninterrupted after iteration {trainer.done}: checkpoint saved to {path}", file=sys.stderr)
    print(f"continue with: python -m train.reinforce --resume {path} --iterations {trainer.args.iterations}",
          file=sys.stderr)  # fmt: skip
    trainer.writer.close()
    raise SystemExit(INTERRUPTED)


def evaluate(trainer: Trainer) -> dict:
    """Score the policy's most likely programs on the held-out images; log, write and print the figures."""
    args, held_out, writer = trainer.args, trainer.held_out, trainer.writer
    images = held_out.data.images[: args.eval_images]
    trainer.policy.eval()
    metrics, programs = evaluate_encoder(
        policy_encoder(trainer.policy, held_out), images, held_out, 256, trainer.device
    )
    images_seen = (trainer.done - trainer.resumed_at[0]) * args.batch_size * trainer.context.world_size
    metrics.update(
        wall_seconds=trainer.elapsed, iterations=trainer.done, estimator=args.estimator, dataset=args.dataset,
        eval_split=args.eval_split, world_size=trainer.context.world_size,
        train_images_per_second=images_seen / max(trainer.elapsed - trainer.resumed_at[1], 1e-9),
        gradient_variance=float(torch.tensor(trainer.variances).median()) if trainer.variances else None,
    )  # fmt: skip
    for name in ("sse", "psnr", "optimal_return_fraction"):
        if name in metrics:
            writer.add_scalar(f"eval/{name}", metrics[name], trainer.done)
    geometry = held_out.geometry
    log_rollout_gif(writer, "eval/rollouts", images[:4], programs[:4], trainer.dictionary, geometry, trainer.done)
    writer.close()
    write_metrics_json(args.metrics_json, metrics)
    print(f"TensorBoard logs: {Path(args.logdir) / trainer.run_name}  (tensorboard --logdir {args.logdir})")
    print(f"checkpoint: {trainer.checkpoint_path}")
    shown = ("sse", "psnr", "optimal_return_fraction", "images_per_second")
    figures = ", ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics)
    print(
        f"held-out {args.eval_split} ({metrics['num_images']} images): {figures}; "
        f"{trainer.done} iterations in {trainer.elapsed / 60:.1f} min"
    )
    return metrics


def main(argv=None) -> dict:
    with user_errors():
        trainer = set_up(argv)
    train(trainer)
    return evaluate(trainer) if trainer.context.lead else {}


if __name__ == "__main__":
    record(main)()  # under torchrun, the failing rank's traceback is shown in the run's summary
