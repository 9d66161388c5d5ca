"""Train a Stable-Baselines3 or sb3-contrib agent on the painter and score it as an encoder.

    python -m train.sb3 --algo ppo --dataset shapes --max-seconds 1200

Algorithms: ppo, a2c, dqn (SB3); recurrent-ppo, maskable-ppo, trpo, qrdqn (sb3-contrib, the
optional extra ``pip install -e ".[contrib]"``). dqn and qrdqn see the action flattened to
``Discrete`` (``FlattenMultiDiscrete``); maskable-ppo reads the env's action masks.

Hyperparameters come from ``train/configs/ALGO.toml`` (RL-Zoo style: a ``[default]`` table and one
table per dataset), overridden by ``--config`` and ``--hyperparams key=value``. The agent trains on
``--split`` through the batched SB3 adapter (or SB3's ``DummyVecEnv``/``SubprocVecEnv``), logs to
TensorBoard (SB3's scalars, ``rollout/final_sse``, animated painting rollouts under
``rollouts/painting``), is saved with SB3's ``save``, then rolled out deterministically on
``--eval-split``; the figures go to ``--metrics-json``. Ctrl-C saves the agent and exits with status
130. ``python -m train.evaluate --checkpoint MODEL.zip --encoder policy`` scores a saved agent again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import tomllib
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3 import autoregressive
from agents.sb3.algorithms import (
    ALGORITHMS,
    FLAT_ACTION_ALGORITHMS,
    algorithm_class,
    default_policy,
    load_sb3_model,
)
from agents.sb3.callbacks import FinalSSECallback, PaintingGifCallback, TimeBudgetCallback, TqdmCallback
from agents.sb3.encoder import env_config_path, policy_programs
from agents.sb3.extractor import painter_policy_kwargs, start_from_matched_filter
from agents.sb3.vec_env import PainterVecEnv
from agents.sb3.wrappers import FlattenMultiDiscrete, HorizonIsTerminal
from decoders.kernel import decode
from painter_env.config import Painter, PainterConfig, build_painter
from painter_env.env import action_space
from train.common.config import arg, parse_args
from train.common.metrics import program_bits, reconstruction_metrics, write_metrics_json

CONFIG_DIR = Path(__file__).parent / "configs"
ENV_FLAGS = (
    "dataset",
    "data_root",
    "download",
    "image_size",
    "patch_size",
    "num_prototypes",
    "num_levels",
    "move_radius",
    "max_steps",
    "dictionary",
    "max_shapes",
)
RUN_KEYS = ("n_envs", "n_timesteps", "policy", "policy_kwargs", "env_kwargs")  # the rest go to the algorithm
PAINTER_POLICIES = {"PainterMultiInputPolicy": autoregressive.PainterMultiInputPolicy}
MATCHED_KEYS = ("matched_filter", "start_from_matched")
INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT)
BAD_INPUT = 2  # the exit status of argparse's errors, used for every bad input


@dataclass
class Args:
    algo: str = arg("ppo", "the algorithm", choices=list(ALGORITHMS))
    dataset: str = arg("shapes", "shapes, mnist, fashion-mnist or folder:PATH")
    data_root: str = arg(None, "folder of the dataset files (default: $PAINTER_DATA_ROOT or ./data)", type=str)
    download: bool = arg(False, "download MNIST / Fashion-MNIST if missing")
    split: str = arg("train", "split the agent trains on, e.g. train or test[:8000]")
    eval_split: str = arg("test", "split the saved agent is scored on, e.g. test or test[8000:]")
    image_size: int = arg(None, "resize images to this size (default: shapes 28, others their own)", type=int)
    patch_size: int = arg(None, "patch size R (default 7)", type=int)
    num_prototypes: int = arg(None, "dictionary size K (default: shapes 12, others 32)", type=int)
    num_levels: int = arg(None, "code levels L per prototype (default 3)", type=int)
    move_radius: int = arg(None, "largest cursor move M (default: the whole canvas)", type=int)
    max_steps: int = arg(None, "program length T, the episode's horizon (default: shapes 8, others 16)", type=int)
    max_shapes: int = arg(None, "shapes per scene on the shapes dataset (default 4)", type=int)
    dictionary: str = arg(None, "a saved dictionary or training checkpoint to paint with", type=str)
    total_timesteps: int = arg(None, "env steps to train (default: the config's n_timesteps)", type=int)
    max_seconds: float = arg(
        None, "stop training after this many seconds (the agent is then saved and scored)", type=float
    )
    n_envs: int = arg(None, "parallel envs (default: the config's n_envs)", type=int)
    vec_env: str = arg(
        "batched", "batched (the native batched env), dummy or subproc", choices=["batched", "dummy", "subproc"]
    )
    horizon_is_terminal: bool = arg(True, "report the fixed horizon as termination (the step count is observed)")
    joint_moves: bool = arg(False, "choose the move (di, dj) as one action component (--vec-env batched)")
    seed: int = arg(0, "seed of the agent, the env's image draws and the data")
    device: str = arg("cpu", "torch device of the agent and the batched env (cpu or cuda)")
    threads: int = arg(1, "torch CPU threads")
    validate_distributions: bool = arg(False, "let torch.distributions check their arguments at every step")
    config: str = arg(None, "hyperparameter file (default: train/configs/ALGO.toml)", type=str)
    hyperparams: list = arg([], "overrides as key=value in TOML syntax, e.g. learning_rate=1e-4 n_steps=16", type=str)
    logdir: str = arg("runs", "TensorBoard log directory")
    run_name: str = arg(None, "TensorBoard folder of this run (default: sb3_ALGO_DATASET_SEED)", type=str)
    save: str = arg(None, "where to save the agent (default: model.zip in the run's folder)", type=str)
    load: str = arg(None, "continue training a saved agent", type=str)
    eval_images: int = arg(None, "score only the first N images of the eval split", type=int)
    gif_every: int = arg(50_000, "env steps between animated painting rollouts in TensorBoard")
    gif_images: int = arg(4, "images in each animation")
    progress: bool = arg(True, "show a progress bar")
    metrics_json: str = arg(None, "write the final figures (on the eval split) to this JSON file", type=str)


def load_hyperparams(args: Args) -> dict:
    """The config's ``[default]`` table, updated by the dataset's table and ``--hyperparams``."""
    path = Path(args.config) if args.config else CONFIG_DIR / f"{args.algo}.toml"
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read hyperparameter file {path}: {error}") from error
    params = {**tables.get("default", {}), **tables.get(args.dataset.split(":")[0], {})}
    for item in args.hyperparams:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hyperparams takes key=value items, got {item!r}")
        try:
            params[key.strip()] = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--hyperparams {item!r}: the value is not TOML ({error})") from error
    return params


def check_args(args: Args) -> None:
    """Flag values that argparse cannot check by type."""
    for name in ("total_timesteps", "max_seconds", "n_envs", "threads", "gif_every", "gif_images", "eval_images"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.joint_moves and (args.vec_env != "batched" or args.algo in FLAT_ACTION_ALGORITHMS):
        raise ValueError("--joint-moves needs --vec-env batched and a MultiDiscrete algorithm (not dqn, qrdqn)")


def env_kwargs(args: Args, params: dict, split: str) -> dict:
    """Painter-v0 keyword arguments: the config's ``env_kwargs`` overridden by the flags given."""
    kwargs = dict(params.get("env_kwargs", {}))
    kwargs.update({name: getattr(args, name) for name in ENV_FLAGS if getattr(args, name) not in (None, False)})
    return {**kwargs, "split": split, "seed": args.seed}


