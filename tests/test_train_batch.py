"""An exact global batch: per-device batch x devices x accumulation = global, checked by hand
and with 2 real DDP processes (gloo, ``ddp_fork``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightning_tsf.commands.lightning import cli_main
from lightning_tsf.train.callbacks import BatchSplitError, GlobalBatchSize, split_global_batch

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


@pytest.mark.parametrize(
    "devices, max_batch, expected",
    [(1, 8, (8, 8)), (2, 64, (32, 1)), (4, 8, (8, 2)), (8, 8, (8, 1)), (16, 8, (4, 1)),
     (3, 8, None), (6, 8, None), (128, 8, None)],
)  # fmt: skip
def test_split_of_64(devices: int, max_batch: int, expected) -> None:
    got = split_global_batch(64, devices, max_batch)
    assert got == expected
    if got:
        assert got[0] * devices * got[1] == 64 and got[0] <= max_batch


def test_impossible_split_lists_workable_counts_or_scales_lr() -> None:
    with pytest.raises(BatchSplitError, match="over 3 devices") as err:
        GlobalBatchSize(64).plan(3, 8)
    assert "Workable device counts: 1, 2, 4, 8, 16, 32, 64;" in str(err.value)
    assert "scale_lr" in str(err.value)
    batch, accumulate, lr_scale = GlobalBatchSize(64, scale_lr=True).plan(3, 8)
    assert (batch, accumulate) == (8, 3) and lr_scale == pytest.approx(72 / 64)


@pytest.fixture
def smoke_args(tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tsf"])
    return ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"),
            "--trainer.limit_train_batches=1.0", "--trainer.enable_progress_bar=false",
            "--trainer.strategy=ddp_fork", "--trainer.devices=2"]  # fmt: skip


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_two_processes_do_not_overshoot(smoke_args: list[str], tmp_path: Path) -> None:
    """Global 4 with batch 4 on 2 processes: 2 per device, no accumulation, so one epoch of
    16 videos is 4 optimizer steps of 4 videos (the old callback made 2 steps of 8)."""
    assert cli_main(["fit", *smoke_args, "--trainer.max_epochs=1"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_two_processes_impossible_split_stops_first(
    smoke_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Global 3 on 2 processes has no exact split: exit 2 before any process starts."""
    config = tmp_path / "odd.yaml"
    config.write_text(SMOKE.read_text().replace("global_batch_size: 4", "global_batch_size: 3"))
    args = [a if a != str(SMOKE) else str(config) for a in smoke_args]
    assert cli_main(["fit", *args]) == 2
    err = capsys.readouterr().err
    assert "global batch 3 cannot be split exactly over 2 devices" in err
    assert "Workable device counts: 1, 3" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()
