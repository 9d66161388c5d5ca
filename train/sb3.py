"""Train a Stable-Baselines3 or sb3-contrib agent on the painter and score it as an encoder.

    python -m train.sb3 --algo ppo --env painter --dataset shapes        # a minute or two on a CPU
    python -m train.sb3 --algo ppo --dataset mnist --data-root DIR \\
        --split "test[:8000]" --eval-split "test[8000:]" --minutes 20

Algorithms: ppo, a2c, dqn (SB3); recurrent-ppo, maskable-ppo, trpo, qrdqn (sb3-contrib, the
optional extra ``pip install -e ".[contrib]"``). dqn and qrdqn see the action flattened to
``Discrete`` (``FlattenMultiDiscrete``); maskable-ppo reads the env's action masks.

Hyperparameters come from ``train/configs/ALGO.toml`` (RL-Zoo style: a ``[default]`` table and one
table per dataset), overridden by ``--config`` and ``--hyperparams key=value``. The agent trains on
``--split`` through the batched SB3 adapter (or SB3's ``DummyVecEnv``/``SubprocVecEnv``) for
``--minutes`` (``--total-timesteps`` caps it; SB3's schedules, e.g. DQN's exploration, follow
whichever budget runs out first), then is rolled out deterministically on ``--eval-split``.
TensorBoard logs go to ``--logdir/RUN`` (SB3's scalars, ``rollout/final_sse``, animated painting
rollouts under ``rollouts/painting``), the agent to ``--checkpoint-dir/RUN/model.zip`` with the
painter settings and dictionary beside it; ``--resume MODEL.zip`` continues training a saved agent.
The figures go to ``--metrics-json``. Ctrl-C saves the agent and exits with status 130.
``python -m train.evaluate --checkpoint MODEL.zip --encoder policy`` scores a saved agent again.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tomllib
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3 import autoregressive
from agents.sb3.algorithms import ALGORITHMS, FLAT_ACTION_ALGORITHMS, algorithm_class, default_policy, saved_algorithm
from agents.sb3.callbacks import FinalSSECallback, PaintingGifCallback
from agents.sb3.encoder import env_config_path, policy_programs, sb3_env_config
from agents.sb3.extractor import painter_policy_kwargs, start_from_matched_filter
from agents.sb3.vec_env import PainterVecEnv
from agents.sb3.wrappers import FlattenMultiDiscrete, HorizonIsTerminal
from painter_env.config import Painter, PainterConfig, build_painter
from train.common.config import arg, parse_args
from train.common.painter import PainterArgs, env_config, fit_action_space
from train.common.run import INTERRUPTED, Budget, apply_threads_and_seed, default_run_name, report, user_errors
from train.common.tensorboard import claim_run_name
from train.evaluate import evaluate_encoder

CONFIG_DIR = Path(__file__).parent / "configs"
RUN_KEYS = ("n_envs", "policy", "policy_kwargs", "env_kwargs")  # the rest go to the algorithm
PAINTER_POLICIES = {"PainterMultiInputPolicy": autoregressive.PainterMultiInputPolicy}
MATCHED_KEYS = ("matched_filter", "start_from_matched")
# A config's env_kwargs (Painter-v0's names) -> the flag each fills in when the flag is not given.
ENV_KWARGS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_prototypes": "num_prototypes",
    "num_levels": "num_levels",
    "move_radius": "move_radius",
    "max_steps": "steps",
    "max_shapes": "max_shapes",
    "dictionary": "dictionary",
}
# The painter settings a resumed agent keeps (saved beside it in MODEL.env.json): Painter-v0's name -> flag.
RESUMED_SETTINGS = {"dataset": "dataset", "data_root": "data_root", "support_threshold": "support_threshold"}
RESUMED_SETTINGS.update(ENV_KWARGS)
UNBOUNDED = 2**62  # SB3's total env steps of a run bounded by time alone (BudgetCallback stops it)
REDRAW_SECONDS = 0.5  # the progress bar is redrawn at most this often (SB3 calls back after every env step)


@dataclass
class Args(PainterArgs):
    env: str = arg("painter", "environment to train on (the patch painter, Painter-v0)", choices=("painter",))
    algo: str = arg("ppo", "the algorithm (with --resume: the saved agent's)", choices=list(ALGORITHMS))
    total_timesteps: int = arg(
        None,
        "stop after this many env steps even if --minutes are left (default: no cap; with --resume: this many more)",
        type=int,
        at_least=1,
    )
    n_envs: int = arg(None, "parallel envs (default: the config's n_envs)", type=int, at_least=1)
    vec_env: str = arg(
        "batched", "batched (the native batched env), dummy or subproc", choices=["batched", "dummy", "subproc"]
    )
    horizon_is_terminal: bool = arg(True, "report the fixed horizon as termination (the step count is observed)")
    joint_moves: bool = arg(False, "choose the move (di, dj) as one action component (--vec-env batched)")
    max_shapes: int = arg(None, "shapes per scene on the shapes dataset (default: 4)", type=int, at_least=1)
    validate_distributions: bool = arg(False, "let torch.distributions check their arguments at every step")
    config: str = arg(None, "hyperparameter file (default: train/configs/ALGO.toml)", type=str)
    hyperparams: list = arg([], "overrides as key=value in TOML syntax, e.g. learning_rate=1e-4 n_steps=16", type=str)
    resume: str = arg(
        None, "continue training this saved agent (MODEL.zip) on its painter, in its run unless --run-name", type=str
    )
    gif_every: int = arg(50_000, "env steps between animated painting rollouts in TensorBoard", at_least=1)
    gif_images: int = arg(4, "images in each animation", at_least=1)
    progress: bool = arg(True, "show a progress bar")


@dataclass
class Session:
    """A run set up and ready to train: its flags, painters, envs, agent, name and budget."""

    args: Args
    painter: Painter
    eval_painter: Painter
    venv: VecEnv
    model: BaseAlgorithm
    name: str
    budget: Budget
    start_steps: int = 0
    wall: float = 0.0  # seconds of training, set when it ends

    @property
    def model_path(self) -> Path:
        return Path(self.args.checkpoint_dir) / self.name / "model.zip"


def load_hyperparams(args: Args) -> dict:
    """The config's ``[default]`` table, updated by the dataset's table and ``--hyperparams``."""
    path = Path(args.config) if args.config else CONFIG_DIR / f"{args.algo}.toml"
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"argument --config: cannot read hyperparameter file {path}: {error}") from error
    params = {**tables.get("default", {}), **tables.get(args.dataset.split(":")[0], {})}
    for item in args.hyperparams:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"argument --hyperparams: takes key=value items, got {item!r}")
        try:
            params[key.strip()] = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"argument --hyperparams: {item!r}: the value is not TOML ({error})") from error
    return params


def algorithm_kwargs(args: Args, params: dict) -> dict:
    """The hyperparameters that go to the algorithm; an error naming the unknown ones."""
    kwargs = {key: value for key, value in params.items() if key not in RUN_KEYS}
    accepted = set(inspect.signature(algorithm_class(args.algo).__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(kwargs) - accepted)
    if "n_timesteps" in unknown:
        raise ValueError(
            "the hyperparameter n_timesteps is not read: --minutes bounds a run, --total-timesteps N caps it"
        )
    if unknown:
        raise ValueError(
            f"argument --hyperparams: {args.algo} has no hyperparameter {', '.join(unknown)} "
            f"(in {args.config or CONFIG_DIR / f'{args.algo}.toml'} or --hyperparams); "
            f"valid: {', '.join(sorted(accepted | set(RUN_KEYS)))}"
        )
    return kwargs


def check_args(args: Args) -> None:
    """Combinations of flags that their declarations cannot check."""
    if args.minutes == 0 and args.total_timesteps is None:
        raise ValueError("argument --minutes: 0 means no time limit: give --total-timesteps N to stop the run")
    if args.resume and (args.hyperparams or args.config):
        raise ValueError("argument --resume: a resumed agent keeps its hyperparameters (no --hyperparams, --config)")
    if args.joint_moves and (args.vec_env != "batched" or args.algo in FLAT_ACTION_ALGORITHMS):
        raise ValueError("--joint-moves needs --vec-env batched and a MultiDiscrete algorithm (not dqn, qrdqn)")


def resumed_args(args: Args) -> Args:
    """``args`` with the algorithm and painter settings of the agent saved at ``--resume``."""
    saved = sb3_env_config(args.resume) if Path(args.resume).is_file() else None
    if saved is None:
        raise ValueError(
            f"argument --resume: {args.resume} is not an agent saved by train.sb3 (it needs the file itself "
            f"and its painter settings beside it, {env_config_path(args.resume)})"
        )
    settings = {flag: saved.get(key) for key, flag in RESUMED_SETTINGS.items()}
    return dataclasses.replace(args, algo=saved_algorithm(args.resume), **settings)


def painter_config(args: Args, params: dict, split: str) -> tuple[Args, PainterConfig]:
    """The flags with the config's ``env_kwargs`` filling in the painter flags not given (and
    ``--match-bits`` resolved), and Painter-v0's settings on ``split``."""
    env_kwargs = params.get("env_kwargs", {})
    unknown = sorted(set(env_kwargs) - set(ENV_KWARGS)) if isinstance(env_kwargs, dict) else ["(not a table)"]
    if unknown:
        raise ValueError(f"env_kwargs of the config: unknown {', '.join(unknown)}; valid: {', '.join(ENV_KWARGS)}")
    given = {ENV_KWARGS[key]: value for key, value in env_kwargs.items() if getattr(args, ENV_KWARGS[key]) is None}
    args = fit_action_space(dataclasses.replace(args, **given))
    config = env_config(args, split)
    if args.max_shapes is not None:
        config = dataclasses.replace(config, max_shapes=args.max_shapes)
    return args, config


