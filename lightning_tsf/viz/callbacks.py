"""Dashboard callbacks: rollout heatmaps, t-SNE, confusion matrix and a prediction table.

Plain ``pytorch_lightning.Callback``s that use only ``pl_module.net`` (a TimeSformer) and the
validation batches as they pass (never the dataset: a batch is what files and shards, local or
in object storage, have in common), so they work with any module holding the backbone at
``net`` and any source of the DataModule. At
the end of a validation epoch (never during the sanity check) each logs to W&B when a
``WandbLogger`` is attached (images under ``files/media/images`` of the run), and otherwise
writes files under ``<log_dir>/viz/epoch_NNN/``. Add or drop each one in the YAML
(``trainer.callbacks``); ``every_n_epochs`` thins them out.

The t-SNE, confusion and table callbacks share one extra forward pass per validation batch
(``forward_features`` + head), whichever of them are enabled: the first of them in
``trainer.callbacks`` collects per-video outputs (a ``ViewAccumulator``) and the others read
them from it. The clips shown (heatmaps, the table's videos) are the first view of the
validation videos with the lowest indices that this process saw (:class:`FirstViews`; under
DDP rank 0's share). Normalisation and class names are the module's input record
(``pl_module.input_config``), as saved in its checkpoints.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from lightning_tsf.data.clips import clip_frame_indices
from lightning_tsf.data.decode import VideoDecodeError
from lightning_tsf.data.scores import ViewAccumulator
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, normalize_video
from lightning_tsf.inference import add_batch, outputs_dict
from lightning_tsf.viz.heatmap import denormalise, render_heatmaps, save_png
from lightning_tsf.viz.plots import plot_confusion, plot_tsne, tsne_embed


def _wandb(trainer: pl.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _out_dir(trainer: pl.Trainer) -> Path:
    base = trainer.log_dir or trainer.default_root_dir
    return Path(base) / "viz" / f"epoch_{trainer.current_epoch:03d}"


def _class_names(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str] | None:
    record = getattr(pl_module, "input_config", None)
    names = list(record.class_names) if record is not None else []
    return names or getattr(pl_module, "hparams", {}).get("class_names") or None


def source_frame_indices(path: str, spec: Any, temporal: int = 0) -> list[int] | None:
    """Source frame numbers of evaluation clip ``temporal`` of a video, to label pictures:
    read from the file when ``path`` is one on this machine (a shard sample's id is not: None,
    and frames are labelled by their position in the clip)."""
    if spec is None or not Path(path).is_file():
        return None
    try:
        return clip_frame_indices(path, spec, temporal)
    except VideoDecodeError:
        return None


def _frame_indices(trainer: pl.Trainer, path: str) -> list[int] | None:
    """:func:`source_frame_indices` of a video's first view (the DataModule's views)."""
    spec = getattr(trainer.datamodule, "view_spec", None) if trainer.datamodule else None
    return source_frame_indices(path, spec)


class FirstViews:
    """The first view (``view_index == 0``) of the ``limit`` decodable videos with the lowest
    ``video_index`` among the evaluation batches given to :meth:`add`: uint8 frames ``(T, H,
    W, 3)`` as the model saw them, label and path. Works on whatever the loader yields (files
    or shard streams, any worker interleaving), without indexing a dataset."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.videos: dict[int, dict[str, Any]] = {}

    def clear(self) -> None:
        self.videos = {}

    def add(self, batch: dict[str, Any], mean: Sequence[float], std: Sequence[float]) -> None:
        """Keep the rows of ``batch`` (uint8 clips, or normalised ones after the transfer)
        that are among the ``limit`` lowest videos so far."""
        n = batch["video"].shape[0]
        index = torch.as_tensor(batch.get("video_index", torch.arange(n))).tolist()
        view = torch.as_tensor(batch.get("view_index", torch.zeros(n))).tolist()
        valid = torch.as_tensor(batch.get("valid", True)).bool().expand(n).tolist()
        labels = torch.as_tensor(batch["label"]).tolist()
        paths = batch.get("path") or [""] * n
        for i in range(n):
            v = int(index[i])
            if view[i] != 0 or not valid[i] or v in self.videos:
                continue
            if len(self.videos) >= self.limit and v > max(self.videos):
                continue
            clip = batch["video"][i]
            frames = (clip.permute(1, 2, 3, 0).cpu().numpy() if clip.dtype == torch.uint8
                      else denormalise(clip, mean, std))  # fmt: skip
            self.videos[v] = {"frames": frames, "label": int(labels[i]), "path": str(paths[i])}
            if len(self.videos) > self.limit:
                del self.videos[max(self.videos)]

    def ordered(self) -> list[tuple[int, dict[str, Any]]]:
        """``(video_index, entry)`` in ascending video order."""
        return sorted(self.videos.items())


