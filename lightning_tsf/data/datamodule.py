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

from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from lightning_tsf.data.annotations import FORMATS, VideoRecord
from lightning_tsf.data.check import check_videos
from lightning_tsf.data.clips import ViewSpec, describe_protocol
from lightning_tsf.data.inputs import InputConfig
from lightning_tsf.data.loader import default_num_workers
from lightning_tsf.data.options import (
    GROUPS,
    AnnotationOptions,
    AugmentOptions,
    ClipOptions,
    DecodeOptions,
    LoaderOptions,
    StorageOptions,
    group,
    plain,
    saved_hparams,
)
from lightning_tsf.data.sources import LoaderPlan, Source, pick_source
from lightning_tsf.data.trainer_state import batches_done_this_epoch, current_epoch, global_seed

# Group defaults (frozen: one shared instance is safe); LightningCLI lists their fields.
CLIPS, ANNOTATIONS, AUGMENT = ClipOptions(), AnnotationOptions(), AugmentOptions()
DECODE, LOADER, STORAGE = DecodeOptions(), LoaderOptions(), StorageOptions()
STAGE_SPLITS = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                "predict": ["predict"], None: ["train", "val", "test"]}  # fmt: skip


class VideoDataModule(pl.LightningDataModule):
    """Video classification data (Kinetics CSV, SSv2 JSON or class folders; files or shards).

    Args:
        data_root: the dataset folder, or a ``tsf shard`` output (folder or ``s3://`` URL).
        format: ``kinetics``, ``ssv2`` or ``folder`` (shards: as their ``shards.json`` says).
        batch_size: training clips per process (evaluation: :meth:`eval_videos_per_batch`).
        num_workers: loader workers per process; None = the process's share of the cores
            less one (``SLURM_CPUS_PER_TASK`` - 1 under srun), see :mod:`.loader`.
        clips, annotations, augment, decode, loader, storage: the groups of :mod:`.options`.
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
        self.data_root, self.batch_size = data_root, batch_size
        self.clips = group(clips, ClipOptions)
        self.annotations = group(annotations, AnnotationOptions)
        self.augment, self.decode = group(augment, AugmentOptions), group(decode, DecodeOptions)
        self.loader, self.storage = group(loader, LoaderOptions), group(storage, StorageOptions)
        groups = {name: getattr(self, name) for name in GROUPS}  # saved as plain types, so that
        self.save_hyperparameters(plain({"data_root": data_root, "format": format,  # checkpoints
                                         "batch_size": batch_size, "num_workers": num_workers,
                                         **groups}))  # load with weights_only  # fmt: skip
        self.datasets: dict[str, Any] = {}
        self._source: Source | None = None
        self._input_config: InputConfig | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None,
                             hparams_file: Any = None, **kwargs: Any):  # fmt: skip
        """Lightning's loader; earlier flat keys of ``datamodule_hyper_parameters`` are moved
        to their groups, one warning line each (:func:`~.options.saved_hparams`)."""
        return cls(**saved_hparams(checkpoint_path, cls.CHECKPOINT_HYPER_PARAMS_KEY, kwargs))

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
        return bool(self.augment.resolved(self.format).horizontal_flip)

    @property
    def inverse_uniform_scale(self) -> bool:
        return bool(self.augment.resolved(self.format).inverse_uniform_scale)

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
        """Annotated videos of ``stage`` (files only); an empty split or a bad line is an
        :class:`AnnotationError` naming file and line."""
        return self.source.records(stage)

    def num_videos(self, stage: str) -> int:
        """Videos of ``stage`` (shards: as written; files: as annotated)."""
        if stage in self.datasets:
            return self.datasets[stage].num_videos
        return self.source.num_videos(stage)

    def evaluate_as(self, record: InputConfig) -> list[str]:
        """Evaluate with the views a checkpoint's input ``record`` says, the evaluation views
        this config sets still winning (:meth:`~.options.ClipOptions.evaluate_as`). Returns
        one line per value that differs from this config's, for the caller to show."""
        config = self.clips.evaluate_as(record, self.class_names)
        notes = [f"data.clips.{d}" for d in self.input_config.differences(config)
                 if not d.startswith(("scheme", "preset", "one_crop"))]  # fmt: skip
        self._input_config = config
        for stage in ("val", "test", "predict"):
            self.datasets.pop(stage, None)
        return notes

    def protocol(self) -> dict[str, str]:
        """How clips are cut in training, validation and test, in words (logged with the
        config and stated in the test summary)."""
        aug = self.augment.resolved(self.format)
        return describe_protocol(self.view_spec, self.clips.train_scale, aug.horizontal_flip,
                                 aug.inverse_uniform_scale)  # fmt: skip

    def make_dataset(self, stage: str):
        """A new dataset of ``stage`` from the source (a :class:`~.dataset.VideoDataset` or a
        :class:`~.streaming.ShardVideoDataset`: :mod:`.items`' items either way)."""
        transform = None
        if stage == "train":
            transform = self.augment.resolved(self.format).transform(self.clips)
        return self.source.dataset(stage, self.view_spec, transform, self.decode.max_retries,
                                   self._seed())  # fmt: skip

    def dataset(self, stage: str):
        """The dataset of ``stage``, built once (see :meth:`setup`)."""
        if stage not in self.datasets:
            self.datasets[stage] = self.make_dataset(stage)
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        """Read the annotations (or shard indexes) a Trainer stage needs."""
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
        """Whole videos per evaluation batch: ``batch_size // views``, at least one."""
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
        """Random clips, one per video, shuffled (resumed mid-epoch: the rest, as drawn)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """All views of all validation videos, whole videos per batch, never padded."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """The same for the test split."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The same for the predict split."""
        return self._loader("predict")

    def check_videos(self, stages: tuple[str, ...] = ("train", "val", "test"),
                     num_workers: int | None = None) -> list[tuple[str, str]]:  # fmt: skip
        """``(path, reason)`` of each video of ``stages`` that does not decode (shards: none;
        they hold only videos that decoded when written, see ``OUT/<split>.failed.txt``)."""
        shards = self.source.kind == "shards"
        paths = [] if shards else [r.path for stage in stages for r in self.records(stage)]
        workers = self.num_workers if num_workers is None else num_workers
        return check_videos(paths, backend=self.decode.backend, num_workers=workers)
