"""Every command in the README and the docs runs in a test, at a tiny size.

The commands are the ``python -m train.*`` and ``python -m benchmarks.*`` lines of the fenced ``bash``
blocks of README.md and docs/*.md (lines continued with a backslash joined, ``# comments`` dropped);
of a ``torchrun ... -m train.reinforce`` line only the trainer's flags are parsed (torchrun itself is
tested in tests/train/test_distributed.py). Each command runs in this process, in a temporary
folder: its placeholders (``DIR``, ``CKPT``, ``runs/RUN/model.zip``, ...) become the shared data and a
tiny checkpoint and agent made once per session, and the flags of :data:`TINY`, appended after its
own (argparse keeps the last), make it take a few seconds at most. A stale flag in the docs fails
here with the command's own ``error:`` line.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import tiny
from tests.conftest import shared_data
from train.common.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTPUTS = ("--metrics-json", "--json", "--gif", "--plot")  # files a command is asked to write

# PPO's rollouts of a tiny run (4 envs x 8 steps) are smaller than its config's minibatch: SB3 says so.
pytestmark = pytest.mark.filterwarnings("ignore:You have specified a mini-batch size:UserWarning")


@dataclass(frozen=True)
class Command:
    """One documented command: where it is, its module and its flags as written."""

    file: str
    line: int
    module: str
    argv: tuple[str, ...]
    torchrun: bool = False

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line} {self.module}"

    @property
    def text(self) -> str:
        return f"{'torchrun ... ' if self.torchrun else 'python '}-m {self.module} {shlex.join(self.argv)}".strip()


def bash_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of the fenced ``bash`` blocks of a markdown file, continued lines joined: (first line, text)."""
    language, start, pending = None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            language = stripped[3:].strip() if language is None else None
            continue
        if language != "bash":
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        yield start, " ".join([*pending, stripped])
        pending = []


def commands_in(text: str) -> Iterator[tuple[str, list[str], bool]]:
    """The ``python -m MODULE`` and ``torchrun ... -m MODULE`` commands of a shell line: (module, argv, torchrun)."""
    words = shlex.split(text, comments=True)
    while words:
        end = words.index("&&") if "&&" in words else len(words)
        command, words = words[:end], words[end + 1 :]
        if command[:2] == ["python", "-m"] and len(command) > 2:
            yield command[2], command[3:], False
        elif command[:1] == ["torchrun"] and "-m" in command[:-1]:
            at = command.index("-m")
            yield command[at + 1], command[at + 2 :], True


def documented_commands() -> list[Command]:
    found = []
    for path in DOCUMENTS:
        for line, text in bash_lines(path):
            for module, argv, torchrun in commands_in(text):
                if module.startswith(("train.", "benchmarks.")):
                    found.append(Command(str(path.relative_to(ROOT)), line, module, tuple(argv), torchrun))
    return found


COMMANDS = documented_commands()

# Appended to every command of a module (after its own flags: the last occurrence of a flag wins).
TRAINED = ["--minutes", "0.05", "--eval-images", "8", "--threads", "1"]
TINY = {
    "train.reinforce": [*TRAINED, *tiny.REINFORCE, "--batch-size", "4", "--iterations", "2"],
    "train.sb3": [*TRAINED, "--total-timesteps", "64", "--n-envs", "4", "--image-size", "12", "--patch-size", "4"]
    + ["--steps", "2", "--max-shapes", "2", "--no-progress"],
    # vqvae keeps its --batch-size 64: the first batch seeds the codebook (412 codes with --grid 4 --match-bits 139)
    "train.vqvae": [*TRAINED, "--epochs", "1", "--dim", "4", "--hidden", "8"],
    "train.cgae": [*TRAINED, "--epochs", "1", "--batch-size", "16", "--prototypes", "4", "--chains", "2"]
    + ["--sweeps", "1", "--eval-sweeps", "1"],
    "train.llgae": [*TRAINED, "--epochs", "1", "--batch-size", "16", "--code-size", "3", "--n-step", "2"],
    "train.evaluate": ["--eval-images", "8", "--threads", "1", "--gibbs-sweeps", "1"],
    "benchmarks.env_throughput": ["--quick"],
    "benchmarks.sb3_throughput": ["--n-envs", "4", "--rollouts", "1", "--repeats", "1", "--image-size", "12"]
    + ["--subproc-max-envs", "1", "--hyperparams", "n_steps=2", "batch_size=8"],
    "benchmarks.rate_distortion": ["--quick", "--jobs", "1", "--minutes", "0.002", "--bits", "70", "--eval-images", "8"]
    + ["--gibbs-sweeps", "1", "--kl-betas", "1"],
    "benchmarks.encoders": ["--shapes-minutes", "0.002", "--mnist-minutes", "0.002", "--eval-images", "8"],
    "benchmarks.estimator_variance": ["--replicates", "2", "--batch-size", "2", "--samples", "2"]
    + ["--baseline-batches", "1"],
    "benchmarks.ddp_throughput": ["--repeats", "1", "--iterations", "1", "--batch-size", "2", "--image-size", "12"],
    "benchmarks.sb3_algorithms": ["--minutes", "0.002"],
    "benchmarks.image_cost": ["--fit-images", "64", "--iterations", "1", "--eval-images", "4", "--repeats", "1"],
    "benchmarks.defaults": ["--steps", "4", "--eval-images", "8"],
}
TRAINERS = ("train.reinforce", "train.sb3", "train.vqvae", "train.cgae", "train.llgae")
FITTED, SCORED = slice(0, 256), slice(256, 272)  # the images of a tiny split (scored: after the fitted ones)

