"""Where a DataModule's videos come from: what differs between files and shards, and nothing else.

A source lists the videos of each split (annotation records, or a shard index), knows the
dataset's format and class names, and builds the dataset and loader of a stage; the items
themselves (clips, views, seeds, retries, batch format) are :mod:`.items`' for both.

* :class:`FileSource`: annotation files under a local ``data_root``, videos opened by path,
  map-style datasets with :class:`~.dataset.SeededTrainSampler` (exact resume from the
  Trainer's batch count) and :class:`~.dataset.DistributedEvalSampler` (whole videos per rank).
* :class:`ShardSource`: a ``tsf shard`` output (local or ``s3://``), a LitData stream of video
  bytes; its loader's position is saved in checkpoints (:meth:`ShardSource.state_dict`).

:func:`pick_source` chooses once and is the one place where object storage is checked (bucket
and credentials, before anything reads from it). Nothing here reads a file when constructed:
class names, formats and records are read on first use and kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lightning_tsf.data.annotations import (
    DEFAULT_CLASS_FILES,
    DEFAULT_SPLITS,
    AnnotationError,
    VideoRecord,
    load_class_names,
    load_split,
    require,
)
from lightning_tsf.data.clips import ViewSpec
from lightning_tsf.data.items import collate_views
from lightning_tsf.data.options import AnnotationOptions, LoaderOptions, StorageOptions
from lightning_tsf.data.transforms import TrainTransform

STAGES = ("train", "val", "test", "predict")


@dataclass
class LoaderPlan:
    """What a source's loader needs from the DataModule: ``batch_size`` (training clips, or
    evaluation videos, per batch), workers, loader options, the training draws' ``seed``, and
    the Trainer's epoch and batches done this epoch (a resumed run continues mid-epoch)."""

    batch_size: int
    num_workers: int
    options: LoaderOptions
    seed: int
    epoch: Callable[[], int] = field(default=lambda: 0)
    batches_done: Callable[[], int] = field(default=lambda: 0)

    def worker_kwargs(self) -> dict[str, Any]:
        """DataLoader keywords shared by both sources' loaders."""
        o, workers = self.options, self.num_workers
        return dict(
            num_workers=workers,
            pin_memory=o.pin_memory and torch.cuda.is_available(),
            persistent_workers=o.persistent_workers and workers > 0,
            prefetch_factor=o.prefetch_factor if workers > 0 else None,
            multiprocessing_context=o.multiprocessing_context if workers > 0 else None,
        )


