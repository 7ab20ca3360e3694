"""Callbacks for real runs: atomic checkpoints, exact resume (RNG), global batch, predictions,
a progress bar that never waits for the device."""

from __future__ import annotations

import json
import math
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    BasePredictionWriter,
    Callback,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

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
            if path.name == f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}":
                remove_stale_hpc(Path(trainer.default_root_dir), path)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


def hpc_checkpoints(root: Path) -> list[Path]:
    """The SLURM pre-emption checkpoints Lightning wrote into a run folder."""
    return sorted(root.glob("hpc_ckpt_*.ckpt"))


def remove_stale_hpc(root: Path, last: Path) -> None:
    """After ``last`` was saved, the run's older hpc checkpoints can only mislead a resume."""
    for hpc in hpc_checkpoints(root):
        if hpc.stat().st_mtime <= last.stat().st_mtime:
            hpc.unlink(missing_ok=True)


def is_complete(path: Path) -> bool:
    """Whether a checkpoint file is whole: torch writes a zip whose directory comes last, so a
    cut-off file has none (a cheap check, nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint a restarted run should resume from: the newest complete one of the
    run's SLURM pre-emption checkpoints (``<root>/hpc_ckpt_*.ckpt``) and
    ``<root>/checkpoints/last.ckpt``; None for a fresh start."""
    root = Path(root)
    candidates = [*hpc_checkpoints(root), root / "checkpoints" / "last.ckpt"]
    found = [p for p in candidates if p.is_file() and is_complete(p)]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


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


class BatchSplitError(ValueError):
    """No per-device batch and accumulation give the configured global batch exactly."""


