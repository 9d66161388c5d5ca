"""The baseline trainers as a user meets them: a tiny run end to end on grey and colour images,
``--minutes`` read before every batch, bad input as one error line, Ctrl-C saves and exits 130."""

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

TRAINERS = ["train.cgae", "train.llgae", "train.vqvae"]
TINY = {  # models small enough for a run of a fraction of a second
    "train.cgae": ["--components", "2", "--prototypes", "4", "--chains", "2", "--sweeps", "1", "--eval-sweeps", "1"],
    "train.llgae": ["--components", "2", "--code-size", "3"],
    "train.vqvae": ["--grid", "2", "--dim", "4", "--codes", "4", "--hidden", "8"],
}
REPORTED = {"sse", "psnr", "bits_per_image", "images_per_second", "num_images", "wall_seconds"}


def _argv(tmp_path, module, *extra):
    data = ["--split", "train[:32]", "--eval-split", "test[:8]", "--batch-size", "8"]
    output = ["--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--run-name", "run"]
    return [*data, *output, "--metrics-json", str(tmp_path / "m.json"), *TINY[module], *extra]


def _colour_folder(tmp_path, count=12, size=8):
    folder = tmp_path / "colour"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    for index, picture in enumerate(pixels):
        Image.fromarray(picture, "RGB").save(folder / f"{index:02d}.png")
    return folder


@pytest.mark.parametrize("module", TRAINERS)
def test_a_capped_run_trains_its_epochs_and_reports_the_figures(module, tmp_path, one_torch_thread):
    argv = _argv(tmp_path, module, "--minutes", "1", "--epochs", "2")
    importlib.import_module(module).main(argv)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= REPORTED and metrics["num_images"] == 8
    assert metrics["iterations"] == 8 and metrics["epochs"] == 2  # 32 images in batches of 8, twice
    assert np.isfinite(metrics["sse"]) and metrics["bits_per_image"] > 0
    saved = torch.load(tmp_path / "ck" / "run" / "checkpoint.pt", weights_only=True)
    assert saved["state"] and "interrupted" not in saved


@pytest.mark.parametrize("module", TRAINERS)
def test_colour_images_without_a_time_limit(module, tmp_path, one_torch_thread):
    folder = _colour_folder(tmp_path)
    data = ["--dataset", f"folder:{folder}", "--image-size", "8", "--split", "all[:8]", "--eval-split", "all[8:]"]
    argv = _argv(tmp_path, module, *data, "--minutes", "0", "--epochs", "1")
    importlib.import_module(module).main(argv)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_images"] == 4 and metrics["iterations"] == 1
    # PSNR = 10 log10(values per image / SSE): the figures were taken over all three channels
    assert round(metrics["sse"] * 10 ** (metrics["psnr"] / 10)) == 3 * 8 * 8


@pytest.mark.parametrize("module", TRAINERS)
def test_the_time_limit_is_read_before_every_batch(module, tmp_path, one_torch_thread):
    argv = _argv(tmp_path, module, "--split", "train[:2000]", "--batch-size", "1", "--minutes", "0.002")
    importlib.import_module(module).main(argv)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["epochs"] < 0.5 and metrics["wall_seconds"] < 5  # stopped in the first pass, not after it


def test_a_codebook_larger_than_a_batch_starts_from_more_images(tmp_path, one_torch_thread):
    """k-means++ needs a code vector per code: 64 codes, and a batch of 8 images of a 2x2 grid gives 32."""
    train_vqvae = importlib.import_module("train.vqvae")
    train_vqvae.main(_argv(tmp_path, "train.vqvae", "--codes", "64", "--minutes", "1", "--epochs", "1"))
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["bits_per_image"] == 4 * 6 and np.isfinite(metrics["sse"])


BAD_FLAGS = [
    ("train.cgae", ["--components", "0"], "--components"),
    ("train.cgae", ["--patch-size", "0"], "--patch-size"),
    ("train.cgae", ["--beta-end", "0"], "--beta-end"),
    ("train.llgae", ["--components", "0"], "--components"),
    ("train.llgae", ["--beta", "0"], "--beta"),
    ("train.llgae", ["--components", "33"], "--components"),  # more components than the 32 images
    ("train.vqvae", ["--grid", "0"], "--grid"),
    ("train.vqvae", ["--grid", "8"], "--grid"),  # 28-pixel images hold a grid of at most 7
    ("train.vqvae", ["--codes", "1"], "--codes"),
    ("train.vqvae", ["--codes", "200"], "code vectors"),  # 32 images of a 2x2 grid give 128
    *((module, ["--batch-size", "0"], "--batch-size") for module in TRAINERS),
    *((module, ["--lr", "-1"], "--lr") for module in TRAINERS),
    *((module, ["--epochs", "-1"], "--epochs") for module in TRAINERS),
    *((module, ["--minutes", "0"], "--epochs") for module in TRAINERS),  # no time limit and no cap
    *((module, ["--dataset", "cifar"], "unknown dataset 'cifar'") for module in TRAINERS),
    *((module, ["--eval-split", "test[9999:10]"], "is empty") for module in TRAINERS),
]


@pytest.mark.parametrize(
    ("module", "flags", "message"), BAD_FLAGS, ids=[f"{module[6:]} {' '.join(flags)}" for module, flags, _ in BAD_FLAGS]
)
def test_bad_input_is_one_error_line_with_status_2(module, flags, message, tmp_path, capsys, one_torch_thread):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(_argv(tmp_path, module, *flags))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1
    assert error[0].startswith("error:") and message in error[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("module", TRAINERS)
def test_ctrl_c_saves_the_model_and_exits_130(module, tmp_path, monkeypatch, one_torch_thread):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.Tensor, "backward", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(_argv(tmp_path, module))
    assert exit_info.value.code == 130
    saved = torch.load(tmp_path / "ck" / "run" / "checkpoint.pt", weights_only=True)
    assert saved["interrupted"] is True and saved["state"]