# Documented commands that only have their flags parsed: no flag appended to them makes them small. Every run
# of these modules takes long; of the others, the commands named.
PARSED_ONLY_MODULES = {
    "benchmarks.sb3_algorithms": "benchmarks.sb3_algorithms has no size flags (no --n-envs, --eval-images or "
    "--quick): each of its train.sb3 runs builds 64 envs and scores 2000 images, 8-20 s per run at --minutes 0.002",
    "benchmarks.ddp_throughput": "benchmarks.ddp_throughput starts a train.reinforce process and a 2-process "
    "torchrun run (--processes and --repeats at their smallest): about 20 s of process start-up on 2 cores; "
    "torchrun runs are tested in tests/train/test_distributed.py",
}
RATE_DISTORTION = "benchmarks.rate_distortion trains its painters with --match-bits and no flag sets their patch "
RATE_DISTORTION += "size: probing it makes every run 11-18 s, even with --quick --bits 70 --minutes 0.002 --jobs 1 "
RATE_DISTORTION += "(the documented --quick smoke run runs here)"
ENCODERS = "benchmarks.encoders fits MNIST test[:8000] (fixed) and probes the patch size: about 20 s for its MNIST "
ENCODERS += "rows even at --mnist-minutes 0.002 (its --datasets shapes command runs here)"
PARSED_ONLY = {
    "python -m benchmarks.rate_distortion --data-root DIR --minutes 30 --jobs 2 --json rd.json --plot rd.png": (
        RATE_DISTORTION
    ),
    "python -m benchmarks.rate_distortion --data-root DIR --baselines": RATE_DISTORTION,
    "python -m benchmarks.encoders --data-root DIR --json encoders.json": ENCODERS,
}


def value_of(argv: list[str] | tuple[str, ...], flag: str, default: str | None = None) -> str | None:
    """The value of the last ``flag`` in ``argv`` (argparse's), or ``default``."""
    values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == flag]
    return values[-1] if values else default


def split_base(split: str) -> str:
    return split.split("[")[0].strip()


def tiny_splits(argv: list[str]) -> list[str]:
    """The command's splits, cut to a few images: the fitted one to its first 256, the scored one to 16
    (after the fitted ones when both are of the same split, so they stay disjoint)."""
    dataset = value_of(argv, "--dataset", "shapes") or "shapes"
    default = "all" if dataset.startswith("folder:") else None
    fitted = split_base(value_of(argv, "--split", default or "train"))
    scored = split_base(value_of(argv, "--eval-split", default or "test"))
    window = SCORED if scored == fitted else slice(0, SCORED.stop - SCORED.start)
    return [
        "--split",
        f"{fitted}[{FITTED.start}:{FITTED.stop}]",
        "--eval-split",
        f"{scored}[{window.start}:{window.stop}]",
    ]


def ignored_flags(command: Command) -> list[str]:
    """Flags of a documented command that have no effect there (a reader would expect them to)."""
    argv = command.argv
    if command.module == "train.evaluate" and "--split" in argv and {"--checkpoint", "--dictionary"} & set(argv):
        return [
            "--split: train.evaluate scores --eval-split; --split only fits a dictionary when neither --checkpoint "
            "nor --dictionary is given"
        ]
    return []