def env_kwargs_of(config: PainterConfig) -> dict:
    """Painter-v0's keyword arguments (a shallow copy: the dictionary object, if any, is shared)."""
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


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


def build_model(args: Args, params: dict, venv: VecEnv, painter: Painter, device: torch.device) -> BaseAlgorithm:
    """A new agent from the config, or the one saved at ``--resume`` on the new envs."""
    algorithm = algorithm_class(args.algo)
    if args.resume:
        return algorithm.load(args.resume, env=venv, device=device)
    kwargs = algorithm_kwargs(args, params)
    policy, policy_kwargs = policy_and_kwargs(args, params, painter)
    try:
        model = algorithm(policy, venv, policy_kwargs=policy_kwargs, seed=args.seed, device=device, verbose=0, **kwargs)
    except AssertionError as error:  # SB3 checks its hyperparameters with assertions
        raise ValueError(f"argument --hyperparams: {args.algo} rejects its hyperparameters: {error}") from error
    if params.get("policy_kwargs", {}).get("start_from_matched", False):
        start_from_matched_filter(model.policy)
    return model


def set_up(argv) -> Session:
    """Check the flags, build the painters, the envs and the agent, name the run and open its logs."""
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    check_args(args)
    device = apply_threads_and_seed(args)
    torch.distributions.Distribution.set_default_validate_args(args.validate_distributions)
    if args.resume:
        args = resumed_args(args)
    algorithm_class(args.algo)  # fails early, naming the extra, when sb3-contrib is missing
    params = load_hyperparams(args)
    if not args.resume:
        algorithm_kwargs(args, params)
    args, config = painter_config(args, {} if args.resume else params, args.split)
    painter = build_painter(config)
    # Score with the training dictionary (k-means dictionaries are fitted on the training split).
    eval_painter = build_painter(dataclasses.replace(config, split=args.eval_split, dictionary=painter.dictionary))
    venv = make_vec_env(args, env_kwargs_of(config), args.n_envs or params.get("n_envs", 8))
    try:
        model = build_model(args, params, venv, painter, device)
    except BaseException:
        venv.close()
        raise
    name = args.run_name or (Path(args.resume).resolve().parent.name if args.resume else None)
    name = name or claim_run_name(
        default_run_name(f"sb3-{args.algo}", args.dataset, f"s{args.seed}"), args.logdir, args.checkpoint_dir
    )
    model.set_logger(configure(str(Path(args.logdir) / name), ["tensorboard"]))
    budget = Budget(args.minutes, args.total_timesteps, "--total-timesteps", quiet=not args.progress, unit="step")
    return Session(args, painter, eval_painter, venv, model, name, budget, model.num_timesteps)