def make_vec_env(args: Args, kwargs: dict, n_envs: int) -> VecEnv:
    """The training envs, wrapped in ``VecMonitor`` (episode returns for the logs)."""
    flatten = args.algo in FLAT_ACTION_ALGORITHMS
    if args.vec_env == "batched":
        venv = PainterVecEnv(
            n_envs,
            args.device,
            flatten_actions=flatten,
            joint_moves=args.joint_moves,
            horizon_is_terminal=args.horizon_is_terminal,
            **kwargs,
        )
    else:
        venv_class = DummyVecEnv if args.vec_env == "dummy" else SubprocVecEnv
        venv = venv_class([single_env_maker(kwargs, flatten, args.horizon_is_terminal) for _ in range(n_envs)])
    venv.seed(args.seed)
    return VecMonitor(venv)


def single_env_maker(kwargs: dict, flatten: bool, horizon_is_terminal: bool):
    """A constructor of one ``Painter-v0`` for SB3's single-env VecEnvs."""

    def make() -> gym.Env:
        env = gym.make("Painter-v0", **kwargs)
        if horizon_is_terminal:
            env = HorizonIsTerminal(env)
        return FlattenMultiDiscrete(env) if flatten else env

    return make


def policy_and_kwargs(args: Args, params: dict, painter: Painter):
    """The config's ``policy`` (default: the algorithm's own; ``PainterMultiInputPolicy`` is the
    autoregressive one) and its ``policy_kwargs``: ``painter_policy_kwargs`` of the extractor keys,
    with the matched filter over the painter's dictionary when ``matched_filter = true`` (always for
    ``PainterMultiInputPolicy``); other keys (e.g. ``lstm_hidden_size``) go to the policy as given."""
    policy = params.get("policy", default_policy(args.algo))
    policy = PAINTER_POLICIES.get(policy, policy)
    options = {key: value for key, value in params.get("policy_kwargs", {}).items() if key not in MATCHED_KEYS}
    extractor_keys = ("cnn_features", "channels", "net_arch", "egocentric", "matched_scale")
    extractor = {key: options.pop(key) for key in extractor_keys if key in options}
    matched = bool(params.get("policy_kwargs", {}).get("matched_filter", False)) or policy in PAINTER_POLICIES.values()
    return policy, {**painter_policy_kwargs(**extractor, painter=painter if matched else None), **options}