CHECKPOINT = re.compile(r"(CKPT|CHECKPOINT|runs/checkpoints/[^/\s]+/checkpoint\.pt)")
AGENT = re.compile(r"(MODEL\.zip|runs/(checkpoints/)?[^/\s]+/model\.zip)")
AGENT_DICTIONARY = re.compile(r"runs/(checkpoints/)?[^/\s]+/model\.dictionary\.pt")


def needs(argv: tuple[str, ...]) -> set[str]:
    """Which fixtures the placeholders of ``argv`` need."""
    wanted = set()
    for word in argv:
        if word == "DIR" or "shared/data/mnist" in word:
            wanted.add("mnist_root")
        if word == "folder:DIR" or "shared/data/cifar10" in word:
            wanted.add("cifar_root")
        if CHECKPOINT.fullmatch(word) or word == "--reference":  # references: the tiny run's metrics
            wanted.add("tiny_checkpoint")
        if AGENT.fullmatch(word) or AGENT_DICTIONARY.fullmatch(word):
            wanted.add("tiny_agent")
    return wanted


def substitute(word: str, inputs: dict[str, Path]) -> str:
    """One word of a documented command with its placeholder replaced (other words as they are)."""
    if word == "DIR":
        return str(inputs["mnist_root"])
    if word == "folder:DIR":
        return f"folder:{inputs['cifar_root']}"
    for prefix in ("../shared/data/", "folder:../shared/data/"):
        if word.startswith(prefix):
            return prefix.removesuffix("../shared/data/") + str(shared_data() / word.removeprefix(prefix))
    if CHECKPOINT.fullmatch(word):
        return str(inputs["tiny_checkpoint"])
    if AGENT.fullmatch(word):
        return str(inputs["tiny_agent"])
    if AGENT_DICTIONARY.fullmatch(word):
        return str(inputs["tiny_agent"].with_suffix(".dictionary.pt"))
    return word


def write_references(argv: list[str], metrics: Path) -> None:
    """``--reference NAME=METRICS.json`` files that earlier commands of the docs write: the tiny run's metrics."""
    if "--reference" not in argv:
        return
    for word in argv[argv.index("--reference") + 1 :]:
        if word.startswith("-"):
            break
        path = Path(word.partition("=")[2])
        if not path.exists():
            shutil.copy(metrics, path)


def data_missing(command: Command, argv: list[str]) -> str | None:
    """Why the dataset the command reads cannot be read here (its files are not in ../shared/data), or None."""
    from painter_env.datasets import load_images

    dataset = value_of(argv, "--dataset")
    if dataset is None or dataset == "shapes" or dataset.startswith("folder:"):
        return None
    splits = {value_of(argv, "--eval-split", "test")}
    if command.module != "train.evaluate" or not {"--checkpoint", "--dictionary"} & set(argv):
        splits.add(value_of(argv, "--split", "train"))  # evaluate fits no dictionary to it when given one
    try:
        for base in sorted(map(split_base, splits)):
            load_images(dataset, f"{base}[:1]", value_of(argv, "--data-root"))
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        return f"{dataset} files are not in ../shared/data (and there is no network for --download): {error}"
    return None


class TorchSettings:
    """Torch's process-wide settings a command changes (threads, distribution checks), restored afterwards."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        self.validate = torch.distributions.Distribution._validate_args

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        torch.distributions.Distribution.set_default_validate_args(self.validate)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A train.reinforce checkpoint of two iterations on 12 x 12 shapes (its metrics beside it as tiny.json)."""
    from train import reinforce

    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    with TorchSettings():
        argv = [*tiny.REINFORCE, "--batch-size", "4", "--iterations", "2", "--minutes", "1", "--threads", "1"]
        reinforce.main([*argv, "--split", "train[:64]", "--eval-split", "test[:16]", *tiny.run_flags(folder, "tiny")])
    return folder / "ck" / "tiny" / "checkpoint.pt"


