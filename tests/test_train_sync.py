"""No device-to-host read in a training step except on the steps whose values go to the loggers.

On a GPU each read (``.item()``, ``float(t)``, ``if t:``, ``.cpu()``, ...) waits for every
queued kernel. On CPU the reads are counted by wrapping those ``Tensor`` methods; each is
attributed to the training step in progress (from ``on_train_batch_start`` to the next one)
and the steps that wrote to the logger are recorded by the logger itself. Reads made inside
``torch.optim`` are left out: a non-fused optimizer keeps its step counters on the host
(no device is involved; the fused AdamW keeps them on the device). Where CUDA exists the same
run is repeated under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from lightning_tsf.models import TimeSformer
from lightning_tsf.train.callbacks import HostValuesBar, logging_step, use_host_values_bar
from lightning_tsf.train.module import VideoClassifier

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")
TORCH_OPTIM = str(Path(torch.optim.__file__).parent)
STEPS, EVERY = 9, 4


class Clips(Dataset):
    """In-memory uint8 clips with labels and decode retries, as the video dataset yields."""

    def __len__(self) -> int:
        return 2 * STEPS

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        video = torch.randint(0, 256, (3, 4, 32, 32), dtype=torch.uint8, generator=g)
        return {"video": video, "label": i % 4, "retries": i % 2}


class RecordingLogger(CSVLogger):
    """CSVLogger that notes the step of every ``log_metrics`` call made during training."""

    def __init__(self, save_dir: str, probe: ReadProbe) -> None:
        super().__init__(save_dir)
        self.probe = probe

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.probe.step is not None:
            self.probe.logged.add(self.probe.step)
        super().log_metrics(metrics, step)


class ReadProbe(pl.Callback):
    """Counts the host reads made while each training step is in progress."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.reads: Counter[int] = Counter()
        self.where: dict[int, list[str]] = {}
        self.logged: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step = batch_idx

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.step = None  # epoch-end metric compute reads values back: allowed

    def count(self, name: str) -> None:
        if self.step is None:
            return
        caller = sys._getframe(2)
        if caller.f_code.co_filename.startswith(TORCH_OPTIM):
            return
        self.reads[self.step] += 1
        self.where.setdefault(self.step, []).append(
            f"{name} from {caller.f_code.co_filename}:{caller.f_lineno}"
        )


def instrument(monkeypatch: pytest.MonkeyPatch, probe: ReadProbe) -> None:
    for name in READS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, __original=original, __name=name, **kwargs):
            probe.count(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)


def fit(tmp_path: Path, probe: ReadProbe, accelerator: str = "cpu",
        extra: list[pl.Callback] = ()) -> pl.Trainer:  # fmt: skip
    net = TimeSformer(img_size=32, patch_size=8, num_frames=4, num_classes=4, embed_dim=16,
                      depth=1, num_heads=2)  # fmt: skip
    module = VideoClassifier(net, optimizer="adamw", lr=1e-3, scheduler="cosine",
                             mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)  # fmt: skip
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=STEPS, log_every_n_steps=EVERY,
        logger=RecordingLogger(str(tmp_path), probe), gradient_clip_val=1.0,
        callbacks=[probe, LearningRateMonitor(logging_interval="step"), *extra],
        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    use_host_values_bar(trainer)  # what tsf fit's Trainer gets
    trainer.fit(module, DataLoader(Clips(), batch_size=2))
    return trainer


def test_training_steps_read_nothing_back_except_logging_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ReadProbe()
    instrument(monkeypatch, probe)
    trainer = fit(tmp_path, probe)
    monkeypatch.undo()
    assert trainer.global_step == STEPS
    # Lightning logs after steps 4 and 8 (counted from 1), then at the epoch's end
    assert probe.logged == {EVERY - 1, 2 * EVERY - 1}, probe.logged
    quiet = {step: probe.where[step] for step in probe.reads if step not in probe.logged}
    assert not quiet, f"host reads on steps that log nothing: {quiet}"
    # the probe sees reads where they are due: the logger's values are host numbers
    assert all(probe.reads[step] > 0 for step in probe.logged)
    bars = [c for c in trainer.callbacks if isinstance(c, HostValuesBar)]
    assert len(bars) == 1 and set(bars[0].host_values) == {"train/loss"}
    assert isinstance(bars[0].host_values["train/loss"], float)
    metrics = trainer.logged_metrics  # epoch-level accuracy, computed once at the epoch's end
    assert 0.0 <= float(metrics["train/acc1"]) <= float(metrics["train/acc5"]) <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_steps_do_not_synchronise_cuda(tmp_path: Path) -> None:
    """On a GPU: the same run under ``torch.cuda.set_sync_debug_mode("error")`` from the end of
    each step that logs nothing to the end of the next one (its batch transfer, normalisation,
    step and optimizer); off where values may be read back (after a logging step, its
    logging; at the epoch's end, the metrics)."""
    probe = ReadProbe()

    class SyncGuard(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            torch.cuda.set_sync_debug_mode(0)
            last = batch_idx + 1 >= min(trainer.num_training_batches, trainer.max_steps)
            if not logging_step(trainer) and not last:
                torch.cuda.set_sync_debug_mode("error")

    try:
        fit(tmp_path, probe, accelerator="gpu", extra=[SyncGuard()])
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_top_k_accuracy_counts_labels_among_the_k_highest_logits() -> None:
    """A hand-made case, and torchmetrics' micro top-k accuracy on random logits."""
    from torchmetrics.classification import MulticlassAccuracy

    from lightning_tsf.train.metrics import TopKAccuracy

    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    label = torch.tensor([1, 2, 0])  # top-1: hit, miss, miss; top-2: hit, hit, miss
    top1, top2 = TopKAccuracy(1), TopKAccuracy(2)
    top1.update(logits, label), top2.update(logits, label)
    assert float(top1.compute()) == pytest.approx(1 / 3)
    assert float(top2.compute()) == pytest.approx(2 / 3)
    g = torch.Generator().manual_seed(0)
    for k in (1, 5):
        ours, ref = TopKAccuracy(k), MulticlassAccuracy(10, top_k=k, average="micro")
        for _ in range(3):
            x, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
            ours.update(x, y), ref.update(x, y)
        assert float(ours.compute()) == pytest.approx(float(ref.compute()))
