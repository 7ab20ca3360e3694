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


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``.<name>.tmp`` next to the target, then ``os.replace``s.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp dir, so the final move can be a copy across file systems; a kill during it
    leaves a truncated ``last.ckpt``. A same-directory rename is atomic on POSIX.
    """

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
    """Saves the python/numpy/torch(/cuda) RNG states in checkpoints and restores them at the
    first training epoch start after a resume, so a resumed run draws the same random numbers
    (shuffling, augmentation, dropout) as an uninterrupted one."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {
            "python": list(random.getstate()[1]),
            "python_pos": random.getstate()[2],
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2]),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._loaded = self._loaded, None
        if state is None:
            return
        random.setstate((3, tuple(state["python"]), state["python_pos"]))
        np.random.set_state(
            ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class GlobalBatchSize(Callback):
    """Sets ``accumulate_grad_batches`` so that per-device batch × devices × accumulation reaches
    ``global_batch_size`` (the official configs: 64) on any number of GPUs and nodes."""

    def __init__(self, global_batch_size: int = 64) -> None:
        self.global_batch_size = global_batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        batch = getattr(getattr(datamodule, "hparams", {}), "get", lambda *_: None)("batch_size")
        if stage != "fit" or not batch:
            return
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