def build_model(args: Args, params: dict, venv: VecEnv, painter: Painter) -> BaseAlgorithm:
    """A new agent from the config, or the one saved at ``--load`` on the new envs."""
    if args.load:
        model = load_sb3_model(args.load, args.device)
        model.set_env(venv)
        model.tensorboard_log = args.logdir
        return model
    policy, kwargs = policy_and_kwargs(args, params, painter)
    model = algorithm_class(args.algo)(
        policy,
        venv,
        policy_kwargs=kwargs,
        tensorboard_log=args.logdir,
        seed=args.seed,
        device=args.device,
        verbose=0,
        **{key: value for key, value in params.items() if key not in RUN_KEYS},
    )
    if params.get("policy_kwargs", {}).get("start_from_matched", False):
        start_from_matched_filter(model.policy)
    return model


def train(model: BaseAlgorithm, args: Args, total: int, eval_painter: Painter, run_name: str) -> bool:
    """``model.learn`` with the logging callbacks and the time budget; False when Ctrl-C stopped it."""
    callbacks = [
        FinalSSECallback(),
        PaintingGifCallback(eval_painter.data.images[: args.gif_images], eval_painter, args.gif_every),
    ]
    if args.progress:
        callbacks.append(TqdmCallback(total))
    if args.max_seconds is not None:
        callbacks.append(TimeBudgetCallback(args.max_seconds))
    try:
        model.learn(total, callback=CallbackList(callbacks), tb_log_name=run_name, reset_num_timesteps=not args.load)
    except KeyboardInterrupt:
        return False
    return True