class BudgetCallback(BaseCallback):
    """Draws the run's :class:`Budget` bar (env steps, the latest mean episode return) and stops
    training at the first env step after its time is up (an update under way finishes first). SB3
    stops at ``--total-timesteps`` by itself (it is given as the total); its progress, which drives
    schedules such as DQN's exploration, is made to follow the time spent when that runs out first."""

    def __init__(self, budget: Budget):
        super().__init__()
        self.budget = budget
        self._seen, self._next_draw = 0, 0.0

    def _on_training_start(self) -> None:
        self._seen = self.num_timesteps
        by_steps = self.model._update_current_progress_remaining

        def by_budget(num_timesteps: int, total_timesteps: int) -> None:
            by_steps(num_timesteps, total_timesteps)
            if self.budget.seconds:
                time_left = max(0.0, 1.0 - self.budget.elapsed / self.budget.seconds)
                self.model._current_progress_remaining = min(self.model._current_progress_remaining, time_left)

        self.model._update_current_progress_remaining = by_budget  # an instance attribute: see detach

    def detach(self) -> None:
        """Give the model back SB3's own progress rule (it must not be saved with the model)."""
        self.model.__dict__.pop("_update_current_progress_remaining", None)

    def _on_step(self) -> bool:
        if time.perf_counter() >= self._next_draw:
            self.draw()
        return not self.budget.out_of_time()

    def _on_training_end(self) -> None:
        self.draw()

    def draw(self) -> None:
        returns = [info["r"] for info in self.model.ep_info_buffer or ()]
        figures = {"ep_return": f"{np.mean(returns):.3f}"} if returns else {}
        self.budget.advance(self.num_timesteps - self._seen, **figures)
        self._seen, self._next_draw = self.num_timesteps, time.perf_counter() + REDRAW_SECONDS


