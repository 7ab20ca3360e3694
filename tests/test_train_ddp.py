"""Multi-view test under real DDP (2 CPU processes, gloo, ``ddp_fork``): every video counted
once, video-level accuracy equal to the single-process result on the same data."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_tsf.commands.lightning import TSFCLI, cli_main

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_ddp_multiview_test_matches_single_process(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["tsf"])
    args = [
        "--config",
        str(SMOKE),
        *tiny_overrides(tmp_path),
        "--data.clips.num_spatial_crops=3",  # 7 videos x 3 views: rank 0 gets 3 videos, rank 1 4
        "--trainer.limit_test_batches=1.0",
        "--trainer.enable_progress_bar=false",
    ]
    assert (
        cli_main(["fit", *args, "--trainer.max_epochs=2", "--trainer.limit_train_batches=8"]) == 0
    )
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")

    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_fork")):
        cli = TSFCLI(
            args=[*args, f"--trainer.devices={devices}", f"--trainer.strategy={strategy}"],
            run=False,
        )
        (results[devices],) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
        assert cli.trainer.world_size == devices
    assert results[1]["test/videos"] == results[2]["test/videos"] == 7
    assert results[2]["test/acc1"] == pytest.approx(results[1]["test/acc1"], abs=1e-6)
    assert results[2]["test/acc5"] == pytest.approx(results[1]["test/acc5"], abs=1e-6)
