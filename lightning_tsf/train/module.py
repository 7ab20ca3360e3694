"""``VideoClassifier``: the LightningModule that trains, evaluates and predicts with a TimeSformer.

Training: cross-entropy (optional label smoothing, mixup/cutmix), top-1/top-5 with torchmetrics.
Test: the paper's protocol, video-level accuracy of the softmax averaged over all views of a
video (the one :class:`~lightning_tsf.data.views.ViewAccumulator`, gathered over ranks; the
eval samplers and streams hand each view to one rank once). Predict: the prediction record of
each video. The input record (:class:`~lightning_tsf.data.inputs.InputConfig`) is resolved when
training starts and saved in every checkpoint.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.inputs import InputConfig
from lightning_tsf.data.items import VideoBatch, eval_summary
from lightning_tsf.data.scores import VideoScores, ViewAccumulator
from lightning_tsf.data.storage import redact
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, normalize_video
from lightning_tsf.inference import predictions
from lightning_tsf.models import LoadReport, TimeSformer, load_checkpoint, zoo
from lightning_tsf.models.presets import preset_of
from lightning_tsf.train.compile import CompileMode, compile_timesformer
from lightning_tsf.train.metrics import TopKAccuracy
from lightning_tsf.train.mixing import mix_batch
from lightning_tsf.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


class VideoClassifier(pl.LightningModule):
    """TimeSformer (``self.net``) + loss, metrics, optimiser recipe and multi-view evaluation.

    Args:
        net: the backbone (``num_classes`` is linked from the data by the CLI).
        optimizer, lr, momentum, nesterov, weight_decay, exclude_from_decay: see
            :func:`~lightning_tsf.train.optim.build_optimizer` (paper: SGD 0.005, Nesterov
            momentum 0.9, weight decay 1e-4 on all parameters).
        scheduler, milestones, gamma, warmup_epochs, min_lr_ratio: see
            :func:`~lightning_tsf.train.optim.build_scheduler` (paper: ÷10 at epochs 11, 14).
        label_smoothing: cross-entropy label smoothing.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 disables; both > 0 picks one per batch.
        top_k: classes returned per video by ``predict_step``.
        class_names: label names (linked from the data), used in predictions.
        embed_init_std: re-initialise ``pos_embed`` and ``time_embed`` from N(0, std²) (the
            official init is 0.02 and zeros). From scratch on small data, std ~1 gives every
            token a strong position and time signal from step one and breaks the frame-order
            symmetry of a zero ``time_embed``: the synthetic demo learns in minutes instead of
            sitting at the order-blind ceiling. Before ``pretrained`` (which overwrites it).
        pretrained, pretrained_kind: checkpoint loaded into ``net`` when fitting starts
            (:meth:`setup`; not when resuming, never at init) (ImageNet timm weights or an
            official/HF/Lightning TimeSformer checkpoint to fine-tune); a path, or ``zoo:NAME``
            (``tsf weights list``), fetched once per node in :meth:`prepare_data`; a zoo file
            loads in the layout of its source (``pretrained_kind`` applies to paths).
        replace_head: when ``pretrained`` has another class count, start a new head (and say
            so in the load report); False stops with an error instead.
        compile: ``torch.compile`` the whole backbone (falling back to its blocks, then eager,
            with a warning if compiling fails); state-dict keys are unchanged. ``true`` is
            torch's default mode; a mode name picks that mode (``reduce-overhead``: CUDA
            graphs; ``max-autotune-no-cudagraphs``: autotuned kernels; see
            ``benchmarks/bench_overhead.py`` for what each measures).
        lr_scale: factor on ``lr``, written by ``tsf fit``'s batch plan when
            ``GlobalBatchSize(scale_lr=True)`` trains at another global batch (1 otherwise).
        mean, std: normalisation of the uint8 clips that batches carry, applied on the device
            after the transfer (linked from the data by the CLI).
    """

    def __init__(
        self,
        net: TimeSformer,
        optimizer: str = "sgd",
        lr: float = 0.005,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 1e-4,
        exclude_from_decay: bool = False,
        scheduler: str = "step",
        milestones: tuple[int, ...] = (11, 14),
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        top_k: int = 5,
        class_names: list[str] | None = None,
        embed_init_std: float | None = None,
        pretrained: str | None = None,
        pretrained_kind: str = "auto",
        replace_head: bool = True,
        compile: bool | CompileMode = False,
        lr_scale: float = 1.0,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # a network built in Python is left out just below
            warnings.filterwarnings("ignore", message="Attribute 'net' is an instance of")
            self.save_hyperparameters()  # from the CLI ``net`` is its config dict
        if isinstance(self.hparams.get("net"), nn.Module):  # a network built in Python:
            # leave it out of the saved and the logged copy alike (checkpoints stay
            # weights_only; a logger would otherwise write every weight as YAML text)
            self.save_hyperparameters(ignore=["net"])
        self.net = net
        if embed_init_std is not None:
            with torch.no_grad():
                for name in ("pos_embed", "time_embed"):
                    if hasattr(net, name):
                        getattr(net, name).normal_(0.0, embed_init_std)
        self.resuming = False  # weights come from a checkpoint: pretrained is not loaded
        self.pretrained_from: zoo.Fetched | None = None  # the file loaded by load_pretrained
        # Metrics accumulate on the device and are computed at epoch end (TopKAccuracy).
        self.metrics = nn.ModuleDict(
            {f"{stage}_acc{t}": TopKAccuracy(t) for stage in ("train", "val") for t in (1, 5)}
        )
        # a metric object: every rank logs it, even with no clip
        self.val_loss = MeanMetric(nan_strategy="disable")
        # What the model expects as input: resolved once when training starts (from the data
        # and the backbone), saved in every checkpoint, read back from one (InputConfig).
        self.input_config: InputConfig | None = None
        self._views = ViewAccumulator()  # test and predict: view scores until a video is whole
        self._train_metrics_logged = False  # this epoch's training metrics are registered
        self.test_results: dict[str, Any] = {}

    def pretrained_due(self) -> bool:
        """``pretrained`` is to be loaded: set, not loaded yet, and no checkpoint to resume."""
        user_ckpt = self._trainer is not None and self.trainer.ckpt_path  # trainer.ckpt_path = X
        wanted = bool(self.hparams.pretrained) and self.pretrained_from is None
        return wanted and not (self.resuming or user_ckpt)

    def load_pretrained(self, download: bool = True) -> LoadReport | None:
        """Load ``pretrained`` into ``net`` (a ``zoo:NAME`` file verified against its recorded
        sha256 and loaded in the layout of the source it came from; ``download=False`` waits
        for another process's download instead of starting one). None when there is none."""
        spec, kind = self.hparams.pretrained, self.hparams.pretrained_kind
        if not spec:
            return None
        if spec.startswith(zoo.PREFIX):
            got = zoo.fetch(spec.removeprefix(zoo.PREFIX), download=download)
        else:
            got = zoo.Fetched(Path(spec), kind, "file")
        # fine-tuning may train at other clip sizes: embeddings resized as the forward does
        report = load_checkpoint(self.net, got.path, kind=got.kind,
                                 replace_head=self.hparams.replace_head,
                                 resize_embeddings=True)  # fmt: skip
        log.warning("%s: %s", got.path, report)
        self.pretrained_from = got
        return report

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the input record (``checkpoint["input_config"]``), and no
        credential: secret-named hyperparameters (the data's ``storage_options`` keys) are
        saved as ``***``; a resumed run finds them in its environment."""
        if self.input_config is not None:
            checkpoint["input_config"] = self.input_config.to_dict()
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = redact(checkpoint[key])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Weights from a checkpoint: ``pretrained`` never over them; the input record as
        saved (a checkpoint from before records has none: kept as is)."""
        self.resuming = True
        if isinstance(checkpoint.get("input_config"), dict):
            self.input_config = InputConfig.from_dict(checkpoint["input_config"])

    def prepare_data(self) -> None:
        """Local rank zero of each node fetches ``zoo:`` weights (one download per cache folder,
        under its file lock) while the other ranks wait at Lightning's barrier."""
        spec = self.hparams.pretrained
        fitting = self.trainer.state.fn == "fit"
        if fitting and self.pretrained_due() and spec.startswith(zoo.PREFIX):
            zoo.fetch(spec.removeprefix(zoo.PREFIX))

    def setup(self, stage: str) -> None:
        """When fitting: every rank loads ``pretrained`` when fitting from scratch (never when
        a checkpoint is restored: its weights win, and the init file may be gone; never to
        evaluate), and the input record is resolved once: the data's (views, normalisation,
        classes) with the backbone's scheme and preset. A record read from a checkpoint
        (resume, test) is kept as saved."""
        if stage != "fit":
            return
        if self.pretrained_due():
            self.load_pretrained(download=False)
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.input_config is None and isinstance(datamodule, VideoDataModule):
            self.input_config = replace(datamodule.input_config, tokens=self.net.tokens.to_dict(),
                                        scheme=self.net.attention_type, preset=preset_of(self.net))

    def configure_model(self) -> None:
        """Compile the backbone when asked (:func:`compile_timesformer`: the whole model, falling
        back to its blocks, then eager; a no-op once compiled)."""
        mode = self.hparams.compile
        if mode:
            compile_timesformer(self.net, **({"mode": mode} if isinstance(mode, str) else {}))

    def forward(self, video: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of normalised videos ``(B, C, T, H, W)``."""
        return self.net(video)

    def on_after_batch_transfer(self, batch: VideoBatch, dataloader_idx: int) -> VideoBatch:
        """uint8 clips become normalised float32 here, on the device (4x less to transfer)."""
        if batch["video"].dtype == torch.uint8:
            record = self.input_config
            mean, std = (record.mean, record.std) if record else (self.hparams.mean,
                                                                  self.hparams.std)
            batch["video"] = normalize_video(batch["video"], mean, std)
        return batch

    # ---------------------------------------------------------------- training / validation
    def _mix(self, video: Tensor, label: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        """Mixup or cutmix as configured (:func:`~.mixing.mix_batch`)."""
        return mix_batch(video, label, self.hparams.mixup_alpha, self.hparams.cutmix_alpha)

    def _update_metrics(self, stage: str, logits: Tensor | None, label: Tensor,
                        log: bool = True) -> None:  # fmt: skip
        """Update (when there are clips) and log the stage's accuracy metrics, computed at
        epoch end (the states stay on the device until then). Validation logs the metric
        objects on every step of every rank, so the epoch-end sync under DDP never waits for a
        rank whose batches were all unreadable; training (every rank has every step) logs them
        once an epoch (``log``): registering a metric object with Lightning costs about a
        millisecond a step (it moves the object to the device each time)."""
        for name, metric in self.metrics.items():
            if name.startswith(stage):
                if logits is not None:
                    metric.update(logits, label)
                if not log:
                    continue
                self.log(
                    f"{stage}/{name.split('_')[1]}",
                    metric,
                    on_step=False,
                    on_epoch=True,
                    prog_bar=name.endswith("1"),
                    batch_size=max(1, len(label)),
                )

    def training_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        """Cross-entropy on (optionally mixed) clips; logs loss, accuracy, broken-video retries.

        Nothing here reads a value back to the host: the loss is logged as a device tensor
        (Lightning converts it only on the steps it writes to the loggers, and the progress
        bar shows the value from those steps, see :class:`~lightning_tsf.train.callbacks.
        HostValuesBar`), the accuracies accumulate on the device until the epoch ends."""
        smoothing = self.hparams.label_smoothing
        video, y_a, y_b, lam = self._mix(batch["video"], batch["label"])
        logits = self(video)
        loss = lam * F.cross_entropy(logits, y_a, label_smoothing=smoothing)
        if lam < 1:
            loss = loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smoothing)
        self.log("train/loss", loss, batch_size=len(video))
        self._update_metrics("train", logits.detach(), batch["label"],
                             log=not self._train_metrics_logged)  # fmt: skip
        self._train_metrics_logged = True
        if "retries" in batch:  # a (B,) tensor, on the device with the batch
            self.log("train/decode_retries", batch["retries"].sum().float(), reduce_fx="sum",
                     on_step=False, on_epoch=True, batch_size=1)  # fmt: skip
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_metrics_logged = False  # logged on the epoch's first step (a resumed one too)

    def validation_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """Clip-level loss and top-1/top-5 over the valid views (a batch of unreadable videos
        adds nothing, and still logs, see :meth:`_update_metrics`)."""
        valid = torch.as_tensor(batch.get("valid", True), device=self.device).bool()
        valid = valid.expand(batch["label"].shape[0])
        label = batch["label"][valid]
        logits = self(batch["video"][valid]) if valid.any() else None
        if logits is not None:
            self.val_loss.update(F.cross_entropy(logits, label), weight=len(label))
        self.log("val/loss", self.val_loss, batch_size=max(1, len(label)))
        self._update_metrics("val", logits, label)

    # ---------------------------------------------------------------- multi-view test
    def on_test_epoch_start(self) -> None:
        self._views = ViewAccumulator()

    def _add_views(self, batch: VideoBatch) -> None:
        """Softmax of the batch's decodable views into the per-video accumulator."""
        valid = torch.as_tensor(batch["valid"]).bool()
        rows = {}
        if valid.any():
            rows["probs"] = self(batch["video"][valid.to(self.device)]).float().softmax(-1)
        self._views.add(batch["video_index"], batch["label"], batch["path"], valid,
                        batch.get("error"), **rows)  # fmt: skip

    def test_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """Collect per-view softmax; unreadable videos are recorded with their reason."""
        self._add_views(batch)

    def on_test_epoch_end(self) -> None:
        """Average views per video over all ranks, log ``test/acc1``/``test/acc5`` per video."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, self._views.state())
            self._views = ViewAccumulator()
            self._views.merge(states)
        scores = self._views.result()
        videos, failed = len(scores), sorted(scores.errors)
        if videos:
            probs = scores.rows["probs"]
            topk = probs.topk(min(5, probs.shape[1]), dim=1).indices
            hits = topk == scores.labels.unsqueeze(1)
        dataset = getattr(self.trainer.test_dataloaders, "dataset", None)
        total = getattr(dataset, "num_videos", videos + len(failed))
        datamodule = self.trainer.datamodule
        protocol = datamodule.protocol()["test"] if isinstance(datamodule, VideoDataModule) else ""
        none = float("nan")  # no video could be decoded: no accuracy to report
        self.test_results = {
            "protocol": protocol,
            "acc1": hits[:, 0].float().mean().item() if videos else none,
            "acc5": hits.any(1).float().mean().item() if videos else none,
            "videos": videos,
            "total_videos": total,
            "failed": failed,
            "summary": eval_summary(total, failed),
            "video_index": scores.video_index,  # (V,) index of each evaluated video in the split
            "probs": scores.rows.get("probs", torch.zeros(0, self.net.num_classes)),  # (V, K)
        }
        for name in ("acc1", "acc5", "videos"):
            self.log(f"test/{name}", float(self.test_results[name]), rank_zero_only=True)
        if self.trainer.is_global_zero:
            log.warning("test: %s; %s", self.test_results["summary"], protocol or "")
            if videos + len(failed) != total:
                log.warning("test saw %d of %d videos", videos + len(failed), total)

    # ---------------------------------------------------------------- predict
    def on_predict_epoch_start(self) -> None:
        self._views = ViewAccumulator()

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> list[dict[str, Any]]:
        """The prediction record (:class:`~lightning_tsf.inference.Prediction`, with its
        ``video_index``) of each video whose views are all in; an unreadable video gets
        ``{"path", "label", "video_index", "error"}``. Views of a video arrive consecutively
        on one rank (the eval sampler keeps them together)."""
        self._add_views(batch)
        batches = self.trainer.num_predict_batches
        if batches and batch_idx + 1 == batches[0]:  # the last batch: every video left
            return self._prediction_rows(self._views.result())
        done = self._views.complete(int(torch.as_tensor(batch["num_views"]).max()))
        return self._prediction_rows(done)

    def _prediction_rows(self, scores: VideoScores) -> list[dict[str, Any]]:
        names = self.hparams.class_names or (self.input_config.class_names
                                             if self.input_config else [])  # fmt: skip
        rows = [
            {**p.to_dict(), "video_index": v}
            for p, v in zip(predictions(scores, self.hparams.top_k, names),
                            scores.video_index.tolist())  # fmt: skip
        ]
        return rows + [{"path": path, "error": error} for path, error in scores.errors.items()]

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """Optimizer with parameter groups and the learning-rate schedule (see ``optim``)."""
        hp = self.hparams
        optimizer = build_optimizer(
            self.net,
            hp.optimizer,
            lr=hp.lr * hp.lr_scale,
            momentum=hp.momentum,
            nesterov=hp.nesterov,
            weight_decay=hp.weight_decay,
            exclude_from_decay=hp.exclude_from_decay,
        )
        epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else 1
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        scheduler = build_scheduler(
            optimizer,
            hp.scheduler,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            milestones=hp.milestones,
            gamma=hp.gamma,
            warmup_epochs=hp.warmup_epochs,
            min_lr_ratio=hp.min_lr_ratio,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
