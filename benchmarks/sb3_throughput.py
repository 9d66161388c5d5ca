"""PPO throughput on the painter: the batched SB3 adapter vs ``DummyVecEnv`` and ``SubprocVecEnv``.

    python -m benchmarks.sb3_throughput --n-envs 64 256 --json sb3_throughput.json

For each policy, number of envs and vectorisation, PPO (hyperparameters from
``train/configs/ppo.toml`` as ``train.sb3`` reads them) runs ``--rollouts`` iterations.
``--policies``: ``config``, the policy ``train.sb3`` trains on the dataset, and ``mlp``, SB3's
default ``MultiInputPolicy`` (the lightest forward pass, which shows what the vectorisation itself
costs); the ``policy`` column names each. The table gives env steps per second of rollout
collection (SB3's ``collect_rollouts``: env steps and policy forward passes, no training) and of
the whole ``learn()``, and the speed-up of the batched adapter over the better of the other two.
Each backend's PPO is built and warmed up once; then ``--repeats`` rounds each run ``--rollouts``
more iterations on every backend in turn (every other round in reverse order), and medians are
reported: ``collect_speedup`` is the ratio of the medians, ``collect_speedup_paired`` the median of
the ratios within a round, which a drift of the machine's speed between rounds does not move. With
several ``--threads`` counts every backend is measured at each and compared at its fastest.
``SubprocVecEnv`` runs one process per env, so it is skipped above ``--subproc-max-envs``. The
``null`` backend replays one observation with no env work at all; ``collect_speedup_ceiling`` (its
rate over the best of ``DummyVecEnv`` and ``SubprocVecEnv``) is the most any vectorisation could
give with the policy measured. ``env_ms_per_step`` and ``other_env_ms_per_step`` are the
collection time per step of all the envs over the null backend's, for the batched adapter and for
the best of the others: the env's own share inside PPO's loop.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

import painter_env  # noqa: F401  (registers Painter-v0)
from agents.sb3.vec_env import PainterVecEnv
from painter_env.config import PainterConfig, build_painter
from train import sb3
from train.common.config import arg, parse_args
from train.common.metrics import write_metrics_json
from train.common.run import INTERRUPTED, user_errors

BACKENDS = ("batched", "dummy", "subproc", "null")
REFERENCE_BACKENDS = ("dummy", "subproc")  # what the batched adapter is compared with


@dataclass
class Args:
    n_envs: list = arg([64, 256], "numbers of parallel envs", type=int, at_least=1)
    backends: list = arg(
        list(BACKENDS), "vectorisations (null: no env work, the ceiling of any speed-up)", type=str, choices=BACKENDS
    )
    rollouts: int = arg(4, "timed PPO iterations per measurement", at_least=1)
    repeats: int = arg(5, "rounds, each measuring every backend in turn (medians reported)", at_least=1)
    subproc_max_envs: int = arg(64, "skip SubprocVecEnv (one process per env) above this many envs", at_least=0)
    dataset: str = arg("shapes", "dataset of the runs")
    image_size: int = arg(None, "image size of the runs (default: the dataset's)", type=int, at_least=1)
    threads: list = arg(
        [1], "torch CPU thread counts to measure each backend at (e.g. --threads 1 2)", type=int, at_least=1
    )
    hyperparams: list = arg([], "PPO overrides of train/configs/ppo.toml as key=value, as in train.sb3", type=str)
    policies: list = arg(
        ["config", "mlp"],
        "config: the policy train.sb3 trains on the dataset; mlp: SB3's default MultiInputPolicy",
        type=str,
        choices=["config", "mlp"],
    )
    json: str = arg(None, "write all rows to this JSON file", type=str)


class RolloutTimer(BaseCallback):
    """Wall-clock time of each rollout collection (``on_rollout_start`` to ``on_rollout_end``)."""

    def __init__(self):
        super().__init__()
        self.durations: list[float] = []

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.durations.append(time.perf_counter() - self._start)

    def _on_step(self) -> bool:
        return True


class NullVecEnv(PainterVecEnv):
    """The batched adapter with no env work: its first observation replayed, episodes ending after
    the painter's horizon as the real ones do. PPO's collection rate on it is the ceiling that any
    vectorisation's speed-up can reach with the policy measured (SB3's own work per step stays)."""

    def reset(self):
        self._replay = super().reset()
        self._count = 0
        return self._replay

    def step_wait(self):
        self._actions, self._count = None, self._count + 1
        done = np.full(self.num_envs, self._count % self.painter.max_steps == 0)
        infos = [{"sse": 0.0, "TimeLimit.truncated": False} for _ in range(self.num_envs)]
        if done[0]:
            for env, info in enumerate(infos):
                info["terminal_observation"] = {key: value[env] for key, value in self._replay.items()}
        return self._replay, np.zeros(self.num_envs, dtype=np.float32), done, infos


def make_venv(backend: str, n_envs: int, env_kwargs: dict):
    if backend in ("batched", "null"):
        venv = (PainterVecEnv if backend == "batched" else NullVecEnv)(n_envs, horizon_is_terminal=True, **env_kwargs)
    else:
        makers = [sb3.single_env_maker(env_kwargs, flatten=False, horizon_is_terminal=True) for _ in range(n_envs)]
        venv = DummyVecEnv(makers) if backend == "dummy" else SubprocVecEnv(makers, start_method="fork")
    venv.seed(0)
    return VecMonitor(venv)


def build_model(backend: str, n_envs: int, env_kwargs: dict, params: dict, policy) -> PPO:
    """PPO on the backend, warmed up by one iteration (first forward passes, buffers, worker start)."""
    algo_kwargs = dict(params)
    algo_kwargs["batch_size"] = min(algo_kwargs.get("batch_size", 64), algo_kwargs["n_steps"] * n_envs)
    policy_class, policy_kwargs = policy
    model = PPO(
        policy_class,
        make_venv(backend, n_envs, env_kwargs),
        policy_kwargs=policy_kwargs,
        seed=0,
        verbose=0,
        **algo_kwargs,
    )
    model.learn(model.n_steps * n_envs)
    return model


def measure(model: PPO, rollouts: int) -> dict:
    """Env steps/s of rollout collection and of ``learn()`` over ``rollouts`` more PPO iterations."""
    steps = rollouts * model.n_steps * model.n_envs
    timer = RolloutTimer()
    start = time.perf_counter()
    model.learn(steps, callback=timer, reset_num_timesteps=False)
    learn_seconds = time.perf_counter() - start
    return {"collect": steps / sum(timer.durations), "learn": steps / learn_seconds}


def policy_name(policy) -> str:
    """What the table's policy is: the policy class, its extractor and whether it has the matched filter."""
    policy_class, policy_kwargs = policy
    extractor = policy_kwargs.get("features_extractor_class", CombinedExtractor).__name__
    matched = " + matched filter" if "patch_values" in policy_kwargs.get("features_extractor_kwargs", {}) else ""
    return f"{getattr(policy_class, '__name__', policy_class)}({extractor}{matched})"


