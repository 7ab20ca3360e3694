"""The batch plan decided once, before anything is built, and written into the config; the
warning for a training split smaller than one global batch; the Trainer state the data reads,
in its one helper; the CLI leaves ``sys.argv`` alone."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from pytorch_lightning.demos.boring_classes import BoringModel

from lightning_tsf.commands.lightning import cli_main, configured_world_size
from lightning_tsf.configs import config_path
from lightning_tsf.data.trainer_state import batches_done_this_epoch
from lightning_tsf.train.callbacks import small_dataset_warning, steps_per_epoch

DEMO = config_path()


@pytest.mark.parametrize(
    "trainer, expected",
    [
        ({"devices": 2, "num_nodes": 3}, 6),
        ({"devices": "0,1,3", "num_nodes": 2}, 6),
        ({"devices": [0, 1]}, 2),
        ({"devices": "4"}, 4),
        ({"devices": "auto", "accelerator": "cpu", "num_nodes": 2}, 2),  # CPU auto: 1 device
    ],
)
def test_configured_world_size(trainer: dict, expected: int) -> None:
    assert configured_world_size(trainer) == expected


def test_steps_and_warning_by_hand() -> None:
    # 6 clips, global 64 = 8 x 1 x 8: one batch of 6 per epoch, stepped once
    assert steps_per_epoch(6, 8, 1, 8) == 1
    # 100 clips on 2 ranks of 8, accumulate 2: 50 per rank -> 6 whole batches -> 3 steps
    assert steps_per_epoch(100, 8, 2, 2) == 3
    text = small_dataset_warning(6, 8, 1, 8)
    assert "6 clips, fewer than one global batch of 64 (8 per device x 1 devices x 8 " in text
    assert "1 optimizer step(s) per epoch" in text and "global_batch_size" in text


def test_plan_in_the_saved_config_and_small_split_warned(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, monkeypatch
) -> None:
    """Global 64 over 16 training clips: the plan (8 per device x 1 x 8 accumulated) is in
    ``config.yaml``; a warning gives the numbers; ``sys.argv`` is not rewritten."""
    config = tmp_path / "big.yaml"
    config.write_text(DEMO.read_text().replace("global_batch_size: 16", "global_batch_size: 64"))
    assert "global_batch_size: 64" in config.read_text()
    argv = ["pytest", "something-else"]
    monkeypatch.setattr(sys, "argv", argv)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="16 clips, fewer than one global batch of 64") as got:
        assert cli_main(["fit", "--config", str(config), *tiny_overrides(run),
                         "--data.batch_size=8", "--trainer.max_epochs=1",
                         "--trainer.limit_val_batches=0"]) == 0  # fmt: skip
    assert any("1 optimizer step(s) per epoch" in str(w.message) for w in got)
    assert sys.argv is argv and sys.argv == ["pytest", "something-else"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["batch_size"] == 8 and saved["trainer"]["accumulate_grad_batches"] == 8
    assert saved["model"]["lr_scale"] == 1.0 and saved["data"]["loader"]["seed"] == 0


def test_batches_done_this_epoch_reads_the_running_trainer() -> None:
    seen: list[int] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:  # batch k: k done before it
            seen.append(batches_done_this_epoch(trainer))

    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0,
                         callbacks=[Record()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(BoringModel())
    assert seen == [0, 1, 2, 0, 1, 2] and batches_done_this_epoch(None) == 0
