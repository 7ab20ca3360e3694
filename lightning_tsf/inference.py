"""Running a trained TimeSformer: checkpoint → model and its input record → views → outputs.

Used by :class:`lightning_tsf.predictor.Predictor` (and so by the commands that run a trained
model on files), the demo's pictures and the dashboard callbacks. Views come from
:mod:`lightning_tsf.data.views`, the same path the dataset uses, and scores are averaged per
video with :func:`~lightning_tsf.data.views.average_views`, as ``tsf test`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.annotations import VIDEO_EXTENSIONS, read_kinetics_csv
from lightning_tsf.data.dataset import VideoBatch, decode_error_line
from lightning_tsf.data.decode import VideoDecodeError
from lightning_tsf.data.inputs import InputConfig, official_input_config
from lightning_tsf.data.options import record_from_hparams
from lightning_tsf.data.shard_format import is_shard_folder
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, normalize_video
from lightning_tsf.data.views import VideoScores, ViewAccumulator, ViewSpec, read_views
from lightning_tsf.models import TimeSformer, create_model, load_checkpoint, zoo
from lightning_tsf.models.checkpoint import (
    CheckpointError,
    checkpoint_state,
    head_classes,
    infer_net_config,
    read_checkpoint,
)
from lightning_tsf.models.presets import preset_of

_MODEL_ARGS = set(inspect.signature(TimeSformer.__init__).parameters) - {"self"}


@dataclass
class Prediction:
    """The one prediction record of a video (``tsf predict``, the file commands, the
    :class:`~lightning_tsf.predictor.Predictor`): top-k of the mean softmax of its views."""

    path: str
    label: int  # from an annotation file, else -1
    indices: list[int]
    classes: list[str]
    probs: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``path``, ``label``, ``indices``, ``classes``, ``probs``)."""
        return asdict(self)


def top_k(
    probs: Tensor, k: int, names: Sequence[str]
) -> tuple[list[int], list[str], list[float]]:
    """Indices, names and probabilities (6 decimals) of the ``k`` best classes of one video's
    mean softmax ``(K,)``."""
    p, idx = probs.topk(min(k, probs.shape[-1]))
    ids = idx.tolist()
    return (
        ids,
        [names[i] if i < len(names) else str(i) for i in ids],
        [round(float(x), 6) for x in p],
    )


def predictions(scores: VideoScores, k: int, names: Sequence[str]) -> list[Prediction]:
    """:class:`Prediction` of each video of ``scores`` (its ``probs`` rows)."""
    probs = scores.rows.get("probs", torch.zeros(0, 0))
    return [
        Prediction(path, int(label), *top_k(p, k, names))
        for path, label, p in zip(scores.paths, scores.labels.tolist(), probs)
    ]


# ---------------------------------------------------------------------------- model loading
def _find_net_config(obj: Any) -> dict[str, Any] | None:
    """First nested dict that configures a TimeSformer: LightningCLI's ``{class_path,
    init_args}`` for the net, or a dict of TimeSformer constructor arguments."""
    if isinstance(obj, Mapping):
        if "init_args" in obj and str(obj.get("class_path", "")).endswith(
            ("TimeSformer", "create_model")
        ):
            return dict(obj["init_args"])
        keys = set(obj)
        if {"embed_dim", "depth"} <= keys or "preset" in keys:
            return {k: v for k, v in obj.items() if k in _MODEL_ARGS | {"preset", "name"}}
        for value in obj.values():
            found = _find_net_config(value)
            if found is not None:
                return found
    return None


def build_model(config: Mapping[str, Any], num_classes: int | None = None) -> TimeSformer:
    """A TimeSformer from a config: TimeSformer arguments, optionally ``preset``/``name``."""
    cfg = dict(config)
    preset = cfg.pop("preset", None) or cfg.pop("name", None)
    kwargs = {k: v for k, v in cfg.items() if k in _MODEL_ARGS}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    kwargs.setdefault("drop_path_rate", 0.0)
    return create_model(preset, **kwargs) if preset else TimeSformer(**kwargs)