def train(session: Session) -> None:
    """``model.learn`` with the logging callbacks until the budget is spent; Ctrl-C saves the agent
    and exits with status 130. A failure inside keeps its traceback."""
    args, model, budget = session.args, session.model, session.budget
    timer = BudgetCallback(budget)
    images = session.eval_painter.data.images[: args.gif_images]
    callbacks = [FinalSSECallback(), PaintingGifCallback(images, session.eval_painter, args.gif_every), timer]
    try:
        model.learn(
            args.total_timesteps or UNBOUNDED, callback=CallbackList(callbacks), reset_num_timesteps=not args.resume
        )
    except KeyboardInterrupt:
        timer.detach()
        budget.close()
        path = save(session)
        model.logger.close()
        steps = model.num_timesteps - session.start_steps
        print(f"\ninterrupted after {steps} env steps: agent saved to {path}", file=sys.stderr)
        print(f"continue with: python -m train.sb3 --resume {path}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    finally:
        timer.detach()
        session.venv.close()
    session.wall = budget.elapsed
    budget.close()


def save(session: Session) -> Path:
    """Save the agent, and beside it the painter settings and dictionary (read by ``sb3_env_config``)."""
    path = session.model_path
    path.parent.mkdir(parents=True, exist_ok=True)
    session.model.save(path)
    dictionary_path = path.with_suffix(".dictionary.pt")
    session.painter.dictionary.save(dictionary_path)
    config = {**session.painter.config.to_dict(), "dictionary": str(dictionary_path)}
    env_config_path(path).write_text(json.dumps(config, indent=2) + "\n")
    return path


def evaluate(model: BaseAlgorithm, painter: Painter, count: int | None) -> dict:
    """Roll the agent out (deterministic) on the painter's images; the standard figures."""
    images = painter.data.images[:count]
    metrics, _ = evaluate_encoder(lambda batch: policy_programs(model, batch, painter), images, painter, 256, "cpu")
    return metrics


def finish(session: Session) -> dict:
    """Save the agent, score it on ``--eval-split``, log the figures, write and print them."""
    args, model = session.args, session.model
    path = save(session)
    wall, trained = session.wall, model.num_timesteps - session.start_steps
    metrics = evaluate(model, session.eval_painter, args.eval_images)
    metrics.update(
        wall_seconds=wall,
        env_steps_per_second=trained / max(wall, 1e-9),
        total_timesteps=trained,
        algo=args.algo,
        dataset=args.dataset,
        split=args.split,
        eval_split=args.eval_split,
        run_name=session.name,
        model=str(path),
    )
    for key in ("sse", "psnr", "optimal_return_fraction"):
        if key in metrics:
            model.logger.record(f"eval/{key}", metrics[key])
    model.logger.dump(model.num_timesteps)
    model.logger.close()
    print(f"TensorBoard logs: {Path(args.logdir) / session.name}  (tensorboard --logdir {args.logdir})")
    print(f"agent: {path}")
    row = {
        "agent": args.algo,
        "bits/image": f"{metrics['bits_per_image']:.0f}",
        "SSE": f"{metrics['sse']:.4g}",
        "PSNR": f"{metrics['psnr']:.2f}",
        "env steps": str(trained),
        "env steps/s": f"{metrics['env_steps_per_second']:.0f}",
        "wall s": f"{wall:.0f}",
    }
    if "optimal_return_fraction" in metrics:
        row["optimal return"] = f"{metrics['optimal_return_fraction']:.4f}"
    return report(args, metrics, row)


def main(argv: list[str] | None = None) -> dict:
    """Bad input found while setting up prints one ``error: ...`` line and exits with status 2."""
    with user_errors():
        session = set_up(argv)
    train(session)
    return finish(session)


if __name__ == "__main__":
    main()
