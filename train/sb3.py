"""Train a Stable-Baselines3 agent (PPO, A2C or DQN) on the painter and score it as an encoder.

    python -m train.sb3 --algo ppo --env painter --dataset shapes --total-timesteps 200000

Hyperparameters come from ``train/configs/{algo}.toml`` (RL-Zoo style, one table per dataset),
overridden by ``--config`` and ``--hyperparams key=value``. The agent is trained on ``--split``
through the batched SB3 adapter (or ``DummyVecEnv``/``SubprocVecEnv`` over single envs), logged
to TensorBoard (SB3's scalars, ``rollout/final_sse`` and animated painting rollouts under
``rollouts/painting``), saved with SB3's ``save``, then rolled out deterministically on
``--eval-split``; the figures go to ``--metrics-json``. ``python -m train.evaluate --checkpoint
MODEL.zip --encoder policy`` scores the saved agent again, on any split.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import gymnasium as gym
import tomllib
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3.callbacks import FinalSSECallback, PaintingGifCallback, TimeBudgetCallback, TqdmCallback
from agents.sb3.distributions import PainterMultiInputPolicy
from agents.sb3.encoder import env_config_path, load_sb3_model, policy_programs
from agents.sb3.extractor import painter_policy_kwargs, start_from_matched_filter
from agents.sb3.vec_env import PainterVecEnv
from agents.sb3.wrappers import FlattenMultiDiscrete, HorizonIsTerminal
from decoders.kernel import decode
from painter_env.config import Painter, PainterConfig, build_painter
from painter_env.env import action_space
from train.common.metrics import program_bits, reconstruction_metrics, write_metrics_json

ALGORITHMS = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
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
RUN_KEYS = ("n_envs", "n_timesteps", "policy_kwargs", "env_kwargs")
MATCHED_KEYS = ("matched_filter", "start_from_matched")


@dataclass
class Args:
    algo: str = "ppo"
    """the SB3 algorithm: ppo, a2c or dqn (dqn flattens the action to Discrete)"""
    env: str = "painter"
    """the environment (only 'painter', i.e. Painter-v0)"""
    dataset: str = "shapes"
    """shapes, mnist, fashion-mnist or folder:PATH"""
    data_root: str | None = None
    """where the dataset files are (default: $PAINTER_DATA_ROOT or ./data)"""
    download: bool = False
    """download MNIST / Fashion-MNIST if missing"""
    split: str = "train"
    """split the agent trains on, e.g. train or test[:8000]"""
    eval_split: str = "test"
    """split the saved agent is scored on, e.g. test or test[8000:]"""
    image_size: int | None = None
    """resize images to this size (shapes: 28 by default)"""
    patch_size: int | None = None
    """patch size R (default 7)"""
    num_prototypes: int | None = None
    """dictionary size K (shapes: its 12 shapes; otherwise 32)"""
    num_levels: int | None = None
    """code levels L per prototype (default 3)"""
    move_radius: int | None = None
    """largest cursor move M (default: the whole canvas)"""
    max_steps: int | None = None
    """program length T, the episode's horizon (shapes 8, otherwise 16)"""
    max_shapes: int | None = None
    """shapes per scene on the shapes dataset (default 4)"""
    dictionary: str | None = None
    """a saved dictionary or training checkpoint to paint with"""
    total_timesteps: int | None = None
    """env steps to train (default: the config's n_timesteps)"""
    max_seconds: float | None = None
    """stop training after this many seconds of wall-clock time (the model is saved and scored)"""
    n_envs: int | None = None
    """parallel envs (default: the config's n_envs)"""
    vec_env: str = "batched"
    """batched (the native batched env), dummy or subproc (SB3's, over single envs)"""
    horizon_is_terminal: bool = True
    """treat the fixed horizon as termination (the step count is observed; no bootstrapping)"""
    joint_moves: bool = False
    """ppo/a2c: choose the move (di, dj) as one action component, MultiDiscrete([(2M+1)^2, K, L])"""
    seed: int = 0
    """seed of the agent, the env's image draws and the data"""
    device: str = "cpu"
    """torch device of the agent and the batched env (cpu or cuda)"""
    threads: int = 1
    """torch CPU threads (1 is fastest on a busy machine)"""
    validate_distributions: bool = False
    """let torch.distributions check the arguments of SB3's action distributions at every step (slower)"""
    config: str | None = None
    """hyperparameter file (default train/configs/ALGO.toml)"""
    hyperparams: list[str] = field(default_factory=list)
    """overrides as key=value, values in TOML syntax, e.g. learning_rate=1e-4 n_steps=16"""
    logdir: str = "runs"
    """TensorBoard log directory"""
    run_name: str | None = None
    """name of this run's TensorBoard folder (default: sb3_ALGO_DATASET_SEED)"""
    save: str | None = None
    """where to save the agent (default: model.zip in the run's TensorBoard folder)"""
    load: str | None = None
    """continue training a saved agent"""
    eval_images: int | None = None
    """score only the first N images of the eval split"""
    gif_every: int = 50_000
    """env steps between animated painting rollouts in TensorBoard"""
    gif_images: int = 4
    """images in each animation"""
    progress: bool = True
    """show a progress bar"""
    metrics_json: str | None = None
    """write the final figures (on the eval split) to this JSON file"""


