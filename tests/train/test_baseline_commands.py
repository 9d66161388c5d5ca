"""The baseline trainers as a user meets them: bad input is one error line, Ctrl-C saves and exits 130."""

import importlib

import pytest
import torch

TRAINERS = ["train.cgae", "train.llgae", "train.vqvae"]


def _argv(tmp_path, data_root, *extra):
    return ["--data-root", str(data_root), "--split", "test[:64]", "--eval-split", "test[64:80]",
            "--logdir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--run-name", "run",
            *extra]  # fmt: skip


@pytest.mark.parametrize("module", TRAINERS)
@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--dataset", "cifar"], "unknown dataset 'cifar'"), (["--eval-split", "test[9999:10]"], "split")],
    ids=["unknown-dataset", "empty-eval-split"],
)
def test_bad_input_is_one_error_line_with_status_2(module, flags, message, tmp_path, capsys, mnist_root):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(_argv(tmp_path, mnist_root, *flags))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and error[-1].startswith("error:") and message in error[-1]
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("module", TRAINERS)
def test_ctrl_c_saves_the_model_and_exits_130(module, tmp_path, monkeypatch, mnist_root):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.Tensor, "backward", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(_argv(tmp_path, mnist_root))
    assert exit_info.value.code == 130
    saved = torch.load(tmp_path / "ck" / "run" / "checkpoint.pt", weights_only=True)
    assert saved["interrupted"] is True and saved["state"]
