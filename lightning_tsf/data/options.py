"""The DataModule's options in typed groups: LightningCLI shows each as nested keys
(``data.clips.num_frames``, ``data.decode.backend``, ...); ``data_root``, ``format``,
``batch_size`` and ``num_workers`` stay at the top of ``data``.

Earlier configs set every option flat under ``data`` (``data.num_frames``): :func:`upgrade`
moves such keys into their group, one line each naming the new key, for YAML files and command
lines (:func:`upgrade_args`) and for the ``datamodule_hyper_parameters`` of checkpoints written
before the groups existed (:meth:`VideoDataModule.load_from_checkpoint`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

from lightning_tsf.data.clips import ClipSpec
from lightning_tsf.data.inputs import VIEW_OPTIONS, InputConfig, resolve_input_config
from lightning_tsf.data.transforms import TrainTransform


@dataclass(frozen=True)
class ClipOptions(ClipSpec):
    """``data.clips``: the data part of the input record (the fields of
    :class:`~.clips.ClipSpec`, open ones resolved by the format's official defaults) and
    ``train_scale``, the training short-side jitter range ``(min, max)``, whose minimum is the
    official 1-crop test short side."""

    train_scale: tuple[int, int] = (256, 320)

    def __post_init__(self) -> None:
        super().__post_init__()
        scale = tuple(int(x) for x in self.train_scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"train_scale={list(self.train_scale)}; expected [min, max], "
                             "0 < min <= max")  # fmt: skip
        object.__setattr__(self, "train_scale", scale)

    def evaluate_as(self, record: InputConfig, class_names: Sequence[str] = ()) -> InputConfig:
        """A checkpoint's input ``record`` with the evaluation views these options set
        (:data:`~.inputs.VIEW_OPTIONS`; None keeps the record's), and ``class_names`` when
        they are as many as the record's."""
        given = {k: getattr(self, k) for k in VIEW_OPTIONS if getattr(self, k) is not None}
        config = record.with_views(**given)
        if class_names and len(class_names) == len(config.class_names):
            config = replace(config, class_names=tuple(class_names))
        return config

    def record(self, format: str, class_names: Sequence[str] = ()) -> InputConfig:
        """The input record of these options for ``format``
        (:func:`~.inputs.resolve_input_config`)."""
        given = {f.name: getattr(self, f.name) for f in fields(ClipSpec)}
        return resolve_input_config(format, **given, train_scale=self.train_scale,
                                    class_names=class_names)  # fmt: skip


@dataclass(frozen=True)
class AnnotationOptions:
    """``data.annotations``: where a file dataset's splits and class names are.

    Args:
        train_split, val_split, test_split: annotation files (folders for ``folder``) under
            ``data_root``; None = the format's (kinetics: train/val/test.csv; ssv2:
            train.json/validation.json/validation.json; folder: train/val/test sub-folders).
        predict_split: defaults to the test split.
        class_names_file: kinetics: ``classnames.txt`` (optional; one name per line, or JSON
            ``{name: id}``); ssv2: ``labels.json``; folder: none (sorted sub-folder names).
        video_dir, video_ext: SSv2 videos are ``data_root/video_dir/<id><video_ext>``.
        allow_outside_root: accept annotated video paths and class folders that resolve
            (``..``, symlinks) outside ``data_root``/``video_dir``; off: each is an
            :class:`~.annotations.AnnotationError` naming file and line.
    """

    train_split: str | None = None
    val_split: str | None = None
    test_split: str | None = None
    predict_split: str | None = None
    class_names_file: str | None = None
    video_dir: str = ""
    video_ext: str = ".webm"
    allow_outside_root: bool = False


@dataclass(frozen=True)
class AugmentOptions:
    """``data.augment``: training augmentation beyond the clip's random position and crop.

    Args:
        horizontal_flip: None = on for kinetics/folder, off for ssv2 (left/right is in labels).
        inverse_uniform_scale: draw the training short side as ``1 / uniform(1/max, 1/min)``
            (official SSv2); None = on for ssv2, off otherwise.
    """

    horizontal_flip: bool | None = None
    inverse_uniform_scale: bool | None = None

    def resolved(self, format: str) -> AugmentOptions:
        """Open choices filled with the format's: flip except for ssv2, inverse-uniform
        jitter for ssv2 only."""
        flip, inverse = self.horizontal_flip, self.inverse_uniform_scale
        return AugmentOptions(format != "ssv2" if flip is None else flip,
                              format == "ssv2" if inverse is None else inverse)  # fmt: skip

    def transform(self, clips: ClipOptions) -> TrainTransform:
        """The training transform of these (resolved) options at ``clips``' crop and scale."""
        return TrainTransform(
            clips.crop_size,
            tuple(clips.train_scale),
            bool(self.horizontal_flip),
            bool(self.inverse_uniform_scale),
        )


@dataclass(frozen=True)
class DecodeOptions:
    """``data.decode``: how this machine reads videos (not part of the input record).

    Args:
        backend: ``auto`` (PyAV for files, with a one-line refusal where it cannot seek
            exactly), ``decord`` or ``pyav``.
        short_side: decode sources whose short side is larger at this short side.
        max_retries: broken videos replaced in a row before a training sample fails.
    """

    backend: str = "auto"
    short_side: int | None = None
    max_retries: int = 10


@dataclass(frozen=True)
class LoaderOptions:
    """``data.loader``: DataLoader settings and the training draws' seed.

    Args:
        pin_memory: page-locked batches for faster host-to-GPU copies (only with CUDA).
        persistent_workers: keep workers between epochs. Off by default: fresh workers are
            seeded from the main process each epoch, which keeps resumed runs exact.
        prefetch_factor: batches each worker prepares ahead.
        multiprocessing_context: worker start method (None = platform default).
        seed: the training order's and the clips' random draws; None = the run's
            ``seed_everything`` (``tsf fit`` writes it here), else 0.
    """

    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: int = 4
    multiprocessing_context: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class StorageOptions:
    """``data.storage``: where videos come from.

    Args:
        source: ``files`` (videos opened by their annotated paths) or ``shards`` (a
            ``tsf shard`` output at ``data_root``, streamed through LitData); None = ``shards``
            where ``data_root`` holds a ``shards.json`` or is an ``s3://`` URL, else ``files``.
        options: object storage: boto3's ``client("s3", ...)`` keywords (``endpoint_url``,
            ``region_name``, keys); None = the AWS variables. See :mod:`.storage`.
        cache_dir, max_cache_size: object storage: where downloaded chunks are kept (None =
            ``$LIGHTNING_TSF_CACHE/streams``) and how much of them at most.
    """

    source: str | None = None
    options: dict | None = None
    cache_dir: str | None = None
    max_cache_size: str | None = "50GB"


GROUPS: dict[str, type] = {
    "clips": ClipOptions,
    "annotations": AnnotationOptions,
    "augment": AugmentOptions,
    "decode": DecodeOptions,
    "loader": LoaderOptions,
    "storage": StorageOptions,
}
TOP_LEVEL = ("data_root", "format", "batch_size", "num_workers")
# Every earlier flat ``data.<key>``: its group and name there.
RENAMED = {"decode_short_side": ("decode", "short_side"),
           "max_decode_retries": ("decode", "max_retries"),
           "storage_options": ("storage", "options")}  # fmt: skip
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{f.name: (group, f.name) for group, cls in GROUPS.items() for f in fields(cls)
       if group not in ("decode", "storage") or f.name in ("backend", "source", "cache_dir",
                                                          "max_cache_size")},
    **RENAMED,
}  # fmt: skip


def group(value: Any, cls: type) -> Any:
    """``value`` (None, a mapping as saved in checkpoints, or the dataclass) as ``cls``."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
        return cls(**dict(value))
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(value).__name__}")


def plain(value: Any) -> Any:
    """A group as plain types (dicts, lists): how hyper-parameters are saved in checkpoints
    (read back with ``weights_only=True``)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def upgrade(data: Mapping[str, Any], where: str = "data") -> tuple[dict[str, Any], list[str]]:
    """Move earlier flat keys of a ``data`` mapping into their groups.

    Returns the grouped mapping and one line per moved key (``data.num_frames is now
    data.clips.num_frames``); keys already grouped or unknown are left as they are (the
    parser reports unknown ones)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v)
                           for k, v in data.items()}  # fmt: skip
    notes = []
    for key in list(out):
        if key in FLAT_KEYS:
            name, field = FLAT_KEYS[key]
            value = out.pop(key)
            target = out.get(name)
            target = dict(target) if isinstance(target, Mapping) else {}
            target[field] = value
            out[name] = target
            notes.append(f"{where}.{key} is now {where}.{name}.{field}")
    return out, notes


def upgrade_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command-line ``--data.<flat key>=V`` / ``--data.<flat key> V`` as the grouped key."""
    out, notes = [], []
    for arg in args:
        if arg.startswith("--data."):
            key, eq, value = arg[len("--data.") :].partition("=")
            if key in FLAT_KEYS:
                name, field = FLAT_KEYS[key]
                arg = f"--data.{name}.{field}{eq}{value}"
                notes.append(f"--data.{key} is now --data.{name}.{field}")
        out.append(arg)
    return out, notes


def saved_hparams(path: Any, key: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The DataModule arguments saved under ``key`` in checkpoint ``path`` (with
    ``overrides``), earlier flat keys moved to their groups, one warning line each."""
    import torch

    saved = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    grouped, notes = upgrade({**dict(saved.get(key) or {}), **overrides})
    say(notes, f"{path}; earlier flat key")
    return grouped


def record_from_hparams(
    hparams: Mapping[str, Any], class_names: Sequence[str] = (), **model: Any
) -> InputConfig:
    """The input record a DataModule of these saved hyper-parameters (grouped, or flat as
    earlier versions saved them) resolves, with ``model`` fields (``scheme``, ``preset``):
    for checkpoints written before records were saved."""
    grouped, _ = upgrade(hparams)
    clips = group(grouped.get("clips"), ClipOptions)
    record = clips.record(str(grouped.get("format") or "kinetics"), class_names)
    return replace(record, **model)


def say(notes: Sequence[str], why: str) -> None:
    """One ``FutureWarning`` line per moved key."""
    for note in notes:
        warnings.warn(f"{note} ({why})", FutureWarning, stacklevel=3)