def read_input_config(
    obj: Mapping[str, Any], model: TimeSformer, source: str = "checkpoint"
) -> InputConfig:
    """The :class:`InputConfig` of a loaded checkpoint, in this order: the record saved with
    it (``input_config``); for a Lightning checkpoint saved before records existed, its
    DataModule's hyper-parameters through the DataModule's own rule; for a zoo file, the zoo's
    official record; else the official Kinetics record at the model's frames and size."""
    name = Path(source).name
    if isinstance(obj.get("input_config"), Mapping):
        return InputConfig.from_dict(obj["input_config"], f"{name}: input_config")
    scheme, preset = model.attention_type, preset_of(model)
    names = obj.get("hyper_parameters", {}).get("class_names") or []
    data_hp = obj.get("datamodule_hyper_parameters")
    if isinstance(data_hp, Mapping) and data_hp:
        return record_from_hparams(data_hp, names, scheme=scheme, preset=preset)
    for entry in zoo.ZOO.values():
        if entry.file == name:
            return entry.input_config
    return official_input_config("K400", model.num_frames, model.img_size, names, scheme,
                                 preset)  # fmt: skip


def load_model(
    checkpoint: str,
    preset: str | None = None,
    model_config: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[TimeSformer, InputConfig]:
    """Model (eval mode) with the checkpoint's weights, and what it expects as input
    (:func:`read_input_config`).

    The architecture comes from, in order: ``model_config`` (a YAML of TimeSformer arguments,
    optionally with ``preset``), ``preset``, the net config stored in a Lightning checkpoint's
    ``hyper_parameters``, or what an official/HF file's tensors say
    (:func:`~lightning_tsf.models.checkpoint.infer_net_config`: sizes, frames, scheme).
    ``overrides`` (``attention_type``, ``num_frames``, ``img_size``) go over it.
    ``num_classes`` is taken from the head's weight. The file is read with
    ``weights_only=True``. ``checkpoint`` may be ``zoo:NAME`` (fetched into the cache).
    """
    if checkpoint.startswith(zoo.PREFIX):
        checkpoint = str(zoo.resolve(checkpoint))
    obj = read_checkpoint(checkpoint)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{checkpoint}: expected a checkpoint dict, got {type(obj).__name__}")
    hparams = obj.get("hyper_parameters", {})
    config: dict[str, Any] | None = None
    if model_config:
        import yaml

        config = _find_net_config(yaml.safe_load(Path(model_config).read_text())) or {}
    elif preset:
        config = {"preset": preset}
    else:
        config = _find_net_config(hparams) or infer_net_config(checkpoint_state(obj))
    if config is None:
        raise ValueError(
            f"{checkpoint}: no model configuration stored in the checkpoint and none readable "
            "from its tensors; pass --preset NAME or --model-config YAML"
        )
    config.update({k: v for k, v in (overrides or {}).items() if v is not None})
    model = build_model(config, head_classes(checkpoint_state(obj)))
    load_checkpoint(model, obj)
    record = read_input_config(obj, model, checkpoint)
    if record.scheme not in (None, model.attention_type):
        record = replace(record, scheme=model.attention_type)
    if (record.num_frames, record.crop_size) != (model.num_frames, model.img_size):
        record = _resized(record, model.num_frames, model.img_size)
    return model.eval(), record


def _resized(record: InputConfig, num_frames: int, crop_size: int) -> InputConfig:
    """The record of a model run at other frames or size (``--num-frames``/``--img-size``):
    short sides that were the crop size follow it, larger ones stay (at least the crop)."""

    def side(s: int) -> int:
        return crop_size if s == record.crop_size else max(s, crop_size)

    return replace(record, num_frames=num_frames, crop_size=crop_size,
                   test_short_side=side(record.test_short_side),
                   one_crop_short_side=side(record.one_crop_short_side))  # fmt: skip


# ---------------------------------------------------------------------------- inputs and views
class NoVideosError(ValueError):
    """An input that names no video: an empty folder, a folder named like a video, an empty
    annotation file."""


def collect_videos(inputs: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` pairs from video files, folders (searched recursively) and annotation
    files (``.csv``/``.txt`` lines ``path label``, paths relative to the file's folder); label
    -1 when unknown. Missing files are kept, so they are reported as unreadable later; a
    folder or annotation file with no video in it is a :class:`NoVideosError` naming it."""
    out: list[tuple[str, int]] = []
    for item in inputs:
        p = Path(item)
        if is_shard_folder(item):
            raise NoVideosError(
                f"{item}: a `tsf shard` output, not video files; score it with `tsf predict "
                f"--config X.yaml --data.data_root={item} --ckpt_path CKPT` (or `tsf test`)"
            )
        if p.is_dir():
            files = [f for f in sorted(p.rglob("*")) if f.suffix.lower() in VIDEO_EXTENSIONS]
            found = [(str(f), -1) for f in files if f.is_file()]
            if not found:
                exts = " ".join(VIDEO_EXTENSIONS)
                raise NoVideosError(f"{item}: a folder with no video files in it ({exts})")
            out += found
        elif p.suffix.lower() in (".csv", ".txt") and p.is_file():
            found = [(r.path, r.label) for r in read_kinetics_csv(p, p.parent)]
            if not found:
                raise NoVideosError(f"{item}: an annotation file that lists no videos")
            out += found
        else:
            out.append((str(p), -1))
    if not out:
        raise NoVideosError("no videos given")
    return out


def load_views(
    path: str, spec: ViewSpec, mean: Sequence[float], std: Sequence[float]
) -> tuple[Tensor, np.ndarray]:
    """Decode the views of one video for the model, outside any loader (the demo's pictures;
    tests' independent reference for the dataset path's views).

    Returns ``(views, frames)``: ``(V, C, T, S, S)`` clips normalised with ``mean``/``std`` in
    view order and the uint8 frames ``(T, S, S, 3)`` of the centre view, for overlays. Raises
    :class:`~lightning_tsf.data.decode.VideoDecodeError`.
    """
    raw = read_views(path, spec)  # (V, T, C, S, S) uint8
    views = normalize_video(raw.transpose(1, 2), mean, std)  # (V, C, T, S, S)
    frames = raw[spec.centre_view].permute(0, 2, 3, 1).contiguous().numpy()
    return views, frames


@torch.no_grad()
def clip_frame_tokens(model: TimeSformer, clips: Tensor) -> Tensor:
    """Per-frame tokens ``(B, T, D)`` of clips ``(B, C, T, H, W)``: each frame's normalised
    patch tokens averaged over its patches."""
    from einops import rearrange

    if model.attention_type == "space_only":
        raise ValueError("space_only averages frames inside the model: no per-frame tokens")
    tokens, _ = model.forward_tokens(clips)
    patches = model.norm(tokens)[:, 1:]  # (B, N*T, D), order (h w t)
    return rearrange(patches, "b (n t) d -> b t n d", t=clips.shape[2]).mean(2)


def error_line(err: Exception) -> str:
    """The one wording of a video that cannot be read: ``cannot decode PATH: reason``."""
    if isinstance(err, VideoDecodeError):
        return decode_error_line(err)
    return f"cannot decode: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# ---------------------------------------------------------------------------- over a dataloader
@torch.no_grad()
def add_batch(
    accumulator: ViewAccumulator,
    model: TimeSformer,
    batch: VideoBatch,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> None:
    """Run ``model`` on a batch's decodable clips and add their cls ``features`` and softmax
    ``probs`` to ``accumulator``. Batches straight from a DataLoader hold uint8 clips (then
    normalised with ``mean``/``std``); batches after a LightningModule's transfer are float."""
    n = batch["video"].shape[0]
    valid = torch.as_tensor(batch.get("valid", True)).bool().expand(n).cpu()
    rows: dict[str, Tensor] = {}
    if valid.any():
        device = next(model.parameters()).device
        video = batch["video"][valid.to(batch["video"].device)].to(device)
        if video.dtype == torch.uint8:
            video = normalize_video(video, mean, std)
        feats = model.forward_features(video)
        rows = {"features": feats, "probs": model.forward_head(feats).float().softmax(-1)}
    index = batch.get("video_index", torch.arange(n))
    accumulator.add(index, batch["label"], batch.get("path") or [""] * n, valid,
                    batch.get("error"), **rows)  # fmt: skip


def collect_outputs(
    model: TimeSformer,
    batches: Iterable[VideoBatch],
    limit: int | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> dict[str, np.ndarray | list[str]]:
    """Per video of a dataloader (``model`` put in eval mode, uint8 clips normalised with
    ``mean``/``std``): ``features`` (V, D), mean softmax ``probs`` (V, K), ``labels``,
    ``video_index`` (ascending) and ``paths``."""
    was_training = model.training
    model.eval()
    accumulator = ViewAccumulator()
    try:
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break
            add_batch(accumulator, model, batch, mean, std)
    finally:
        model.train(was_training)
    return outputs_dict(accumulator.result())


def outputs_dict(scores: VideoScores) -> dict[str, np.ndarray | list[str]]:
    """:class:`VideoScores` as numpy: ``features``, ``probs``, ``labels``, ``video_index``,
    ``paths`` (empty ``(0, 0)`` arrays when no video decoded)."""
    empty = np.zeros((0, 0), np.float32)
    return {
        "features": scores.rows["features"].numpy() if len(scores) else empty,
        "probs": scores.rows["probs"].numpy() if len(scores) else empty,
        "labels": scores.labels.numpy(),
        "video_index": scores.video_index.numpy(),
        "paths": list(scores.paths),
    }
