"""``VideoDataModule``: annotation files, sampler, transforms and loaders in one DataModule.

Every ``__init__`` argument is a simple typed value so LightningCLI/jsonargparse can build it from
YAML. ``num_classes`` and ``class_names`` are read from label files in ``__init__`` (no video is
opened) so the CLI can link them into the model.

Missing paths fail fast: ``data_root``, the class-name file and the train/val annotation files
are checked in ``__init__``; the test/predict annotation file in ``setup``. Each error names the
missing path.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lightning_tsf.data.annotations import (
    DEFAULT_CLASS_FILES,
    DEFAULT_SPLITS,
    FORMATS,
    AnnotationError,
    VideoRecord,
    load_class_names,
    load_split,
    require,
)
from lightning_tsf.data.check import check_videos
from lightning_tsf.data.dataset import DistributedEvalSampler, SeededTrainSampler, VideoDataset
from lightning_tsf.data.inputs import VIEW_OPTIONS, InputConfig, resolve_input_config
from lightning_tsf.data.loader import default_num_workers
from lightning_tsf.data.shards import ShardError, is_shard_folder, read_metadata, split_dir
from lightning_tsf.data.storage import check_remote, input_dir, is_remote, worker_init
from lightning_tsf.data.storage import storage_options as storage_options_for
from lightning_tsf.data.trainer_state import batches_done_this_epoch, current_epoch, global_seed
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, TrainTransform


class VideoDataModule(pl.LightningDataModule):
    """Video classification data (Kinetics CSV, SSv2 JSON or class folders) for TimeSformer.

    Args:
        data_root: folder that annotation files and video paths are relative to.
        format: ``"kinetics"``, ``"ssv2"`` or ``"folder"``.
        train_split, val_split, test_split: annotation files (folders for ``"folder"``) under
            ``data_root``; None uses the format default (kinetics: train/val/test.csv;
            ssv2: train.json/validation.json/validation.json; folder: train/val/test
            sub-folders, which must exist).
        predict_split: defaults to the test split.
        class_names_file: kinetics: ``classnames.txt`` (optional; one name per line, or JSON
            ``{name: id}``); ssv2: ``labels.json``; folder: none (sorted sub-folder names).
        video_dir, video_ext: SSv2 videos are ``data_root/video_dir/<id><video_ext>``.
        sampler: ``"dense"`` (the official decoder's clips, at the video's frame rate),
            ``"centred"`` (an exact stride, centred at test) or ``"segment"``; None =
            ``"segment"`` for ssv2, else ``"dense"``. See :mod:`.sampling`.
        num_frames, sampling_rate: clip length and rate (rate unused by ``"segment"``).
        crop_size, train_scale: training short-side jitter range and crop size.
        inverse_uniform_scale: draw the training short side as ``1 / uniform(1/max, 1/min)``
            (official SSv2); None = on for ssv2, off otherwise.
        test_short_side: short side of evaluation clips before cropping; None = as the
            checkpoint under test says, else the official protocol: ``crop_size`` with 3 crops
            (and always for ssv2), ``train_scale[0]`` with 1 crop (Kinetics: short side 256,
            centre crop 224). Resolved once in :func:`~.inputs.resolve_input_config`.
        horizontal_flip: None = on for kinetics/folder, off for ssv2 (left/right is in labels).
        mean, std: per-channel normalisation of [0, 1] pixels, applied by the model on the
            device (batches hold uint8 clips); the CLI links them into the model.
        num_spatial_crops (1 or 3), num_temporal_views: evaluation views per video; None = as
            the checkpoint under test says (``tsf test``/``predict``/``validate --ckpt_path``),
            else 3 crops x 1 clip, the paper's test protocol.
        batch_size: clips per GPU/process (evaluation: rounded down to whole temporal clips,
            see :meth:`eval_batch_size`).
        num_workers: DataLoader workers per process; None = the process's share of the cores
            less one (``SLURM_CPUS_PER_TASK`` - 1 under srun), see :mod:`.loader`.
        pin_memory: page-locked batches for faster host-to-GPU copies (only with CUDA).
        persistent_workers: keep workers between epochs. Off by default: fresh workers are
            seeded from the main process each epoch, which keeps resumed runs exact.
        prefetch_factor: batches each worker prepares ahead.
        max_decode_retries: broken videos replaced in a row before a training sample fails.
        backend: ``"auto"`` (default: PyAV on prepared files, decord elsewhere), decord, pyav.
        decode_short_side: decode sources whose short side is larger at this short side.
        multiprocessing_context: DataLoader worker start method (None = platform default).
        seed: the training order's and the clips' random draws (:class:`SeededTrainSampler`);
            None = the run's ``seed_everything`` (``tsf fit`` writes it here), else 0.
        source: ``"files"`` (videos opened by their annotated paths) or ``"shards"`` (a
            ``tsf shard`` output at ``data_root``, streamed through LitData and decoded from
            memory; format, class names and splits come from its ``shards.json``, the split
            arguments are unused); None = ``"shards"`` where ``data_root`` holds a
            ``shards.json`` or is an object-storage URL (``s3://bucket/prefix``), else
            ``"files"``.
        storage_options: object storage: boto3's ``client("s3", ...)`` keywords
            (``endpoint_url``, ``region_name``, keys); None = the AWS variables
            (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...). See :mod:`.storage`.
        cache_dir, max_cache_size: object storage: where downloaded chunks are kept (None =
            ``$LIGHTNING_TSF_CACHE/streams``) and how much of them at most (LitData evicts
            whole chunks beyond it).
    """

    def __init__(
        self,
        data_root: str,
        format: str = "kinetics",
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        class_names_file: str | None = None,
        video_dir: str = "",
        video_ext: str = ".webm",
        sampler: str | None = None,
        num_frames: int = 8,
        sampling_rate: int = 32,
        crop_size: int = 224,
        train_scale: tuple[int, int] = (256, 320),
        inverse_uniform_scale: bool | None = None,
        test_short_side: int | None = None,
        horizontal_flip: bool | None = None,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
        num_spatial_crops: int | None = None,
        num_temporal_views: int | None = None,
        batch_size: int = 8,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: int = 4,
        max_decode_retries: int = 10,
        backend: str = "auto",
        decode_short_side: int | None = None,
        multiprocessing_context: str | None = None,
        seed: int | None = None,
        source: str | None = None,
        storage_options: dict | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = "50GB",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if format not in FORMATS:
            raise ValueError(f"format={format!r}; expected one of {FORMATS}")
        if source not in (None, "files", "shards"):
            raise ValueError(f"source={source!r}; expected 'files', 'shards' or null")
        self.source = source or ("shards" if is_shard_folder(data_root) else "files")
        self.shard_meta: dict | None = None
        self.remote = is_remote(data_root)
        if self.remote and self.source != "shards":
            raise ValueError(f"data_root={data_root}: object storage holds shards only "
                             "(`tsf shard SRC URL`); source must be 'shards'")  # fmt: skip
        if self.remote:  # a missing bucket or rejected keys stop here, before training
            check_remote(data_root, storage_options_for(data_root, storage_options))
        if self.source == "shards":
            self.shard_meta = read_metadata(data_root, storage_options)
            format = self.shard_meta["format"]
        self.data_root: Path | str = (data_root if self.remote else Path(data_root)
                                      if self.shard_meta else require(Path(data_root),
                                                                      "data_root"))  # fmt: skip
        self.format = format
        train_default, val_default, test_default = DEFAULT_SPLITS[format]
        self.splits = {
            "train": train_split or train_default,
            "val": val_split or val_default,
            "test": test_split or test_default,
        }
        self.splits["predict"] = predict_split or self.splits["test"]
        self.class_names_file = class_names_file or DEFAULT_CLASS_FILES[format]
        self.horizontal_flip = format != "ssv2" if horizontal_flip is None else horizontal_flip
        ssv2 = format == "ssv2"
        self.inverse_uniform_scale = (
            ssv2 if inverse_uniform_scale is None else inverse_uniform_scale
        )
        self.batch_size = batch_size
        if self.shard_meta is not None:
            self.splits = {"train": "train", "val": "val", "test": "test", "predict": "test"}
            self.class_names: list[str] = list(self.shard_meta["class_names"])
        else:
            if format != "folder":
                for stage in ("train", "val"):
                    require(self.data_root / self.splits[stage], f"{stage} annotation file")
            self.class_names = load_class_names(
                format, self.data_root, self.class_names_file, self.splits["train"]
            )
        self.num_classes: int = len(self.class_names)
        # What a model trained on this data expects (saved in its checkpoints), resolved once;
        # checks the sampler and crop count now, not when the first loader is built.
        self.input_config = resolve_input_config(
            format, sampler=sampler, num_frames=num_frames, sampling_rate=sampling_rate,
            crop_size=crop_size, train_scale=train_scale, test_short_side=test_short_side,
            num_spatial_crops=num_spatial_crops, num_temporal_views=num_temporal_views,
            mean=mean, std=std, class_names=self.class_names,
        )  # fmt: skip
        self.view_spec = self.input_config.view_spec(backend, decode_short_side)
        # Read the training and validation annotations now (no video is opened): a bad line
        # stops the run here, naming file and line, not after the Trainer started.
        self._records = ({} if self.shard_meta else
                         {stage: self.records(stage) for stage in ("train", "val")})
        self.datasets: dict[str, VideoDataset] = {}
        # shards: the train stream (its position goes into checkpoints) and a restored one
        self._shard_train_loader: DataLoader | None = None
        self._shard_state: dict | None = None

    def num_videos(self, stage: str) -> int:
        """Videos of ``stage`` in the split (shards: as written; files: as annotated)."""
        if self.shard_meta is not None:
            return int(self._shard_split(stage)["videos"])
        if stage in self.datasets:
            return self.datasets[stage].num_videos
        return len(self.records(stage))

    def _shard_split(self, stage: str) -> dict:
        split = self.splits[stage]
        info = (self.shard_meta or {}).get("splits", {}).get(split)
        if info is None:
            raise ShardError(f"{self.data_root}: the shards have no {split!r} split "
                             f"(for {stage}); `tsf shard` writes train/val/test")  # fmt: skip
        return info

    def records(self, stage: str) -> list[VideoRecord]:
        """Annotated videos of ``stage`` (``train``, ``val``, ``test`` or ``predict``).

        Raises :class:`AnnotationError` naming the file when a split lists no video, or a line
        does not fit (unknown label, label out of range). Shards keep no annotation files."""
        hp = self.hparams
        if self.shard_meta is not None:
            raise ShardError(f"{self.data_root}: shards hold no annotation records; "
                             "their videos are read by the stream")  # fmt: skip
        records = load_split(
            self.format,
            self.data_root,
            self.splits[stage],
            self.class_names,
            self.class_names_file,
            hp.video_dir,
            hp.video_ext,
            labelled=stage != "predict",  # scored stages need labels; see load_split
        )
        if not records:
            where = self.data_root / hp.video_dir if self.format == "folder" else self.data_root
            raise AnnotationError(f"{stage} split {where / self.splits[stage]} lists no videos")
        return records

    def evaluate_as(self, record: InputConfig) -> list[str]:
        """Evaluate (test, validate, predict) with the views a checkpoint's input record says.

        Evaluation options this config sets (``num_spatial_crops``, ``num_temporal_views``,
        ``test_short_side``) still win; what describes the model (sampler, frames, rate, crop,
        mean, std) is taken from the record. Returns one line per value that differs from
        this config's, for the caller to show (nothing is changed silently)."""
        hp = self.hparams
        given = {k: hp[k] for k in VIEW_OPTIONS if hp.get(k) is not None}
        config = record.with_views(**given)
        if self.class_names and len(self.class_names) == len(config.class_names):
            config = replace(config, class_names=tuple(self.class_names))
        notes = [f"data.{d}" for d in self.input_config.differences(config)
                 if not d.startswith(("scheme", "preset", "one_crop", "tokens"))]  # fmt: skip
        self.input_config = config
        self.view_spec = config.view_spec(self.view_spec.backend, hp.decode_short_side)
        for stage in ("val", "test", "predict"):
            self.datasets.pop(stage, None)
        return notes

    def protocol(self) -> dict[str, str]:
        """How clips are cut in training, validation and test, in words (logged with the
        config and stated in the test summary)."""
        s, hp = self.view_spec, self.hparams
        clip = {
            "dense": f"{s.num_frames} frames over rate {s.sampling_rate} x {s.num_frames} / 30 "
            "x fps source frames (official dense)",
            "centred": f"{s.num_frames} frames {s.sampling_rate} apart",
            "segment": f"{s.num_frames} frames, one per equal segment",
        }[s.sampler]
        low, high = hp.train_scale
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

    def make_dataset(self, stage: str) -> VideoDataset:
        """Build the dataset of one stage (training transforms only for ``train``)."""
        hp = self.hparams
        train = stage == "train"
        transform = None
        if train:
            transform = TrainTransform(
                hp.crop_size, tuple(hp.train_scale), self.horizontal_flip,
                self.inverse_uniform_scale,
            )  # fmt: skip
        if self.shard_meta is not None:
            return self._shard_dataset(stage, transform)
        records = self._records.pop(stage, None) or self.records(stage)
        return VideoDataset(
            records,
            self.view_spec,
            train=train,
            transform=transform,
            max_decode_retries=hp.max_decode_retries,
        )

    def _shard_dataset(self, stage: str, transform: TrainTransform | None):
        """The LitData stream of one stage's split (imports litdata)."""
        from lightning_tsf.data.streaming import ShardVideoDataset

        hp = self.hparams
        info = self._shard_split(stage)
        stream = input_dir(split_dir(self.data_root, self.splits[stage]), hp.storage_options,
                           hp.cache_dir, hp.max_cache_size)  # fmt: skip
        return ShardVideoDataset(
            stream.pop("input_dir"), self.view_spec, train=stage == "train",
            num_records=int(info["records"]), num_videos=int(info["videos"]),
            transform=transform, seed=self._seed(), max_decode_retries=hp.max_decode_retries,
            **stream,
        )  # fmt: skip

    def _seed(self) -> int:
        return global_seed() if self.hparams.seed is None else self.hparams.seed

    def setup(self, stage: str | None = None) -> None:
        """Read the annotation files needed by a Trainer stage (fit/validate/test/predict)."""
        wanted = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
            None: ["train", "val", "test"],
        }[stage]
        for name in wanted:
            if name not in self.datasets:
                self.datasets[name] = self.make_dataset(name)

    def _dataset(self, stage: str) -> VideoDataset:
        if stage not in self.datasets:
            self.datasets[stage] = self.make_dataset(stage)
        return self.datasets[stage]

    @property
    def num_workers(self) -> int:
        """Workers per process: as configured, or (``None``) from the cores it may use."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return default_num_workers(devices)

    def eval_batch_size(self) -> int:
        """Evaluation batches hold whole temporal clips (all their spatial crops), so a clip's
        crops are cut from one decode in one worker: ``batch_size`` rounded down to a multiple
        of ``num_spatial_crops`` (at least one clip)."""
        crops = self.view_spec.num_spatial_crops
        return max(crops, self.batch_size // crops * crops)

    def _loader(self, stage: str) -> DataLoader:
        hp = self.hparams
        if self.shard_meta is not None:
            return self._shard_loader(stage)
        dataset = self._dataset(stage)
        train = stage == "train"
        batch_size = self.batch_size if train else self.eval_batch_size()
        sampler: DistributedSampler | None = None
        generator = None
        if train:
            seed = global_seed() if hp.seed is None else hp.seed
            sampler = SeededTrainSampler(
                dataset, seed, skip=lambda: batches_done_this_epoch(self.trainer) * batch_size
            )
            # The loader's own generator: creating an iterator (each epoch, and on a resume
            # mid-epoch) then takes nothing from the global RNG that dropout and mixup use.
            generator = torch.Generator().manual_seed(seed)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                sampler = DistributedEvalSampler(dataset)
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=generator,
            drop_last=train and len(dataset) >= batch_size,  # never zero batches
            num_workers=workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and workers > 0,
            prefetch_factor=hp.prefetch_factor if workers > 0 else None,
            multiprocessing_context=hp.multiprocessing_context if workers > 0 else None,
        )

    def _shard_loader(self, stage: str) -> DataLoader:
        """LitData's loader over a shard stream: training batches of ``batch_size`` clips (the
        last partial one dropped: the exact global batch), evaluation batches of whole videos
        (``eval_batch_size // views``, at least one), nothing dropped. Built fresh per stage:
        the stream sees the process group of the Trainer that asks."""
        from lightning_tsf.data.streaming import ShardLoader, collate_views

        hp = self.hparams
        self.datasets.pop(stage, None)  # LitData reads the rank/world size when built
        dataset = self._dataset(stage)
        train = stage == "train"
        views = self.view_spec.num_views
        batch_size = self.batch_size if train else max(1, self.eval_batch_size() // views)
        workers = self.num_workers
        loader = ShardLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            drop_last=train,
            collate_fn=None if train else collate_views,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and workers > 0,
            prefetch_factor=hp.prefetch_factor if workers > 0 else None,
            multiprocessing_context=hp.multiprocessing_context if workers > 0 else None,
            trainer_epoch=(lambda: current_epoch(self.trainer)) if train else None,
            batches_done=(lambda: batches_done_this_epoch(self.trainer)) if train else None,
            saved_state=self._take_shard_state if train else None,
            # object storage over plain http (a loopback or on-prem server), in every worker
            worker_init_fn=(worker_init(storage_options_for(self.data_root,
                                                            hp.storage_options))
                            if self.remote and workers > 0 else None),  # fmt: skip
            # workers' base seed from the loader's own generator, not the global RNG (mixup)
            generator=torch.Generator().manual_seed(self._seed()) if train else None,
        )
        if train:
            self._shard_train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """The shard training stream's position, saved in every checkpoint (Lightning builds
        the train loader before it restores its own copy of it, so it never restores that)."""
        loader = self._shard_train_loader
        return {"shard_train": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep the saved stream position for the train loader's first epoch after a resume."""
        self._shard_state = state_dict.get("shard_train")

    def _take_shard_state(self) -> dict | None:
        state, self._shard_state = self._shard_state, None
        return state

    def train_dataloader(self) -> DataLoader:
        """Shuffled random clips, one per video (:class:`SeededTrainSampler`: under DDP each
        rank its share; resumed mid-epoch, the epoch's remaining clips, drawn as before)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """All views of all validation videos, in order, never padded under DDP."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """All views of all test videos, in order, never padded under DDP."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """All views of all predict videos, in order, never padded under DDP."""
        return self._loader("predict")

    def check_videos(
        self, stages: tuple[str, ...] = ("train", "val", "test"), num_workers: int | None = None
    ) -> list[tuple[str, str]]:
        """Decode-check every video of the given stages; return ``(path, reason)`` of bad ones.
        (Shards hold only videos that decoded when written: see ``OUT/<split>.failed.txt``.)"""
        if self.shard_meta is not None:
            return []
        paths = [r.path for stage in stages for r in self.records(stage)]
        workers = self.num_workers if num_workers is None else num_workers
        return check_videos(paths, backend=self.hparams.backend, num_workers=workers)
