"""``VideoDataModule``: one dataset path whatever the source (files or shards), grouped options.

Options (LightningCLI keys): ``data.data_root``, ``data.format``, ``data.batch_size``,
``data.num_workers`` at the top, and the groups of :mod:`.options`: ``data.clips.*`` (the data
part of the input record), ``data.annotations.*``, ``data.augment.*``, ``data.decode.*``,
``data.loader.*``, ``data.storage.*``. Earlier flat keys still load (:func:`.options.upgrade`).

Nothing is read when the DataModule is built. The source is picked on first use
(:func:`~.sources.pick_source`: object storage is checked there); **the class names are read in
one place, :attr:`VideoDataModule.class_names`** (label files, or ``shards.json``), which the
CLI's link into the model asks for before the model is built; the annotations of a stage are
read by :meth:`setup` (``tsf`` calls it before training or evaluation starts, so a bad line is a
one-line error, exit 2). Each error names the missing path or the bad line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from lightning_tsf.data.annotations import FORMATS, VideoRecord
from lightning_tsf.data.check import check_videos
from lightning_tsf.data.clips import ViewSpec
from lightning_tsf.data.inputs import VIEW_OPTIONS, InputConfig
from lightning_tsf.data.loader import default_num_workers
from lightning_tsf.data.options import (
    AnnotationOptions,
    AugmentOptions,
    ClipOptions,
    DecodeOptions,
    LoaderOptions,
    StorageOptions,
    group,
    plain,
    say,
    upgrade,
)
from lightning_tsf.data.sources import LoaderPlan, Source, pick_source
from lightning_tsf.data.trainer_state import batches_done_this_epoch, current_epoch, global_seed
from lightning_tsf.data.transforms import TrainTransform

# Group defaults (frozen: one shared instance is safe); LightningCLI lists their fields.
CLIPS, ANNOTATIONS, AUGMENT = ClipOptions(), AnnotationOptions(), AugmentOptions()
DECODE, LOADER, STORAGE = DecodeOptions(), LoaderOptions(), StorageOptions()
STAGE_SPLITS = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                "predict": ["predict"], None: ["train", "val", "test"]}  # fmt: skip


class VideoDataModule(pl.LightningDataModule):
    """Video classification data (Kinetics CSV, SSv2 JSON or class folders; files or shards).

    Args:
        data_root: folder that annotation files and video paths are relative to, or a
            ``tsf shard`` output (a folder or ``s3://bucket/prefix``).
        format: ``kinetics``, ``ssv2`` or ``folder`` (shards: as their ``shards.json`` says).
        batch_size: training clips per GPU/process; evaluation batches hold whole videos,
            ``max(1, batch_size // views)`` of them (:meth:`eval_videos_per_batch`).
        num_workers: DataLoader workers per process; None = the process's share of the cores
            less one (``SLURM_CPUS_PER_TASK`` - 1 under srun), see :mod:`.loader`.
        clips: :class:`~.options.ClipOptions` (frames, sampling, crops, views, mean/std).
        annotations: :class:`~.options.AnnotationOptions` (split and class-name files).
        augment: :class:`~.options.AugmentOptions` (flip, SSv2 scale jitter).
        decode: :class:`~.options.DecodeOptions` (backend, decode size, retries).
        loader: :class:`~.options.LoaderOptions` (pinning, workers' life, prefetch, seed).
        storage: :class:`~.options.StorageOptions` (files or shards, object storage).
    """

    def __init__(
        self,
        data_root: str,
        format: str = "kinetics",
        batch_size: int = 8,
        num_workers: int | None = None,
        clips: ClipOptions = CLIPS,
        annotations: AnnotationOptions = ANNOTATIONS,
        augment: AugmentOptions = AUGMENT,
        decode: DecodeOptions = DECODE,
        loader: LoaderOptions = LOADER,
        storage: StorageOptions = STORAGE,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format={format!r}; expected one of {FORMATS}")
        self.data_root = data_root
        self.batch_size = batch_size
        self.clips = group(clips, ClipOptions)
        self.annotations = group(annotations, AnnotationOptions)
        self.augment = group(augment, AugmentOptions)
        self.decode = group(decode, DecodeOptions)
        self.loader = group(loader, LoaderOptions)
        self.storage = group(storage, StorageOptions)
        self.save_hyperparameters(plain({
            "data_root": data_root, "format": format, "batch_size": batch_size,
            "num_workers": num_workers, "clips": self.clips, "annotations": self.annotations,
            "augment": self.augment, "decode": self.decode, "loader": self.loader,
            "storage": self.storage,
        }))  # fmt: skip  (plain types: checkpoints load with weights_only=True)
        self.datasets: dict[str, Any] = {}
        self._source: Source | None = None
        self._input_config: InputConfig | None = None

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any], where: str = "hyper-parameters"):
        """A DataModule from saved hyper-parameters, earlier flat keys moved to their groups
        with one warning line each (checkpoints written before the groups existed)."""
        grouped, notes = upgrade(hparams)
        say(notes, f"{where}; earlier flat key")
        return cls(**grouped)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None,
                             hparams_file: Any = None, **kwargs: Any):  # fmt: skip
        """Lightning's loader, with earlier flat keys of ``datamodule_hyper_parameters``
        moved to their groups (:meth:`from_hparams`)."""
        import torch

        saved = torch.load(str(checkpoint_path), map_location="cpu", weights_only=True,
                           mmap=True)  # fmt: skip
        hparams = dict(saved.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {})
        return cls.from_hparams({**hparams, **kwargs}, str(checkpoint_path))

    # ------------------------------------------------------------------ what the data is
    @property
    def source(self) -> Source:
        """Files or shards, picked on first use (:func:`~.sources.pick_source`)."""
        if self._source is None:
            self._source = pick_source(self.data_root, self.hparams.format, self.annotations,
                                       self.storage)  # fmt: skip
        return self._source

    @property
    def format(self) -> str:
        """The annotation format (shards: the one they were written from)."""
        return self.source.format

    @property
    def class_names(self) -> list[str]:
        """The class names, read once: the one place the CLI reads data before the model
        exists (its link into ``model.class_names`` and the head's ``num_classes``)."""
        return self.source.class_names()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def horizontal_flip(self) -> bool:
        flip = self.augment.horizontal_flip
        return self.format != "ssv2" if flip is None else flip

    @property
    def inverse_uniform_scale(self) -> bool:
        inverse = self.augment.inverse_uniform_scale
        return self.format == "ssv2" if inverse is None else inverse

    @property
    def input_config(self) -> InputConfig:
        """What a model trained on this data expects (saved in its checkpoints), resolved
        once from ``data.clips`` and the format, or as :meth:`evaluate_as` set it."""
        if self._input_config is None:
            self._input_config = self.clips.record(self.format, self.class_names)
        return self._input_config

    @property
    def view_spec(self) -> ViewSpec:
        """The input record's views, read with ``data.decode``'s backend and size."""
        return self.input_config.view_spec(self.decode.backend, self.decode.short_side)

    def records(self, stage: str) -> list[VideoRecord]:
        """Annotated videos of ``stage`` (``train``, ``val``, ``test`` or ``predict``; files
        only). Raises :class:`AnnotationError` naming the file when a split lists no video,
        or a line does not fit."""
        return self.source.records(stage)

    def num_videos(self, stage: str) -> int:
        """Videos of ``stage`` (shards: as written; files: as annotated)."""
        if stage in self.datasets:
            return self.datasets[stage].num_videos
        return self.source.num_videos(stage)

    def evaluate_as(self, record: InputConfig) -> list[str]:
        """Evaluate (test, validate, predict) with the views a checkpoint's input record says.

        Evaluation options this config sets (``num_spatial_crops``, ``num_temporal_views``,
        ``test_short_side``) still win; what describes the model (sampler, frames, rate, crop,
        mean, std) is taken from the record. Returns one line per value that differs from
        this config's, for the caller to show (nothing is changed silently)."""
        given = {k: getattr(self.clips, k) for k in VIEW_OPTIONS
                 if getattr(self.clips, k) is not None}  # fmt: skip
        config = record.with_views(**given)
        if self.class_names and len(self.class_names) == len(config.class_names):
            config = replace(config, class_names=tuple(self.class_names))
        notes = [f"data.clips.{d}" for d in self.input_config.differences(config)
                 if not d.startswith(("scheme", "preset", "one_crop"))]  # fmt: skip
        self._input_config = config
        for stage in ("val", "test", "predict"):
            self.datasets.pop(stage, None)
        return notes

    def protocol(self) -> dict[str, str]:
        """How clips are cut in training, validation and test, in words (logged with the
        config and stated in the test summary)."""
        s = self.view_spec
        clip = {
            "dense": f"{s.num_frames} frames over rate {s.sampling_rate} x {s.num_frames} / 30 "
            "x fps source frames (official dense)",
            "centred": f"{s.num_frames} frames {s.sampling_rate} apart",
            "segment": f"{s.num_frames} frames, one per equal segment",
        }[s.sampler]
        low, high = self.clips.train_scale
        jitter = f"1/U[1/{high}, 1/{low}]" if self.inverse_uniform_scale else f"U[{low}, {high}]"
        flip = ", horizontal flip" if self.horizontal_flip else ""
        crops = "left/centre/right" if s.num_spatial_crops == 3 else "centre"
        views = (
            f"{s.num_temporal_views} clip(s) x {s.num_spatial_crops} {crops} crop(s) of "
            f"{s.crop_size} after short side {s.test_short_side or s.crop_size}; {clip}"
        )
        return {
            "train": f"{clip}, random position; short side {jitter}, random {s.crop_size} "
            f"crop{flip}",
            "validation": f"clip-level accuracy (each view scored alone) over {views}",
            "test": f"video-level accuracy, the paper's kind (softmax averaged per video) over "
            f"{views}",
        }

    # ------------------------------------------------------------------ datasets and loaders
    def make_dataset(self, stage: str):
        """A new dataset of one stage (training transforms only for ``train``): a
        :class:`~.dataset.VideoDataset` or a :class:`~.streaming.ShardVideoDataset`, whose
        items are :mod:`.items`' either way."""
        transform = None
        if stage == "train":
            c = self.clips
            transform = TrainTransform(c.crop_size, tuple(c.train_scale), self.horizontal_flip,
                                       self.inverse_uniform_scale)  # fmt: skip
        return self.source.dataset(stage, self.view_spec, transform, self.decode.max_retries,
                                   self._seed())  # fmt: skip

    def dataset(self, stage: str):
        """The dataset of ``stage``, built once (see :meth:`setup`)."""
        if stage not in self.datasets:
            self.datasets[stage] = self.make_dataset(stage)
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        """Read the annotations (or shard indexes) that a Trainer stage needs: ``fit``,
        ``validate``, ``test``, ``predict``."""
        for name in STAGE_SPLITS[stage]:
            self.dataset(name)

    def _seed(self) -> int:
        return global_seed() if self.loader.seed is None else self.loader.seed

    @property
    def num_workers(self) -> int:
        """Workers per process: as configured, or (``None``) from the cores it may use."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return default_num_workers(devices)

    def eval_videos_per_batch(self) -> int:
        """Evaluation batches hold whole videos (all their views, decoded in one worker):
        ``batch_size // views`` of them, at least one."""
        return max(1, self.batch_size // self.view_spec.num_views)

    def _loader(self, stage: str) -> DataLoader:
        if self.source.rebuild_per_loader:
            self.datasets.pop(stage, None)
        train = stage == "train"
        plan = LoaderPlan(
            batch_size=self.batch_size if train else self.eval_videos_per_batch(),
            num_workers=self.num_workers, options=self.loader, seed=self._seed(),
            epoch=lambda: current_epoch(self.trainer),
            batches_done=lambda: batches_done_this_epoch(self.trainer),
        )  # fmt: skip
        return self.source.loader(stage, self.dataset(stage), plan)

    def state_dict(self) -> dict:
        """The source's loader position (shards), saved in every checkpoint."""
        return self.source.state_dict() if self._source is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.source.load_state_dict(state_dict)

    def train_dataloader(self) -> DataLoader:
        """Shuffled random clips, one per video (under DDP each rank its share; resumed
        mid-epoch, the epoch's remaining clips, drawn as before)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """All views of all validation videos, whole videos per batch, never padded."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """All views of all test videos, whole videos per batch, never padded."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """All views of all predict videos, whole videos per batch, never padded."""
        return self._loader("predict")

    def check_videos(
        self, stages: tuple[str, ...] = ("train", "val", "test"), num_workers: int | None = None
    ) -> list[tuple[str, str]]:
        """Decode-check every video of the given stages; return ``(path, reason)`` of bad ones.
        (Shards hold only videos that decoded when written: see ``OUT/<split>.failed.txt``.)"""
        if self.source.kind == "shards":
            return []
        paths = [r.path for stage in stages for r in self.records(stage)]
        workers = self.num_workers if num_workers is None else num_workers
        return check_videos(paths, backend=self.decode.backend, num_workers=workers)
