"""Resume: a run killed mid-epoch (``os._exit`` in a subprocess) and resumed with
``--ckpt_path last`` ends with exactly the weights and optimizer state of an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from lightning_tsf.commands.lightning import cli_main

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"
KILLER = """
import os, sys, torch
torch.set_num_threads(1)
from pytorch_lightning import Callback
from lightning_tsf.commands.lightning import TSFCLI

class Kill(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and trainer.global_step >= 3:
            os._exit(17)  # no cleanup, like a pre-empted job

cli = TSFCLI(args=sys.argv[1:], run=False)
cli.trainer.callbacks.append(Kill())
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
"""


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Same thread count as the subprocess, so CPU kernels reduce in the same order."""
    monkeypatch.setattr(sys, "argv", ["tsf"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(overrides: list[str]) -> list[str]:
    return [
        "--config",
        str(SMOKE),
        *overrides,
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=4",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--model.mixup_alpha=0.4",  # random draws in the training step
        "--model.net.init_args.drop_path_rate=0.2",
        "--model.net.init_args.drop_rate=0.1",
    ]


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_killed_run_resumes_exactly(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, one_thread: None
) -> None:
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    assert cli_main(["fit", *_args(tiny_overrides(ref_dir))]) == 0

    args = _args(tiny_overrides(run_dir))
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 17, proc.stderr[-3000:]
    ckpt_dir = run_dir / "checkpoints"
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list(ckpt_dir.glob(".*.tmp"))

    assert cli_main(["fit", *args, "--ckpt_path=last"]) == 0
    ref = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert (got["epoch"], got["global_step"]) == (ref["epoch"], ref["global_step"]) == (2, 6)
    for key, value in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    for a, b in zip(
        ref["optimizer_states"][0]["state"].values(), got["optimizer_states"][0]["state"].values()
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert got["lr_schedulers"] == ref["lr_schedulers"]