def split_global_batch(global_batch: int, devices: int, max_batch: int) -> tuple[int, int] | None:
    """``(per-device batch, accumulation)`` with ``batch x devices x accumulation =
    global_batch`` exactly and the largest batch not above ``max_batch``; None if none exists."""
    for batch in range(min(max_batch, global_batch // max(1, devices)), 0, -1):
        if global_batch % (batch * devices) == 0:
            return batch, global_batch // (batch * devices)
    return None


class GlobalBatchSize(Callback):
    """Trains at exactly ``global_batch_size`` clips per optimizer step (the official configs:
    64) on any number of devices and nodes: the per-device batch (at most the configured one)
    and ``accumulate_grad_batches`` are chosen so that per-device × devices × accumulation =
    global. Where no such split exists (64 on 3 GPUs) training stops before it starts with
    the workable device counts, unless ``scale_lr``: then the configured per-device batch is
    kept, the global batch is the nearest multiple of it, and the learning rate is scaled by
    effective / configured global batch (logged)."""

    def __init__(self, global_batch_size: int = 64, scale_lr: bool = False) -> None:
        self.global_batch_size = global_batch_size
        self.scale_lr = scale_lr

    def plan(self, devices: int, max_batch: int) -> tuple[int, int, float]:
        """``(per-device batch, accumulation, lr scale)`` for ``devices`` processes whose
        configured batch is ``max_batch``; raises :class:`BatchSplitError` if impossible."""
        target = self.global_batch_size
        split = split_global_batch(target, devices, max_batch)
        if split is not None:
            return split[0], split[1], 1.0
        if not self.scale_lr:
            raise BatchSplitError(self._impossible(devices, max_batch))
        accumulate = max(1, round(target / (max_batch * devices)))
        return max_batch, accumulate, max_batch * devices * accumulate / target

    def check(self, devices: int, batch: int, accumulate: int) -> None:
        """Raise :class:`BatchSplitError` when the run does not have the planned global batch
        (the plan was made for another number of devices than the Trainer has)."""
        effective = batch * devices * accumulate
        if effective != self.global_batch_size and not self.scale_lr:
            raise BatchSplitError(
                f"global batch {effective} = {batch} per device x {devices} devices x "
                f"{accumulate} accumulated, not the configured {self.global_batch_size}: the "
                "batch plan was made for another device count; give trainer.devices and "
                "trainer.num_nodes as numbers"
            )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Say (and log) the plan the run has; warn when one global batch is more than the
        training split holds. The plan itself is made before the Trainer exists (``tsf fit``
        writes it into the config: ``data.batch_size``, ``trainer.accumulate_grad_batches``,
        ``model.lr_scale``); nothing is changed here."""
        if stage != "fit" or not isinstance(trainer.datamodule, VideoDataModule):
            return
        datamodule, devices = trainer.datamodule, trainer.world_size
        batch, accumulate = datamodule.batch_size, trainer.accumulate_grad_batches
        self.check(devices, batch, accumulate)
        lr_scale = float(getattr(pl_module, "hparams", {}).get("lr_scale", 1.0))
        effective = batch * devices * accumulate
        summary = {"global_batch": effective, "per_device_batch": batch, "devices": devices,
                   "accumulate_grad_batches": accumulate, "lr_scale": lr_scale}  # fmt: skip
        rank_zero_info(
            f"global batch {effective} = {batch} per device x {devices} devices x {accumulate} "
            f"accumulated (configured {self.global_batch_size}"
            + (f"; lr scaled by {lr_scale:.4g})" if lr_scale != 1.0 else ")")
        )
        clips = datamodule.num_videos("train")
        if clips < effective:
            rank_zero_warn(small_dataset_warning(clips, batch, devices, accumulate))
        for logger in trainer.loggers:
            logger.log_hyperparams({"batch": summary})

    def _impossible(self, devices: int, max_batch: int) -> str:
        target = self.global_batch_size
        counts = [d for d in range(1, target + 1) if split_global_batch(target, d, max_batch)]
        return (
            f"global batch {target} cannot be split exactly over {devices} devices with a "
            f"per-device batch of at most {max_batch} (batch x devices x accumulation = "
            f"{target}). Workable device counts: {', '.join(map(str, counts[:12]))}"
            f"{', ...' if len(counts) > 12 else ''}; or set GlobalBatchSize scale_lr: true to "
            f"train at the nearest global batch with the learning rate scaled linearly."
        )


def steps_per_epoch(clips: int, batch: int, devices: int, accumulate: int) -> int:
    """Optimizer steps in one epoch of ``clips`` training clips (each rank its share, the last
    batch dropped only when a rank has a whole one, a partial accumulation stepped)."""
    per_rank = math.ceil(clips / devices)
    batches = per_rank // batch if per_rank >= batch else 1
    return max(1, math.ceil(batches / accumulate))


def small_dataset_warning(clips: int, batch: int, devices: int, accumulate: int) -> str:
    """The warning for a training split smaller than one global batch, with the numbers and
    what to change."""
    effective = batch * devices * accumulate
    steps = steps_per_epoch(clips, batch, devices, accumulate)
    return (
        f"the training split has {clips} clips, fewer than one global batch of {effective} "
        f"({batch} per device x {devices} devices x {accumulate} accumulated): {steps} optimizer "
        f"step(s) per epoch on {clips} clips. Lower GlobalBatchSize's global_batch_size (and "
        "model.lr with it), or train on more videos."
    )


class PredictionWriter(BasePredictionWriter):
    """Appends ``predict_step`` outputs (one JSON object per video: the prediction record of
    :class:`~lightning_tsf.inference.Prediction` with its ``video_index``, or ``path`` and
    ``error``) to ``output`` (default ``<log dir>/predictions.jsonl``; under DDP each rank
    writes its own, ``predictions.rank<R>.jsonl``)."""

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


class EpochPrinter(Callback):
    """One line per epoch (``val/acc1``, ``train/loss``, elapsed time) on stdout, printed
    through the progress bar (above it, not inside it) when there is one."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        line = (f"[epoch {trainer.current_epoch:2d}] val top-1 "
                f"{100 * m.get('val/acc1', 0):5.1f}%  train loss "
                f"{m.get('train/loss', float('nan')):.3f}  "
                f"{time.perf_counter() - self.start:5.0f}s")  # fmt: skip
        bar = trainer.progress_bar_callback
        if bar is not None and bar.is_enabled:
            bar.print(line)
        else:
            print(line, flush=True)


# ---------------------------------------------------------------- progress bar
STEP_VALUES = ("train/loss",)  # logged every step; shown as of the last logging step


def logging_step(trainer: pl.Trainer) -> bool:
    """Whether this training step's values go to the loggers (``log_every_n_steps``, counted
    in optimizer steps, as Lightning decides it: read after the step, before it logs)."""
    if trainer.fit_loop._should_accumulate():
        return False
    return trainer._logger_connector.should_update_logs


class HostValuesBar:
    """Mixin for Lightning's progress bars: the step values (:data:`STEP_VALUES`) are shown as
    host numbers copied on the steps whose values go to the loggers, where Lightning reads
    them back anyway, so the bar adds no device-to-host copy (a stall of the launch queue on
    a GPU) to the other steps. Epoch values (validation accuracy) come as Lightning has them."""

    def _copy_values(self, trainer: pl.Trainer) -> None:
        metrics = trainer.callback_metrics
        self.host_values = {k: float(metrics[k]) for k in STEP_VALUES if k in metrics}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        if logging_step(trainer):
            self._copy_values(trainer)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # type: ignore[misc]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy_values(trainer)  # the epoch's last step, once per epoch
        super().on_train_epoch_end(trainer, pl_module)  # type: ignore[misc]

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        return {**items, **getattr(self, "host_values", {})}


class TQDMHostBar(HostValuesBar, TQDMProgressBar):
    """:class:`TQDMProgressBar` showing host step values (:class:`HostValuesBar`)."""


class RichHostBar(HostValuesBar, RichProgressBar):
    """:class:`RichProgressBar` showing host step values (:class:`HostValuesBar`)."""


def host_values_bar() -> ProgressBar:
    """The bar Lightning would pick by default (rich when installed), host-values kind."""
    return RichHostBar() if _RICH_AVAILABLE else TQDMHostBar()


def use_host_values_bar(trainer: pl.Trainer) -> None:
    """Swap the trainer's progress bar, when it is one of Lightning's two plain kinds (its
    default, or one a config names), for the host-values kind with the same settings; a bar
    of another class is left alone."""
    kinds = {TQDMProgressBar: TQDMHostBar, RichProgressBar: RichHostBar}
    for i, callback in enumerate(trainer.callbacks):
        host = kinds.get(type(callback))
        if host is not None:
            converted = host.__new__(host)  # same state: the bar has not started yet
            converted.__dict__.update(callback.__dict__)
            trainer.callbacks[i] = converted
