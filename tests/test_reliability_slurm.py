"""SLURM pre-emption simulated on one machine with real processes: SLURM's environment
variables, a stand-in ``scontrol`` on PATH, a real SIGUSR1 mid-epoch, a requeued restart with
``--ckpt_path=latest``. And the checkpoint choice: own run only, newest complete file, stale
hpc files removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightning_tsf.train.callbacks import latest_checkpoint

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"
PREEMPTED = """
import os, signal, sys, time, torch
torch.set_num_threads(1)
from pytorch_lightning import Callback
from lightning_tsf.commands.lightning import TSFCLI

class Preempt(Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:  # mid-epoch, after an optimizer step
            os.kill(os.getpid(), signal.SIGUSR1)  # SLURM: 90 s to go
            time.sleep(0.5)
            os._exit(0)  # SLURM ends the job; scontrol has requeued it

cli = TSFCLI(args=sys.argv[1:], run=False)
cli.trainer.callbacks.append(Preempt())
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
"""


def _args(overrides: list[str]) -> list[str]:
    return ["--config", str(SMOKE), *overrides, "--trainer.max_epochs=3",
            "--trainer.limit_train_batches=4", "--trainer.deterministic=true",
            "--trainer.enable_progress_bar=false", "--model.mixup_alpha=0.4",
            "--model.net.init_args.drop_path_rate=0.2"]  # fmt: skip


def _slurm_env(tmp_path: Path, restart: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", WANDB_MODE="offline", OMP_NUM_THREADS="1",
               SLURM_JOB_ID="4242",
               SLURM_JOB_NAME="timesformer", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
               SLURM_NNODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_NODELIST="localhost", SLURM_RESTART_COUNT=str(restart))  # fmt: skip
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_sigusr1_requeue_and_resume(tiny_overrides: Callable[[Path], list[str]],
                                    tmp_path: Path) -> None:  # fmt: skip
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "preempted"
    ref = subprocess.run([sys.executable, "-m", "lightning_tsf.cli", "fit",
                          *_args(tiny_overrides(ref_dir))], capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
                         timeout=300)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]

    args = _args(tiny_overrides(run_dir))
    first = subprocess.run([sys.executable, "-c", PREEMPTED, *args], capture_output=True,
                           text=True, env=_slurm_env(tmp_path, 0), timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    hpc = list(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1 and torch.load(hpc[0], weights_only=True)["global_step"] == 3
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert latest_checkpoint(run_dir) == hpc[0]  # newer than last.ckpt of epoch 0

    again = subprocess.run([sys.executable, "-m", "lightning_tsf.cli", "fit", *args,
                            "--ckpt_path=latest"], capture_output=True, text=True,
                           env=_slurm_env(tmp_path, 1), timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {hpc[0]}" in again.stderr
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # stale after the next last.ckpt
    got, expected = _weights(run_dir / "checkpoints" / "last.ckpt"), _weights(
        ref_dir / "checkpoints" / "last.ckpt"
    )
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_latest_checkpoint_choice(tmp_path: Path) -> None:
    """Only this run's files; the newest complete one; a cut-off file is never chosen."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert latest_checkpoint(run) is None
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 4}, last)
    other = tmp_path / "other_run" / "hpc_ckpt_9.ckpt"  # another run's file
    other.parent.mkdir()
    torch.save({"global_step": 99}, other)
    assert latest_checkpoint(run) == last
    time.sleep(0.01)
    hpc = run / "hpc_ckpt_1.ckpt"
    torch.save({"global_step": 6}, hpc)
    assert latest_checkpoint(run) == hpc
    data = hpc.read_bytes()
    hpc.write_bytes(data[: len(data) // 2])  # killed while writing
    assert latest_checkpoint(run) == last
