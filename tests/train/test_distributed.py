"""``torchrun -m train.reinforce`` on 2 CPU processes (gloo): a failing rank stops the whole run and
leaves its last checkpoint intact; resumed from it, the run ends with the same parameters as one
process drawing the same 2 shards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tqdm import tqdm

import train.reinforce as reinforce
from tests import tiny

REPO = Path(__file__).resolve().parents[2]
TINY = [*tiny.REINFORCE, *tiny.LOG_EVERY_2, "--estimator", "reinforce", "--baseline", "moving-average"]
# A 1-channel convolution's bias adds the same constant to every position's logit: the softmax over
# positions ignores it, its exact gradient is 0, and Adam turns rounding noise there into lr-sized steps.
IGNORED = {"position_head.bias"}


def _argv(tmp_path, name, *extra):
    return [*TINY, *tiny.run_flags(tmp_path, name), *extra]


def _torchrun(*target, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank, port, argv, stderr_dir):
    """One rank of a 2-process run with torchrun's environment variables; rank 1 fails in iteration 3."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    # A forked rank inherits tqdm's write lock, a semaphore shared with the parent: a rank stopped
    # while it holds the lock (as the surviving rank is when the other fails) would leave the parent
    # waiting for it forever in its next progress bar. Each rank gets a lock of its own.
    tqdm.set_lock(threading.RLock())
    sys.stderr = open(stderr_dir / f"rank{rank}.err", "w", buffering=1)  # noqa: SIM115  (the rank ends with it)
    original, calls = reinforce.sample_batch, {"count": 0}

    def failing(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    if rank == 1:
        reinforce.sample_batch = failing
    reinforce.main(argv)


def _checkpoint(tmp_path, name):
    return torch.load(tmp_path / "ck" / name / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-rank run whose rank 1 fails in iteration 3, the same run resumed from its checkpoint to
    iteration 4, and one process drawing both ranks' shards for 4 iterations."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    # forked ranks skip the slow start of fresh interpreters; the resume goes through torchrun itself
    with pytest.raises(mp.ProcessRaisedException, match="injected failure"):
        mp.start_processes(
            _rank,
            (_free_port(), _argv(tmp_path, "ddp", "--batch-size", "4", "--iterations", "4"), tmp_path),
            nprocs=2,
            start_method="fork",
        )
    failed_checkpoint = _checkpoint(tmp_path, "ddp")
    resumed = _torchrun(
        "-m",
        "train.reinforce",
        "--resume",
        str(tmp_path / "ck" / "ddp" / "checkpoint.pt"),
        "--iterations",
        "4",
        "--metrics-json",
        str(tmp_path / "ddp.json"),
    )
    reinforce.main(_argv(tmp_path, "single", "--batch-size", "8", "--shards", "2", "--iterations", "4"))
    return tmp_path, (tmp_path / "rank1.err").read_text(), failed_checkpoint, resumed


def test_a_failing_rank_stops_the_run_and_keeps_the_last_checkpoint(runs):
    tmp_path, stderr, checkpoint, _ = runs
    assert "[rank 1/2] training failed: RuntimeError('injected failure')" in stderr
    assert "Stopping the whole run" in stderr
    assert checkpoint["iteration"] == 2 and checkpoint["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "ck" / "ddp").iterdir()) == ["checkpoint.pt"]


def test_two_ranks_resumed_match_one_process_with_both_shards(runs):
    tmp_path, _, _, resumed = runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ddp, one = _checkpoint(tmp_path, "ddp"), _checkpoint(tmp_path, "single")
    assert ddp["iteration"] == one["iteration"] == 4
    compared = 0
    for name, value in one["policy"].items():
        if name not in IGNORED:
            torch.testing.assert_close(ddp["policy"][name], value, rtol=1e-4, atol=1e-5, msg=name)
            compared += 1
    assert compared > 10
    for name, value in one["dictionary"]["state"].items():
        torch.testing.assert_close(ddp["dictionary"]["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(ddp["moving_average"], one["moving_average"], rtol=1e-5, atol=1e-6)
    assert set(ddp["rng"]) == {"torch", "data", "sample", "data1", "sample1"}
    for name in ("data", "sample", "data1", "sample1"):  # the same images and samples were drawn
        assert torch.equal(ddp["rng"][name], one["rng"][name]), name


def test_only_rank_zero_writes_and_a_checkpoint_needs_its_number_of_ranks(runs):
    tmp_path = runs[0]
    assert len(list((tmp_path / "runs" / "ddp").glob("events.out.tfevents.*"))) == 2  # failed run and resume
    metrics = (tmp_path / "ddp.json").read_text()
    assert '"world_size": 2' in metrics and '"train_images_per_second"' in metrics
    with pytest.raises(SystemExit) as exit_info:
        reinforce.main(["--resume", str(tmp_path / "ck" / "ddp" / "checkpoint.pt"), "--iterations", "6"])
    assert exit_info.value.code == 2