@pytest.fixture(scope="session")
def tiny_agent(tmp_path_factory) -> Path:
    """A train.sb3 PPO agent of 64 env steps on 12 x 12 shapes."""
    from train import sb3

    folder = tmp_path_factory.mktemp("tiny_agent")
    with TorchSettings():
        argv = ["--total-timesteps", "64", "--n-envs", "4", "--minutes", "1", "--image-size", "12", "--patch-size", "4"]
        argv += ["--steps", "2", "--max-shapes", "2", "--split", "train[:64]", "--eval-split", "test[:16]"]
        sb3.main([*argv, "--eval-images", "8", "--threads", "1", "--no-progress", *tiny.run_flags(folder, "tiny")])
    return folder / "ck" / "tiny" / "model.zip"


def test_the_docs_have_a_command_of_every_kind():
    modules = {command.module for command in COMMANDS}
    assert {"train.reinforce", "train.evaluate", "train.vqvae", "train.sb3"} <= modules, sorted(modules)
    assert any(module.startswith("benchmarks.") for module in modules), sorted(modules)
    assert any(command.torchrun for command in COMMANDS) and any(command.file == "README.md" for command in COMMANDS)


def test_continued_lines_are_joined_and_comments_dropped(tmp_path):
    (tmp_path / "doc.md").write_text(
        "```bash\npython -m train.vqvae --a 1 \\\n    --b '2 3'   # note\npip x && python -m pytest\n```\n"
        "```\npython -m train.cgae\n```\n```bash\ntorchrun --nnodes 2 \\\n  -m train.reinforce --env painter\n```\n"
    )
    found = [(line, *command) for line, text in bash_lines(tmp_path / "doc.md") for command in commands_in(text)]
    assert found == [
        (2, "train.vqvae", ["--a", "1", "--b", "2 3"], False),
        (4, "pytest", [], False),
        (10, "train.reinforce", ["--env", "painter"], True),
    ]


def tiny_argv(command: Command, argv: list[str], tmp_path: Path) -> list[str]:
    """The command's flags (placeholders replaced) and, after them, the flags that make its run tiny."""
    extra = list(TINY.get(command.module, []))
    if command.module in TRAINERS:
        extra += ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "runs" / "checkpoints")]
    if command.module in (*TRAINERS, "train.evaluate"):
        extra += tiny_splits(argv)
    if command.module in ("benchmarks.encoders", "benchmarks.rate_distortion"):  # not a folder of their own in /tmp
        extra += ["--workdir", str(tmp_path / "work")]
    return [*argv, *extra]


def parsed_only(command: Command, argv: list[str]) -> str | None:
    """Why the command only has its flags parsed here, or None: it runs."""
    if command.torchrun:
        return "torchrun runs are tested in tests/train/test_distributed.py"
    reason = PARSED_ONLY_MODULES.get(command.module) or PARSED_ONLY.get(command.text)
    return reason or data_missing(command, argv)


def error_lines(capsys) -> str:
    """The last lines of the captured stderr that report an error (a command's one ``error:`` line)."""
    return " ".join([line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()][-3:])


@pytest.mark.parametrize("command", COMMANDS, ids=[command.id for command in COMMANDS])
def test_documented_command_runs_at_a_tiny_size(command, request, tmp_path, monkeypatch, capsys, one_torch_thread):
    where = f"{command.id}: `{command.text}`"
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        pytest.fail(f"{where}: {error}")
    inputs = {name: request.getfixturevalue(name) for name in sorted(needs(command.argv))}
    argv = [substitute(word, inputs) for word in command.argv]
    ignored = ignored_flags(command)
    assert not ignored, f"{where}: {'; '.join(ignored)}"
    reason = parsed_only(command, argv)
    if reason is not None:
        try:
            parse_args(module.Args, "", argv)
        except SystemExit as error:
            pytest.fail(f"{where} does not parse: {error_lines(capsys) or error.code}")
        pytest.skip(f"flags parsed only: {reason}")

    monkeypatch.chdir(tmp_path)
    if "--reference" in argv:
        write_references(argv, inputs["tiny_checkpoint"].parents[2] / "tiny.json")
    with TorchSettings():
        try:
            result, code = module.main(tiny_argv(command, argv, tmp_path)), 0
        except SystemExit as error:
            result, code = None, error.code
    assert code in (0, None), f"{where} exited {code}: {error_lines(capsys)}"
    for flag in OUTPUTS:
        path = value_of(argv, flag)
        if path is not None and "--help" not in argv:
            assert (tmp_path / path).is_file(), f"{where}: {flag} {path} was not written"
    if isinstance(result, dict):  # a benchmark's jobs that failed are notes in its result, not errors
        assert not result.get("notes"), f"{where}: {result['notes']}"