def _norm_stats(pl_module: pl.LightningModule) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the module's input record (else its hyper-parameters)."""
    record = getattr(pl_module, "input_config", None)
    if record is not None:
        return record.mean, record.std
    hp = getattr(pl_module, "hparams", {})
    return tuple(hp.get("mean", DEFAULT_MEAN)), tuple(hp.get("std", DEFAULT_STD))


class _VizCallback(pl.Callback):
    """Epoch gating and output for the dashboard callbacks."""

    uses_outputs = False  # needs the shared per-batch features/logits

    def __init__(self, every_n_epochs: int = 1, first_views: int = 0) -> None:
        self.every_n_epochs = max(1, every_n_epochs)
        self.views = ViewAccumulator()  # this epoch's outputs, when this one is the collector
        self.epoch_outputs: dict[str, Any] | None = None
        # the first views of the ``first_views`` lowest-numbered videos, for pictures of clips
        self.clips = FirstViews(first_views) if first_views else None

    def keeps_clips(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch's clips are kept (rank 0, outside the sanity check)."""
        return not trainer.sanity_checking and trainer.is_global_zero

    def active(self, trainer: pl.Trainer) -> bool:
        """True on validation epochs that should be logged: every ``every_n_epochs``-th and the
        last one (``max_epochs`` reached or the trainer stopping), never the sanity check."""
        epoch = trainer.current_epoch + 1
        last = trainer.should_stop or epoch == trainer.max_epochs
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and (epoch % self.every_n_epochs == 0 or last)
        )

    def log_image(self, trainer: pl.Trainer, key: str, image: np.ndarray, caption: str) -> None:
        """``wandb.Image`` under ``key`` with W&B, else ``<out_dir>/<key>.png``."""
        logger = _wandb(trainer)
        if logger is not None:
            logger.log_image(key=key, images=[image], caption=[caption], step=trainer.global_step)
        else:
            save_png(image, _out_dir(trainer) / f"{key.replace('/', '_')}.png")

    def _collector(self, trainer: pl.Trainer) -> _VizCallback:
        """The first outputs-using callback of the trainer: it collects for all of them."""
        return next(c for c in trainer.callbacks if isinstance(c, _VizCallback) and c.uses_outputs)

    def _collecting(self, trainer: pl.Trainer) -> bool:
        """This callback collects this epoch: it is the collector and any reader is active."""
        if not self.uses_outputs or self._collector(trainer) is not self:
            return False
        readers = [c for c in trainer.callbacks if isinstance(c, _VizCallback) and c.uses_outputs]
        return any(c.active(trainer) for c in readers)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._collecting(trainer):
            self.views, self.epoch_outputs = ViewAccumulator(), None
        if self.clips is not None:
            self.clips.clear()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._collecting(trainer):
            with torch.no_grad():
                add_batch(self.views, pl_module.net, batch, *_norm_stats(pl_module))
        if self.clips is not None and self.keeps_clips(trainer):
            self.clips.add(batch, *_norm_stats(pl_module))

    def outputs(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        """This epoch's per-video outputs (from the collector), or None if none came in."""
        collector = self._collector(trainer)
        if collector.epoch_outputs is None and len(collector.views):
            collector.epoch_outputs = outputs_dict(collector.views.result())
        return collector.epoch_outputs


class AttentionHeatmapCallback(_VizCallback):
    """Rollout heatmap grid of the first ``num_videos`` validation videos (first view each;
    the same videos every epoch), logged as ``viz/heatmaps``."""

    def __init__(self, num_videos: int = 4, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs, first_views=num_videos)
        self.num_videos = num_videos

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        held = self.clips.ordered()
        if not self.active(trainer) or not held:
            return
        frames = np.stack([e["frames"] for _, e in held])  # uint8 (B, T, H, W, 3)
        clips = torch.from_numpy(frames).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        video = normalize_video(clips.to(pl_module.device), *_norm_stats(pl_module))
        names = [Path(e["path"]).name for _, e in held]
        indices = [_frame_indices(trainer, e["path"]) for _, e in held]
        image, _ = render_heatmaps(
            pl_module.net,
            video,
            frames,
            names=names,
            labels=[e["label"] for _, e in held],
            class_names=_class_names(trainer, pl_module),
            frame_indices=indices,
        )  # fmt: skip (the frames are given: mean/std would only denormalise the video)
        self.log_image(trainer, "viz/heatmaps", image, " | ".join(names))
        self.clips.clear()


class TSNECallback(_VizCallback):
    """t-SNE of the per-video validation features, coloured by class: ``viz/tsne``."""

    uses_outputs = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = self.outputs(trainer) if self.active(trainer) else None
        if out is None or len(out["labels"]) < 3:
            return
        emb = tsne_embed(out["features"])
        title = f"t-SNE of {len(emb)} validation videos, epoch {trainer.current_epoch}"
        image = plot_tsne(emb, out["labels"], _class_names(trainer, pl_module), title=title)
        self.log_image(trainer, "viz/tsne", image, title)


class ConfusionMatrixCallback(_VizCallback):
    """Video-level confusion matrix (views' softmax averaged): ``viz/confusion_matrix``."""

    uses_outputs = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = self.outputs(trainer) if self.active(trainer) else None
        if out is None:
            return
        names = _class_names(trainer, pl_module)
        k = out["probs"].shape[1]
        _, image = plot_confusion(out["labels"], out["probs"].argmax(1), names, num_classes=k)
        self.log_image(trainer, "viz/confusion_matrix", image, f"epoch {trainer.current_epoch}")


class PredictionTableCallback(_VizCallback):
    """Table of ``num_videos`` validation videos: the clip (``wandb.Video``), true class,
    top-5 predictions with probabilities. Without W&B: ``predictions.csv``."""

    uses_outputs = True

    def __init__(self, num_videos: int = 8, every_n_epochs: int = 1, fps: int = 4) -> None:
        super().__init__(every_n_epochs, first_views=num_videos)  # the table's videos (W&B)
        self.num_videos = num_videos
        self.fps = fps

    def keeps_clips(self, trainer: pl.Trainer) -> bool:
        return super().keeps_clips(trainer) and _wandb(trainer) is not None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = self.outputs(trainer) if self.active(trainer) else None
        if out is None:
            return
        names = _class_names(trainer, pl_module)

        def name(i: int) -> str:
            return names[i] if names and 0 <= i < len(names) else str(i)

        rows = []
        for i in range(min(self.num_videos, len(out["labels"]))):
            probs = out["probs"][i]
            top = np.argsort(-probs)[:5]
            rows.append({
                "video_index": int(out["video_index"][i]),
                "path": out["paths"][i],
                "label": name(int(out["labels"][i])),
                "prediction": name(int(top[0])),
                "probability": round(float(probs[top[0]]), 4),
                "top5": ", ".join(f"{name(int(j))} {probs[j]:.2f}" for j in top),
            })  # fmt: skip
        logger = _wandb(trainer)
        if logger is None:
            path = _out_dir(trainer) / "predictions.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            return
        self._log_wandb(trainer, logger, rows)

    def _log_wandb(self, trainer: pl.Trainer, logger: WandbLogger, rows: list[dict]) -> None:
        import wandb

        from lightning_tsf.data.encode import write_video

        columns = ["video", *rows[0]]
        data = []
        held = self.clips.videos
        clips = [held[r["video_index"]]["frames"] if r["video_index"] in held else None
                 for r in rows]  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for r, frames in zip(rows, clips):  # uint8 (T, H, W, 3) or None
                video = None
                if frames is not None:
                    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p: even
                    path = Path(tmp) / f"{r['video_index']}.mp4"
                    write_video(path, frames[:, :h, :w], self.fps, lossless=False)
                    caption = f"{r['label']} -> {r['prediction']} ({r['probability']:.2f})"
                    video = wandb.Video(str(path), caption=caption, format="mp4")
                data.append([video, *r.values()])
            # The table (a run artifact) holds the clips; they are also logged as a media list
            # so the clips show in the run's media panel and files.
            logger.experiment.log({
                "viz/predictions": wandb.Table(columns=columns, data=data),
                "viz/prediction_clips": [row[0] for row in data if row[0] is not None],
                "trainer/global_step": trainer.global_step,
            })  # fmt: skip
