"""Environment throughput, all measured in one process: ``python -m benchmarks.env_throughput``.

Rows: the single ``Painter-v0`` env and ``CartPole-v1`` (the yardstick) in steps/s, and a CartPole
step in calls of ``torch.add`` on tiny tensors (what bounds a batch-of-one kernel step); Gymnasium's
``SyncVectorEnv`` over N single painter envs vs the native batched env at N = 1024 and 4096
(env-steps/s, torch tensors out); the native env's step time at image size 28 vs 112 (same N
and R), for painting steps alone and averaged over whole episodes with their autoresets. Each figure
is the median of several timed repeats; the two single envs are timed in alternation and their
ratio is the median of the ratios within a round. Random actions are drawn before timing. Prints a
markdown table and writes JSON with ``--json``; Ctrl-C stops it there with the rows measured so far
(the JSON marked ``"interrupted": true``) and exit status 130.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium
import torch
from tqdm import tqdm

import painter_env  # noqa: F401  (registers Painter-v0)
from benchmarks.jobs import check_output, interrupted, setting_up, write_json
from painter_env.config import PainterConfig, build_painter, device_of
from train.common.config import arg, parse_args


@dataclass
class Args:
    sizes: list[int] = arg([1024, 4096], "numbers of envs N for SyncVectorEnv vs native", type=int, at_least=1)
    repeats: int = arg(5, "timed repeats per figure; the median is reported", at_least=1)
    single_steps: int = arg(5000, "steps per repeat for the single envs", at_least=1)
    native_steps: int = arg(64, "batched steps per repeat for the native env", at_least=1)
    sync_steps: int = arg(3, "batched steps per repeat for SyncVectorEnv (slow)", at_least=1)
    image_sizes: list[int] = arg(
        [28, 112], "the two image sizes (small, large) whose step times compare", type=int, at_least=1
    )
    split: str = arg("train", "shapes split the painter envs draw their images from, e.g. 'train[:1000]'")
    device: str = arg("cpu", "device of the native env", choices=["cpu", "cuda"])
    threads: int = arg(None, "torch intra-op threads (default: torch's)", type=int, at_least=1)
    quick: bool = arg(False, "tiny sizes, step counts and split, for a smoke test")
    json: str = arg(None, "write the results as JSON to this path", type=str)


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def single_env_run(env_id: str, steps: int, **kwargs):
    """A call that takes ``steps`` random steps of one env made with ``gymnasium.make``, resetting at
    episode ends."""
    env = gymnasium.make(env_id, **kwargs)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]

    def run():
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return run


def interleaved_seconds(runs: list, repeats: int) -> list[list[float]]:
    """Wall times of each call in ``runs`` over ``repeats`` rounds that time every call once, in turn
    (after one warm-up round): a slow spell of the machine then hits all of them alike, so ratios
    within a round are fair."""
    times = [[] for _ in runs]
    for round_ in range(repeats + 1):
        for run, seconds in zip(runs, times):
            start = time.perf_counter()
            run()
            if round_:
                seconds.append(time.perf_counter() - start)
    return times


def torch_op_run(calls: int):
    """A call that makes ``calls`` calls of ``torch.add`` on two tiny tensors: torch's dispatch cost,
    which bounds a batch-of-one step of the kernel."""
    left, right = torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long)

    def run():
        for _ in range(calls):
            torch.add(left, right)

    return run


def single_env_rates(steps: int, repeats: int, split: str) -> dict:
    """Single ``Painter-v0`` and ``CartPole-v1`` steps/s (medians), the cost of a painter step in
    CartPole steps and of a CartPole step in tiny torch ops (medians of the ratios within a round)."""
    painter, cartpole, torch_op = interleaved_seconds(
        [single_env_run("Painter-v0", steps, split=split), single_env_run("CartPole-v1", steps), torch_op_run(steps)],
        repeats,
    )
    return {
        "painter_steps_per_second": steps / statistics.median(painter),
        "cartpole_steps_per_second": steps / statistics.median(cartpole),
        "step_cost_vs_cartpole": statistics.median(p / c for p, c in zip(painter, cartpole)),
        "torch_op_seconds": statistics.median(torch_op) / steps,
        "cartpole_step_in_torch_ops": statistics.median(c / t for c, t in zip(cartpole, torch_op)),
    }


def vector_rate(env, steps: int, repeats: int, as_tensor: bool) -> float:
    """Env-steps/s of a vector env over ``steps`` batched steps (autoreset included)."""
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    if as_tensor:
        actions = [torch.as_tensor(action) for action in actions]

    def run():
        for action in actions:
            env.step(action)

    return env.num_envs * steps / median_seconds(run, repeats)


def native_env(num_envs: int, device: str, **kwargs):
    return gymnasium.make_vec("Painter-v0", num_envs=num_envs, device=device, **kwargs)


def sync_env(num_envs: int, **kwargs):
    return gymnasium.make_vec("Painter-v0", num_envs=num_envs, vectorization_mode="sync", **kwargs)


def set_up(args: Args) -> None:
    """Check the flags that go together, the device and the split (``--quick`` applied first)."""
    check_output(args.json, "--json")
    if len(args.image_sizes) != 2:
        raise ValueError(f"argument --image-sizes: give two sizes (small, large), got {args.image_sizes}")
    if not args.sizes:
        raise ValueError("argument --sizes: give at least one number of envs")
    if args.quick:
        args.sizes, args.repeats, args.single_steps, args.native_steps, args.sync_steps = [16], 1, 50, 4, 2
        args.image_sizes, args.split = [16, 32], "train[:64]"
    try:
        device_of(args.device)
    except ValueError as error:
        raise ValueError(f"argument --device: {error}") from None
    try:  # the images of the single env (cached: its own are these)
        build_painter(PainterConfig(split=args.split))
    except ValueError as error:
        raise ValueError(f"argument --split: {error}") from None
    if args.threads:
        torch.set_num_threads(args.threads)


def measurements(args: Args, results: dict) -> Iterator[tuple[str, str, str]]:
    """Take every measurement into ``results``; the table rows (measurement, value, comparison) as they come."""
    split = args.split
    results["single"] = single = single_env_rates(args.single_steps, args.repeats, split)
    yield (
        "single Painter-v0",
        f"{single['painter_steps_per_second']:,.0f} steps/s",
        f"{single['step_cost_vs_cartpole']:.2f}x a CartPole step",
    )
    yield ("single CartPole-v1", f"{single['cartpole_steps_per_second']:,.0f} steps/s", "yardstick")
    yield (
        "one torch.add of tiny tensors",
        f"{single['torch_op_seconds'] * 1e6:.2f} us",
        f"a CartPole step costs {single['cartpole_step_in_torch_ops']:.1f} of them",
    )
    for size in args.sizes:
        sync = vector_rate(sync_env(size, split=split), args.sync_steps, args.repeats, as_tensor=False)
        yield (f"SyncVectorEnv N={size}", f"{sync:,.0f} env-steps/s", "")
        native = vector_rate(native_env(size, args.device, split=split), args.native_steps, args.repeats, True)
        results[f"vector_{size}"] = {
            "sync_env_steps_per_second": sync,
            "native_env_steps_per_second": native,
            "speedup": native / sync,
        }
        yield (f"native batched N={size}", f"{native:,.0f} env-steps/s", f"{native / sync:.0f}x SyncVectorEnv")
    size = args.sizes[-1]
    # painting steps only (episodes longer than the timed run), then whole episodes with autoresets,
    # whose new images and blank canvases cost O(N H W) once per episode
    horizons = {"painting step": args.native_steps * (args.repeats + 2), "step incl. autoreset": None}
    results["image_size"] = {"num_envs": size}
    for label, horizon in horizons.items():
        small, large = args.image_sizes
        step_time = {}
        for image_size in (small, large):
            env = native_env(size, args.device, split=split, image_size=image_size, max_steps=horizon)
            step_time[image_size] = size / vector_rate(env, args.native_steps, args.repeats, as_tensor=True)
        ratio = step_time[large] / step_time[small]
        key = label.replace(" ", "_").replace(".", "")
        results["image_size"][key] = {
            f"seconds_{small}": step_time[small],
            f"seconds_{large}": step_time[large],
            "ratio": ratio,
        }
        yield (f"native {label}, {small}x{small}, N={size}", f"{step_time[small] * 1e3:.2f} ms", "")
        yield (
            f"native {label}, {large}x{large}, N={size}",
            f"{step_time[large] * 1e3:.2f} ms",
            f"{ratio:.2f}x the {small}x{small} time",
        )


def print_table(args: Args, results: dict, rows: list[tuple[str, str, str]]) -> None:
    print(
        f"\nEnvironment throughput ({results['threads']} torch threads, device {args.device}, "
        f"median of {args.repeats})\n"
    )
    print("| measurement | value | comparison |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(Args, __doc__, argv)
    with setting_up():
        set_up(args)
    results = {"threads": torch.get_num_threads(), "device": args.device, "split": args.split, "interrupted": False}
    rows, total = [], 7 + 2 * len(args.sizes)
    try:
        with tqdm(total=total, desc="env throughput", leave=False) as progress:
            for row in measurements(args, results):
                rows.append(row)
                progress.update()
    except KeyboardInterrupt:
        if rows:
            print_table(args, results, rows)
        interrupted(args.json, results, f"after {len(rows)} of {total} rows")
    print_table(args, results, rows)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