def policies_to_measure(names: list[str], run_args, params: dict, env_kwargs: dict) -> list[tuple]:
    """``(policy, policy_kwargs)`` of each policy measured: ``config``, the one ``train.sb3`` trains on the
    dataset; ``mlp``, SB3's ``MultiInputPolicy`` with its default extractor and MLPs."""
    chosen = []
    if "config" in names:
        chosen.append(sb3.policy_and_kwargs(run_args, params, build_painter(PainterConfig(**env_kwargs))))
    if "mlp" in names:
        chosen.append(("MultiInputPolicy", {}))
    return chosen


def throughput_rows(args, env_kwargs: dict, params: dict, policies: list[dict], rows: list) -> list[dict]:
    """One row per policy, n_envs, backend and torch thread count, appended to ``rows`` as each
    (policy, n_envs) is finished; the batched adapter's row at its fastest thread count carries the
    speed-ups over the fastest (backend, threads) of the others."""
    for chosen, n_envs in itertools.product(policies, args.n_envs):
        policy = policy_name(chosen)
        backends = [b for b in args.backends if b != "subproc" or n_envs <= args.subproc_max_envs]
        settings = list(itertools.product(backends, args.threads))
        models = {backend: build_model(backend, n_envs, env_kwargs, params, chosen) for backend in backends}
        samples = {setting: [] for setting in settings}
        for repeat in range(args.repeats):  # rounds in turn, every other one in reverse order
            for backend, threads in settings if repeat % 2 == 0 else settings[::-1]:
                torch.set_num_threads(threads)
                samples[backend, threads].append(measure(models[backend], args.rollouts))
        for model in models.values():
            model.env.close()
        medians = {
            setting: {key: statistics.median(s[key] for s in runs) for key in ("collect", "learn")}
            for setting, runs in samples.items()
        }

        collect = {setting: rates["collect"] for setting, rates in medians.items()}
        step_ms = {setting: 1000 * n_envs / rate for setting, rate in collect.items()}  # per step of all envs
        fastest = {b: max(((b, t) for t in args.threads), key=collect.get) for b in backends}
        others = [fastest[b] for b in backends if b in REFERENCE_BACKENDS]
        best = max(others, key=collect.get) if others else None
        for setting in settings:
            backend, threads = setting
            row = {
                "n_envs": n_envs,
                "backend": backend,
                "threads": threads,
                "policy": policy,
                "collect_steps_per_second": medians[setting]["collect"],
                "collect_ms_per_step": step_ms[setting],
                "learn_steps_per_second": medians[setting]["learn"],
                "repeats": args.repeats,
            }
            if backend == "batched" and best and setting == fastest["batched"]:
                row["collect_speedup"] = medians[setting]["collect"] / medians[best]["collect"]
                # Each repeat measures every setting in turn: the ratio within a repeat is immune to the
                # machine's speed drifting between repeats.
                row["collect_speedup_paired"] = statistics.median(
                    mine["collect"] / theirs["collect"] for mine, theirs in zip(samples[setting], samples[best])
                )
                row["learn_speedup"] = medians[setting]["learn"] / max(
                    medians[fastest[b]]["learn"] for b in backends if b in REFERENCE_BACKENDS
                )
                if "null" in backends:
                    row["collect_speedup_ceiling"] = medians[fastest["null"]]["collect"] / medians[best]["collect"]
                    # What the env costs per step of the n_envs inside PPO's loop: the time over the null backend's.
                    sb3_ms = step_ms[fastest["null"]]
                    row["env_ms_per_step"] = step_ms[setting] - sb3_ms
                    row["other_env_ms_per_step"] = step_ms[best] - sb3_ms
                row["compared_with"] = f"{best[0]}, {best[1]} thread{'s' if best[1] > 1 else ''}"
            rows.append(row)
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Bad input is one ``error:`` line and status 2 before any measurement; Ctrl-C writes the rows
    finished so far to ``--json`` and exits with status 130."""
    args = parse_args(Args, __doc__.split("\n\n")[0], argv)
    with user_errors():
        torch.set_num_threads(args.threads[0])
        run_args = parse_args(sb3.Args, "", ["--dataset", args.dataset, "--hyperparams", *args.hyperparams])
        # As train.sb3 runs PPO: no argument checks in torch.distributions (for every backend alike).
        torch.distributions.Distribution.set_default_validate_args(run_args.validate_distributions)
        params = sb3.load_hyperparams(run_args)
        algo_params = sb3.algorithm_kwargs(run_args, params)  # an error naming a hyperparameter PPO lacks
        env_kwargs = {"dataset": args.dataset, **({"image_size": args.image_size} if args.image_size else {})}
        # Each policy is the same for every backend.
        policies = policies_to_measure(args.policies, run_args, params, env_kwargs)
    result = {"throughput": []}
    try:
        throughput_rows(args, env_kwargs, algo_params, policies, result["throughput"])
    except KeyboardInterrupt:
        write_metrics_json(args.json, result)
        kept = f", written to {args.json}" if args.json else ""
        print(f"\ninterrupted: {len(result['throughput'])} rows finished so far{kept}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    columns = [
        "n_envs",
        "backend",
        "threads",
        "policy",
        "collect_steps_per_second",
        "collect_ms_per_step",
        "learn_steps_per_second",
        "collect_speedup",
        "collect_speedup_paired",
        "collect_speedup_ceiling",
        "env_ms_per_step",
        "other_env_ms_per_step",
        "learn_speedup",
        "compared_with",
    ]
    print(markdown(result["throughput"], columns))
    write_metrics_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