class FileSource:
    """Videos listed by annotation files under a local ``data_root``, opened by path."""

    kind = "files"
    rebuild_per_loader = False  # a map-style dataset serves every loader of its stage

    def __init__(self, data_root: str | Path, format: str, annotations: AnnotationOptions):
        self.root = Path(data_root)
        self.format = format
        self.options = annotations
        train, val, test = DEFAULT_SPLITS[format]
        a = annotations
        self.splits = {"train": a.train_split or train, "val": a.val_split or val,
                       "test": a.test_split or test}  # fmt: skip
        self.splits["predict"] = a.predict_split or self.splits["test"]
        self.class_names_file = a.class_names_file or DEFAULT_CLASS_FILES[format]
        self._class_names: list[str] | None = None

    def class_names(self) -> list[str]:
        """Read once from the label files (no video is opened); names the missing path."""
        if self._class_names is None:
            require(self.root, "data_root")
            if self.format != "folder":
                for stage in ("train", "val"):
                    require(self.root / self.splits[stage], f"{stage} annotation file")
            self._class_names = load_class_names(self.format, self.root, self.class_names_file,
                                                 self.splits["train"])  # fmt: skip
        return self._class_names

    def records(self, stage: str) -> list[VideoRecord]:
        """Annotated videos of ``stage``; an empty split or a bad line is an
        :class:`AnnotationError` naming file and line."""
        a = self.options
        records = load_split(self.format, self.root, self.splits[stage], self.class_names(),
                             self.class_names_file, a.video_dir, a.video_ext,
                             labelled=stage != "predict",  # scored stages need labels
                             allow_outside=a.allow_outside_root)  # fmt: skip
        if not records:
            where = self.root / a.video_dir if self.format == "folder" else self.root
            raise AnnotationError(f"{stage} split {where / self.splits[stage]} lists no videos")
        return records

    def num_videos(self, stage: str) -> int:
        return len(self.records(stage))

    def dataset(self, stage: str, spec: ViewSpec, transform: TrainTransform | None,
                max_retries: int, seed: int):  # fmt: skip
        """The map-style dataset of ``stage`` (``seed``: drawn per item by the sampler)."""
        from lightning_tsf.data.dataset import VideoDataset

        return VideoDataset(self.records(stage), spec, train=stage == "train",
                            transform=transform, max_decode_retries=max_retries)  # fmt: skip

    def loader(self, stage: str, dataset, plan: LoaderPlan) -> DataLoader:
        """Training: :class:`SeededTrainSampler` (shuffled, each item's draws from its video's
        seed; resumed mid-epoch, the epoch's remaining items); evaluation: whole videos in
        order, :class:`DistributedEvalSampler` under DDP."""
        from lightning_tsf.data.dataset import DistributedEvalSampler, SeededTrainSampler

        train = stage == "train"
        sampler = generator = None
        if train:
            sampler = SeededTrainSampler(
                dataset, plan.seed, skip=lambda: plan.batches_done() * plan.batch_size
            )
            # The loader's own generator: creating an iterator (each epoch, and on a resume
            # mid-epoch) then takes nothing from the global RNG that dropout and mixup use.
            generator = torch.Generator().manual_seed(plan.seed)  # fmt: skip
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                sampler = DistributedEvalSampler(dataset)
        return DataLoader(dataset, batch_size=plan.batch_size, sampler=sampler,
                          generator=generator, collate_fn=None if train else collate_views,
                          drop_last=train and len(dataset) >= plan.batch_size,  # never 0 batches
                          **plan.worker_kwargs())  # fmt: skip

    def state_dict(self) -> dict:
        """Nothing: the sampler resumes from the Trainer's own batch count."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


class ShardSource:
    """A ``tsf shard`` output (local folder or ``s3://`` prefix) streamed through LitData; its
    format, class names and splits come from its ``shards.json``."""

    kind = "shards"
    rebuild_per_loader = True  # LitData reads the rank and world size when a stream is built

    def __init__(self, url: str, storage: StorageOptions) -> None:
        self.url = url
        self.storage = storage
        self.splits = {"train": "train", "val": "val", "test": "test", "predict": "test"}
        self._meta: dict | None = None
        self._train_loader: Any = None  # its position goes into checkpoints
        self._saved: dict | None = None  # a restored position, for the next train loader

    @property
    def meta(self) -> dict:
        """``shards.json``, read once."""
        if self._meta is None:
            from lightning_tsf.data.shard_format import read_metadata

            self._meta = read_metadata(self.url, self.storage.options)
        return self._meta

    @property
    def format(self) -> str:
        return str(self.meta["format"])

    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def _split(self, stage: str) -> dict:
        from lightning_tsf.data.shard_format import ShardError

        info = self.meta.get("splits", {}).get(self.splits[stage])
        if info is None:
            raise ShardError(f"{self.url}: the shards have no {self.splits[stage]!r} split "
                             f"(for {stage}); `tsf shard` writes train/val/test")  # fmt: skip
        return info

    def records(self, stage: str) -> list[VideoRecord]:
        from lightning_tsf.data.shard_format import ShardError

        raise ShardError(f"{self.url}: shards hold no annotation records; their videos are "
                         "read by the stream")  # fmt: skip

    def num_videos(self, stage: str) -> int:
        return int(self._split(stage)["videos"])

    def dataset(self, stage: str, spec: ViewSpec, transform: TrainTransform | None,
                max_retries: int, seed: int):  # fmt: skip
        """The LitData stream of ``stage``'s split (imports litdata)."""
        from lightning_tsf.data.shard_format import split_dir
        from lightning_tsf.data.storage import input_dir
        from lightning_tsf.data.streaming import ShardVideoDataset

        info = self._split(stage)
        s = self.storage
        stream = input_dir(split_dir(self.url, self.splits[stage]), s.options, s.cache_dir,
                           s.max_cache_size)  # fmt: skip
        return ShardVideoDataset(
            stream.pop("input_dir"), spec, train=stage == "train",
            num_records=int(info["records"]), num_videos=int(info["videos"]),
            transform=transform, seed=seed, max_decode_retries=max_retries, **stream,
        )  # fmt: skip

    def loader(self, stage: str, dataset, plan: LoaderPlan):
        """LitData's loader: training batches of ``batch_size`` clips (the last partial one
        dropped: the exact global batch), resumable; evaluation batches of whole videos."""
        from lightning_tsf.data.storage import is_remote, storage_options, worker_init
        from lightning_tsf.data.streaming import ShardLoader

        train = stage == "train"
        remote = is_remote(self.url) and plan.num_workers > 0
        loader = ShardLoader(
            dataset, batch_size=plan.batch_size, drop_last=train,
            collate_fn=None if train else collate_views,
            trainer_epoch=plan.epoch if train else None,
            batches_done=plan.batches_done if train else None,
            saved_state=self._take_saved if train else None,
            # object storage over plain http (a loopback or on-prem server), in every worker
            worker_init_fn=(worker_init(storage_options(self.url, self.storage.options))
                            if remote else None),
            # workers' base seed from the loader's own generator, not the global RNG (mixup)
            generator=torch.Generator().manual_seed(plan.seed) if train else None,
            **plan.worker_kwargs(),
        )  # fmt: skip
        if train:
            self._train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """The training stream's position (Lightning builds the train loader before it
        restores its own copy of it, so it never restores that)."""
        loader = self._train_loader
        return {"shard_train": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Keep the saved position for the train loader's first epoch after a resume."""
        self._saved = state.get("shard_train")

    def _take_saved(self) -> dict | None:
        state, self._saved = self._saved, None
        return state


Source = FileSource | ShardSource


def pick_source(data_root: str, format: str, annotations: AnnotationOptions,
                storage: StorageOptions) -> Source:  # fmt: skip
    """The source of ``data_root``, chosen once: shards where ``storage.source`` says so, where
    ``data_root`` holds a ``shards.json`` or is an object-storage URL, else files. An
    object-storage URL is checked here (bucket, credentials, endpoint), the one place."""
    from lightning_tsf.data.shard_format import is_shard_folder, split_dir
    from lightning_tsf.data.storage import check_remote, check_stream, is_remote, storage_options

    if storage.source not in (None, "files", "shards"):
        raise ValueError(f"data.storage.source={storage.source!r}; expected 'files', 'shards' "
                         "or null")  # fmt: skip
    remote = is_remote(data_root)
    if remote and storage.source == "files":
        raise ValueError(f"data_root={data_root}: object storage holds shards only "
                         "(`tsf shard SRC URL`); source must be 'shards'")  # fmt: skip
    shards = storage.source == "shards" or (storage.source is None and is_shard_folder(data_root))
    if not shards:
        return FileSource(data_root, format, annotations)
    if remote:  # a missing bucket or rejected keys stop here, before training
        check_remote(data_root, storage_options(data_root, storage.options))
    url = data_root if remote else os.fspath(Path(data_root))
    source = ShardSource(url, storage)
    for split in ("train", "val"):  # a broken index or object stops here, in one line
        if split in source.meta.get("splits", {}):
            check_stream(split_dir(url, split), storage.options, storage.cache_dir,
                         storage.max_cache_size)  # fmt: skip
    return source
