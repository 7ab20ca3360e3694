"""Dashboard callbacks with the real Trainer, VideoClassifier and VideoDataModule: W&B offline
(images, table with videos in the run directory) and a CSV logger (files under the log dir)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import data_module
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lightning_tsf.data import make_synthetic_dataset
from lightning_tsf.models import TimeSformer
from lightning_tsf.train.module import VideoClassifier
from lightning_tsf.viz.callbacks import (
    AttentionHeatmapCallback,
    ConfusionMatrixCallback,
    PredictionTableCallback,
    TSNECallback,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_train=4, num_val=6,
                                  num_test=2, size=32, num_frames=8)  # fmt: skip


def _fit(root: Path, logger, tmp_path: Path, epochs: int = 1) -> pl.Trainer:
    pl.seed_everything(0)
    dm = data_module(str(root), num_frames=4, sampling_rate=2, crop_size=32,
                         train_scale=(32, 36), num_spatial_crops=1, batch_size=3,
                         num_workers=0)  # fmt: skip
    net = TimeSformer(img_size=32, patch_size=8, num_frames=4, num_classes=dm.num_classes,
                      embed_dim=32, depth=2, num_heads=2)  # fmt: skip
    model = VideoClassifier(net, lr=0.01, class_names=dm.class_names)
    callbacks = [AttentionHeatmapCallback(num_videos=2), TSNECallback(), ConfusionMatrixCallback(),
                 PredictionTableCallback(num_videos=4)]  # fmt: skip
    trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=1, num_sanity_val_steps=1,
                         logger=logger, callbacks=callbacks, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return trainer


def test_wandb_offline_run_has_images_and_table(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # artifact staging
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    logger = WandbLogger(project="tsf-test", save_dir=str(tmp_path), offline=True)
    _fit(data_root, logger, tmp_path)
    run_dir = Path(logger.experiment.dir).parent  # .../wandb/offline-run-*/
    logger.experiment.finish()
    images = run_dir / "files" / "media" / "images"
    names = sorted(p.name for p in images.rglob("*.png"))
    for key in ("heatmaps", "tsne", "confusion_matrix"):
        found = [n for n in names if n.startswith(key)]
        assert len(found) == 1, (key, names)  # once: the sanity check logs nothing
    heat = next(images.rglob("heatmaps*.png"))
    width, height = Image.open(heat).size  # 2 videos x (frames, overlay), 4 frames of 32 px
    assert width >= 4 * 112 and height >= 2 * 2 * 112  # drawn at 112 px or more
    tables = list((run_dir / "files" / "media").rglob("predictions*.table.json"))
    videos = list((run_dir / "files" / "media" / "videos").rglob("prediction_clips*.mp4"))
    assert len(tables) == 1 and len(videos) == 4


def test_csv_logger_writes_files(data_root, tmp_path):
    trainer = _fit(data_root, CSVLogger(str(tmp_path)), tmp_path, epochs=2)
    base = Path(trainer.log_dir) / "viz"
    for epoch in ("epoch_000", "epoch_001"):
        files = sorted(p.name for p in (base / epoch).iterdir())
        assert files == ["predictions.csv", "viz_confusion_matrix.png", "viz_heatmaps.png",
                         "viz_tsne.png"]  # fmt: skip
    rows = (base / "epoch_001" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("video_index,path,label,prediction") and len(rows) == 5