def _field_help() -> dict[str, str]:
    """The docstring under each ``Args`` field, for ``--help``."""
    body = ast.parse(inspect.getsource(Args)).body[0].body
    return {
        target.target.id: doc.value.value
        for target, doc in zip(body, body[1:])
        if isinstance(target, ast.AnnAssign) and isinstance(doc, ast.Expr)
    }


FIELD_HELP = _field_help()


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for spec in fields(Args):
        flag = "--" + spec.name.replace("_", "-")
        help_text = FIELD_HELP[spec.name]
        if spec.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default, help=help_text)
        elif spec.name == "hyperparams":
            parser.add_argument(flag, nargs="*", default=[], metavar="KEY=VALUE", help=help_text)
        else:
            kind = int if "int" in spec.type else float if "float" in spec.type else str
            choices = {"algo": sorted(ALGORITHMS), "env": ["painter"], "vec_env": ["batched", "dummy", "subproc"]}
            parser.add_argument(flag, type=kind, default=spec.default, choices=choices.get(spec.name), help=help_text)
    return Args(**vars(parser.parse_args(argv)))


def load_hyperparams(args: Args) -> dict:
    """The config's ``[default]`` table, updated by the dataset's table and ``--hyperparams``."""
    path = Path(args.config) if args.config else CONFIG_DIR / f"{args.algo}.toml"
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read hyperparameter file {path}: {error}") from error
    dataset = args.dataset.split(":")[0]
    params = {**tables.get("default", {}), **tables.get(dataset, {})}
    for item in args.hyperparams:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hyperparams takes key=value items, got {item!r}")
        try:
            params[key.strip()] = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--hyperparams {item!r}: the value is not TOML ({error})") from error
    return params


def env_kwargs(args: Args, params: dict, split: str) -> dict:
    """Painter-v0 keyword arguments: the config's ``env_kwargs`` overridden by the flags given."""
    kwargs = dict(params.get("env_kwargs", {}))
    kwargs.update({name: getattr(args, name) for name in ENV_FLAGS if getattr(args, name) not in (None, False)})
    return {**kwargs, "split": split, "seed": args.seed}


def make_vec_env(args: Args, kwargs: dict, n_envs: int) -> VecEnv:
    """The training envs, wrapped in ``VecMonitor`` (episode returns for the logs)."""
    flatten = args.algo == "dqn"
    if args.vec_env == "batched":
        venv = PainterVecEnv(
            n_envs,
            args.device,
            flatten_actions=flatten,
            joint_moves=args.joint_moves and not flatten,
            horizon_is_terminal=args.horizon_is_terminal,
            **kwargs,
        )
        venv.seed(args.seed)
    else:
        if args.joint_moves:
            raise ValueError("--joint-moves needs --vec-env batched")
        venv_class = DummyVecEnv if args.vec_env == "dummy" else SubprocVecEnv
        venv = venv_class([single_env_maker(kwargs, flatten, args.horizon_is_terminal) for _ in range(n_envs)])
        venv.seed(args.seed)
    return VecMonitor(venv)


def single_env_maker(kwargs: dict, flatten: bool, horizon_is_terminal: bool):
    """A picklable-by-closure constructor of one ``Painter-v0`` for SB3's single-env VecEnvs."""

    def make() -> gym.Env:
        env = gym.make("Painter-v0", **kwargs)
        if horizon_is_terminal:
            env = HorizonIsTerminal(env)
        return FlattenMultiDiscrete(env) if flatten else env

    return make


def policy_kwargs(args: Args, params: dict, painter: Painter) -> dict:
    """``painter_policy_kwargs`` from the config's ``policy_kwargs``. ``matched_filter = true`` gives
    PPO/A2C the extractor's matched-filter branch over the painter's dictionary (DQN's flattened
    actions and joint moves do not follow its per-component layout, so it is left out there);
    ``start_from_matched = true`` also starts the action head from it (``start_from_matched_filter``)."""
    kwargs = {key: value for key, value in params.get("policy_kwargs", {}).items() if key not in MATCHED_KEYS}
    return painter_policy_kwargs(**kwargs, painter=painter if uses_matched_filter(args, params) else None)


