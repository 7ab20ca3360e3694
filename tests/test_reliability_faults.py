"""Faults, for real: SIGKILL at random points (inside a training step, during validation,
while a checkpoint is being written), a resume after each, and the final weights equal to an
uninterrupted run bit for bit; a dataset with 20% broken files of every kind."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import BROKEN_KINDS, write_broken

from lightning_tsf.train.callbacks import is_complete

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"
KILLER = """
import os, random, signal, sys, threading, time, torch
from pytorch_lightning import Callback
from lightning_tsf.commands.lightning import TSFCLI
from lightning_tsf.train.callbacks import latest_checkpoint

kind, epoch, batch, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Kill(Callback):
    def on_train_batch_start(self, trainer, module, b, batch_idx):
        if kind == "step" and trainer.current_epoch == epoch and batch_idx == batch:
            threading.Timer(delay, die).start()  # lands inside the forward/backward
    def on_validation_batch_end(self, trainer, module, outputs, b, batch_idx, *rest):
        if kind == "val" and trainer.current_epoch == epoch and batch_idx == batch:
            die()
    def on_save_checkpoint(self, trainer, module, checkpoint):
        if kind == "ckpt" and trainer.current_epoch == epoch:
            threading.Timer(delay, die).start()  # lands while the file is written

cli = TSFCLI(args=sys.argv[5:], run=False)
cli.trainer.callbacks.append(Kill())
resume = latest_checkpoint(cli.trainer.default_root_dir)  # what --ckpt_path=latest picks
cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
"""


def _args(overrides: list[str]) -> list[str]:
    return ["--config", str(SMOKE), *overrides, "--trainer.max_epochs=4",
            "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
            "--trainer.deterministic=true", "--trainer.enable_progress_bar=false",
            "--model.mixup_alpha=0.4", "--model.net.init_args.drop_path_rate=0.2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(1200)  # eight training runs: far over the 300 s default
def test_sigkill_soak(tiny_overrides: Callable[[Path], list[str]], tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    plain = [sys.executable, "-m", "lightning_tsf.cli", "fit"]
    ref = subprocess.run([*plain, *_args(tiny_overrides(ref_dir))], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]

    rng = random.Random(7)
    points = [("step", 0, rng.randrange(4), rng.uniform(0, 0.02)),
              ("ckpt", 1, 0, rng.uniform(0, 0.05)),
              ("val", 1, rng.randrange(2), 0.0),
              ("step", 2, rng.randrange(4), rng.uniform(0, 0.02)),
              ("ckpt", 2, 0, rng.uniform(0, 0.05)),
              ("step", 3, rng.randrange(4), rng.uniform(0, 0.02))]  # fmt: skip
    args = _args(tiny_overrides(run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    kills = 0
    for kind, epoch, batch, delay in points:
        point = [kind, str(epoch), str(batch), str(delay)]
        proc = subprocess.run([sys.executable, "-c", KILLER, *point, *args],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        if proc.returncode == -9:
            kills += 1
        else:  # a kill timed after the end of the run lets it finish
            assert proc.returncode == 0, proc.stderr[-3000:]
        if last.exists():  # never a partial or corrupt last.ckpt
            assert is_complete(last)
            torch.load(last, weights_only=True)
    assert kills >= 5
    final = subprocess.run([*plain, *args, "--ckpt_path=latest"], capture_output=True,
                           text=True, env=env, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    got = torch.load(last, weights_only=True)
    expected = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (got["epoch"], got["global_step"]) == (expected["epoch"], expected["global_step"])
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key


def test_a_fifth_of_the_files_broken(tiny_synthetic: Path, tiny_overrides, tmp_path: Path) -> None:
    """Every kind of broken file in every split: training completes, each broken file is
    reported by path, evaluation states evaluated/total."""
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    broken = []
    for split in ("train", "val", "test"):
        rels = [line.rsplit(" ", 1)[0] for line in (data / f"{split}.csv").read_text().split("\n")
                if line]  # fmt: skip
        for i, rel in enumerate(rels[: max(1, len(rels) // 5)]):
            kind = BROKEN_KINDS[(len(broken) + i) % len(BROKEN_KINDS)]
            (data / rel).unlink()
            write_broken(data / rel, kind)
            broken.append(str(data / rel))
    assert {Path(p).name for p in broken} and len(broken) == 3 + 1 + 1
    code = """
import sys
from lightning_tsf.commands.lightning import TSFCLI
cli = TSFCLI(args=sys.argv[1:], run=False)
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
print("SUMMARY", cli.model.test_results["summary"])
"""
    args = ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"), f"--data.data_root={data}",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=1.0",
            "--trainer.limit_val_batches=1.0", "--trainer.limit_test_batches=1.0",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    for path in broken:
        assert f"cannot decode {path}: " in log, path
    (summary,) = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY")]
    assert "evaluated 6/7 videos; 1 unreadable: " in summary