def save(model: BaseAlgorithm, args: Args, painter: Painter) -> Path:
    """Save the agent, and beside it the painter settings and dictionary (read by ``sb3_env_config``)."""
    path = Path(args.save or Path(model.logger.dir or args.logdir) / "model.zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    dictionary_path = path.with_suffix(".dictionary.pt")
    painter.dictionary.save(dictionary_path)
    config = {**painter.config.to_dict(), "dictionary": str(dictionary_path)}
    env_config_path(path).write_text(json.dumps(config, indent=2) + "\n")
    return path


def evaluate(model: BaseAlgorithm, painter: Painter, count: int | None) -> dict:
    """Roll the agent out (deterministic) on the painter's images; the standard figures."""
    images = painter.data.images[:count]
    start = time.perf_counter()
    programs = policy_programs(model, images, painter)
    values, support = painter.dictionary.patches()
    canvases = decode(
        programs.cpu(), values.detach().cpu(), support.cpu(), painter.dictionary.num_levels, painter.geometry
    )
    seconds = time.perf_counter() - start
    bits = program_bits(painter.max_steps, math.prod(map(int, action_space(painter).nvec)))
    metrics = reconstruction_metrics(images, canvases, bits, seconds)
    if painter.data.programs is not None:  # shapes: the optimal return of an image is its blank-canvas SSE
        blank = images.square().flatten(1).sum(1)
        final = (images - canvases).square().flatten(1).sum(1)
        metrics["optimal_return_fraction"] = float((blank - final).sum() / blank.sum())
    return metrics


def report(model: BaseAlgorithm, args: Args, metrics: dict) -> None:
    """Log the eval figures to TensorBoard, write ``--metrics-json`` and print a summary line."""
    for key in ("sse", "psnr", "optimal_return_fraction"):
        if key in metrics:
            model.logger.record(f"eval/{key}", metrics[key])
    model.logger.dump(model.num_timesteps)
    write_metrics_json(args.metrics_json, metrics)
    shown = ("sse", "psnr", "optimal_return_fraction", "wall_seconds")
    summary = ", ".join(f"{key} {metrics[key]:.4g}" for key in shown if key in metrics)
    print(f"{args.algo} on {args.dataset} {args.eval_split}: {summary}; saved {metrics['model']}")


def run(args: Args) -> dict:
    check_args(args)
    torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(args.validate_distributions)
    algorithm_class(args.algo)  # fails early, naming the extra, when sb3-contrib is missing
    params = load_hyperparams(args)
    total = args.total_timesteps or params.get("n_timesteps", 100_000)
    run_name = args.run_name or f"sb3_{args.algo}_{args.dataset.replace(':', '_').replace('/', '_')}_{args.seed}"

    train_kwargs = env_kwargs(args, params, args.split)
    painter = build_painter(PainterConfig(**train_kwargs))
    # Score with the training dictionary (k-means dictionaries are fitted on the training split).
    eval_painter = build_painter(
        PainterConfig(**{**train_kwargs, "split": args.eval_split, "dictionary": painter.dictionary})
    )
    venv = make_vec_env(args, train_kwargs, args.n_envs or params.get("n_envs", 8))
    model = build_model(args, params, venv, painter)

    start, start_steps = time.perf_counter(), model.num_timesteps
    finished = train(model, args, total, eval_painter, run_name)
    wall = time.perf_counter() - start
    path = save(model, args, painter)
    venv.close()
    if not finished:
        print(f"interrupted after {model.num_timesteps - start_steps} env steps; saved {path}", file=sys.stderr)
        raise SystemExit(INTERRUPTED)

    metrics = evaluate(model, eval_painter, args.eval_images)
    trained = model.num_timesteps - start_steps
    metrics.update(
        wall_seconds=wall,
        env_steps_per_second=trained / wall,
        total_timesteps=trained,
        algo=args.algo,
        dataset=args.dataset,
        split=args.split,
        eval_split=args.eval_split,
        model=str(path),
    )
    report(model, args, metrics)
    return metrics


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags and run; bad input prints ``error: ...`` and exits with status 2."""
    args = parse_args(Args, __doc__, argv)
    try:
        return run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(BAD_INPUT) from None


if __name__ == "__main__":
    main()