def policy_class(algo: str):
    """PPO and A2C get ``PainterMultiInputPolicy`` (SB3's ``MultiInputPolicy`` with the fused
    multi-categorical distribution); DQN its own ``MultiInputPolicy``."""
    return "MultiInputPolicy" if algo == "dqn" else PainterMultiInputPolicy


def uses_matched_filter(args: Args, params: dict) -> bool:
    """The config asks for the matched filter and the action is PPO/A2C's factorised ``(di, dj, k, b)``."""
    wanted = bool(params.get("policy_kwargs", {}).get("matched_filter", False))
    return wanted and args.algo in ("ppo", "a2c") and not args.joint_moves


def save_env_config(model_path: Path, painter: Painter) -> None:
    """Write the painter settings and dictionary beside the model (read by ``sb3_env_config``)."""
    dictionary_path = model_path.with_suffix(".dictionary.pt")
    painter.dictionary.save(dictionary_path)
    config = {**painter.config.to_dict(), "dictionary": str(dictionary_path)}
    env_config_path(model_path).write_text(json.dumps(config, indent=2) + "\n")


def evaluate(model, painter: Painter, count: int | None) -> dict:
    """Roll the agent out (deterministic) on the painter's images; the standard figures."""
    images = painter.data.images[:count]
    start = time.perf_counter()
    programs = policy_programs(model, images, painter)
    values, support = painter.dictionary.patches()
    canvases = decode(
        programs.cpu(), values.detach().cpu(), support.cpu(), painter.dictionary.num_levels, painter.geometry
    )
    seconds = time.perf_counter() - start
    nvec = action_space(painter).nvec
    metrics = reconstruction_metrics(
        images, canvases, program_bits(painter.max_steps, math.prod(map(int, nvec))), seconds
    )
    if painter.data.programs is not None:
        blank = images.square().flatten(1).sum(1)
        final = (images - canvases).square().flatten(1).sum(1)
        metrics["optimal_return_fraction"] = float((blank - final).sum() / blank.sum())
    return metrics


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.env != "painter":
        raise ValueError(f"--env must be 'painter', got {args.env!r}")
    torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(args.validate_distributions)
    params = load_hyperparams(args)
    n_envs = args.n_envs or params.get("n_envs", 8)
    total = args.total_timesteps or params.get("n_timesteps", 100_000)
    run_name = args.run_name or f"sb3_{args.algo}_{args.dataset.replace(':', '_').replace('/', '_')}_{args.seed}"

    train_kwargs = env_kwargs(args, params, args.split)
    venv = make_vec_env(args, train_kwargs, n_envs)
    train_painter = build_painter(PainterConfig(**train_kwargs))
    # Score with the training dictionary (k-means dictionaries are fitted on the training split).
    eval_painter = build_painter(
        PainterConfig(**{**train_kwargs, "split": args.eval_split, "dictionary": train_painter.dictionary})
    )

    algo_kwargs = {key: value for key, value in params.items() if key not in RUN_KEYS}
    if args.load:
        model = load_sb3_model(args.load, args.device)
        model.set_env(venv)
        model.tensorboard_log = args.logdir
    else:
        model = ALGORITHMS[args.algo](
            policy_class(args.algo),
            venv,
            policy_kwargs=policy_kwargs(args, params, train_painter),
            tensorboard_log=args.logdir,
            seed=args.seed,
            device=args.device,
            verbose=0,
            **algo_kwargs,
        )
        if uses_matched_filter(args, params) and params["policy_kwargs"].get("start_from_matched", False):
            start_from_matched_filter(model.policy)
    callbacks = [
        FinalSSECallback(),
        PaintingGifCallback(eval_painter.data.images[: args.gif_images], eval_painter, args.gif_every),
    ]
    if args.progress:
        callbacks.append(TqdmCallback(total))
    if args.max_seconds is not None:
        callbacks.append(TimeBudgetCallback(args.max_seconds))

    start, start_steps = time.perf_counter(), model.num_timesteps
    model.learn(total, callback=CallbackList(callbacks), tb_log_name=run_name, reset_num_timesteps=not args.load)
    wall = time.perf_counter() - start
    save_path = Path(args.save or Path(model.logger.dir or args.logdir) / "model.zip")
    save_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(save_path)
    save_env_config(save_path, train_painter)
    venv.close()

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
        model=str(save_path),
    )
    for key in ("sse", "psnr", "optimal_return_fraction"):
        if key in metrics:
            model.logger.record(f"eval/{key}", metrics[key])
    model.logger.dump(model.num_timesteps)
    write_metrics_json(args.metrics_json, metrics)
    summary = ", ".join(
        f"{key} {metrics[key]:.4g}"
        for key in ("sse", "psnr", "optimal_return_fraction", "wall_seconds")
        if key in metrics
    )
    print(f"{args.algo} on {args.dataset} {args.eval_split}: {summary}; saved {save_path}")
    return metrics


if __name__ == "__main__":
    main()
