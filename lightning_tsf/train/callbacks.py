"""Callbacks for real runs: atomic checkpoints, exact resume (RNG), global batch, predictions."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

from lightning_tsf.data.datamodule import VideoDataModule


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``.<name>.tmp`` next to the target, then ``os.replace``s.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp dir, so the final move can be a copy across file systems; a kill during it
    leaves a truncated ``last.ckpt``. A same-directory rename is atomic on POSIX.

    Lightning 2.6 also writes ``last.ckpt`` only when a top-k checkpoint was written at that
    step; a resumable run needs it after every epoch, so it is written then in any case.
    """

    def _save_last_always(self, trainer: pl.Trainer, at_train_epoch_end: bool) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        if self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_always(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_always(trainer, at_train_epoch_end=False)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        path = Path(filepath)
        tmp = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class RNGStateCallback(Callback):
    """Saves the python/numpy/torch(/cuda) RNG states in checkpoints and restores them on
    resume, so a resumed run draws the same random numbers (shuffling, augmentation, mixup,
    dropout) as an uninterrupted one.

    The states are taken when the checkpoint is written (end of an epoch, after validation) and
    set back while the trainer restores the checkpoint, after which nothing random happens
    before the next epoch's first batch (Lightning skips the sanity check when restarting).
    """

    def state_dict(self) -> dict[str, Any]:
        version, py_state, gauss = random.getstate()
        _, np_state, np_pos, _, _ = np.random.get_state()
        state = {
            "python": list(py_state),
            "python_version": version,
            "numpy": torch.from_numpy(np_state.astype(np.int64)),
            "numpy_pos": int(np_pos),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict
        random.setstate((state["python_version"], tuple(state["python"]), None))
        np_state = state["numpy"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", np_state, state["numpy_pos"], 0, 0.0))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class GlobalBatchSize(Callback):
    """Sets ``accumulate_grad_batches`` so that per-device batch × devices × accumulation reaches
    ``global_batch_size`` (the official configs: 64) on any number of GPUs and nodes."""

    def __init__(self, global_batch_size: int = 64) -> None:
        self.global_batch_size = global_batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not isinstance(trainer.datamodule, VideoDataModule):
            return
        batch = trainer.datamodule.batch_size
        per_step = batch * trainer.world_size
        accumulate = max(1, math.ceil(self.global_batch_size / per_step))
        trainer.accumulate_grad_batches = accumulate
        rank_zero_info(
            f"global batch {per_step * accumulate} = {batch} per device x {trainer.world_size} "
            f"devices x {accumulate} accumulated (target {self.global_batch_size})"
        )


class PredictionWriter(BasePredictionWriter):
    """Appends ``predict_step`` outputs (one JSON object per video) to ``output``
    (default ``<log dir>/predictions.rank<R>.jsonl``)."""

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output

    def _path(self, trainer: pl.Trainer) -> Path:
        root = Path(self.output or Path(trainer.log_dir or ".") / "predictions.jsonl")
        if trainer.world_size > 1:
            root = root.with_suffix(f".rank{trainer.global_rank}.jsonl")
        return root

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        rank_zero_info(f"writing predictions to {path}")

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        with self._path(trainer).open("a") as f:
            for item in prediction:
                f.write(json.dumps(item) + "\n")
