"""Running a trained TimeSformer on video files: model loading, input discovery, view decoding.

Shared by ``tsf predict-videos``, ``tsf extract-features`` and ``tsf heatmap``. Videos of any
size, frame rate and container are decoded with the data package's readers (decord, PyAV
fallback), scaled down while decoding when larger than needed, and cut into the evaluation views
of the paper's protocol (temporal clips x spatial crops), exactly as ``VideoDataset`` does.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.annotations import read_class_names, read_kinetics_csv
from lightning_tsf.data.decode import VideoDecodeError, make_reader
from lightning_tsf.data.sampling import sample_indices
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, EvalTransform
from lightning_tsf.models import TimeSformer, create_model, load_checkpoint
from lightning_tsf.models.checkpoint import read_checkpoint

VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv")
_MODEL_ARGS = set(inspect.signature(TimeSformer.__init__).parameters) - {"self"}
_DATA_ARGS = ("num_frames", "sampling_rate", "crop_size", "sampler", "mean", "std")


@dataclass
class ClipSettings:
    """How views are cut from a video (defaults: the paper's 8x32 clips, 224 crops)."""

    num_frames: int = 8
    sampling_rate: int = 32
    sampler: str = "dense"
    crop_size: int = 224
    num_spatial_crops: int = 1
    num_temporal_views: int = 1
    mean: Sequence[float] = DEFAULT_MEAN
    std: Sequence[float] = DEFAULT_STD
    backend: str = "decord"

    @property
    def num_views(self) -> int:
        return self.num_spatial_crops * self.num_temporal_views

    @property
    def centre_view(self) -> int:
        """The middle temporal clip's centre crop: the view shown in heatmaps."""
        return (self.num_temporal_views // 2) * self.num_spatial_crops + self.num_spatial_crops // 2


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


def _head_classes(state: Mapping[str, Any]) -> int | None:
    for key, value in state.items():
        if key.endswith(("head.weight", "classifier.weight")) and isinstance(value, Tensor):
            return int(value.shape[0])
    return None


def load_model(
    checkpoint: str,
    preset: str | None = None,
    model_config: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[TimeSformer, dict[str, Any]]:
    """Model with the checkpoint's weights, and data settings found in the checkpoint.

    The architecture comes from, in order: ``model_config`` (a YAML of TimeSformer arguments,
    optionally with ``preset``), ``preset``, or the net config stored in a Lightning
    checkpoint's ``hyper_parameters``. ``num_classes`` is taken from the head's weight. The
    file is read with ``weights_only=True``. The second value holds ``class_names`` and the
    clip settings (``num_frames``, ``crop_size``...) saved with the checkpoint, if any.
    """
    obj = read_checkpoint(checkpoint)
    hparams = obj.get("hyper_parameters", {}) if isinstance(obj, Mapping) else {}
    config: dict[str, Any] | None = None
    if model_config:
        import yaml

        config = _find_net_config(yaml.safe_load(Path(model_config).read_text())) or {}
    elif preset:
        config = {"preset": preset}
    else:
        config = _find_net_config(hparams)
    if config is None:
        raise ValueError(
            f"{checkpoint}: no model configuration stored in the checkpoint; "
            "pass --preset NAME or --model-config YAML"
        )
    config.update(overrides or {})
    state = obj.get("state_dict") or obj.get("model_state") or obj
    model = build_model(config, _head_classes(state) if isinstance(state, Mapping) else None)
    load_checkpoint(model, obj)
    extras: dict[str, Any] = {}
    data_hp = obj.get("datamodule_hyper_parameters", {}) if isinstance(obj, Mapping) else {}
    for key in _DATA_ARGS:
        if key in data_hp and data_hp[key] is not None:
            extras[key] = data_hp[key]
    names = hparams.get("class_names") or data_hp.get("class_names")
    if names:
        extras["class_names"] = list(names)
    extras.setdefault("num_frames", model.num_frames)
    extras.setdefault("crop_size", model.img_size)
    return model.eval(), extras


def collect_videos(inputs: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` pairs from video files, folders (searched recursively) and annotation
    files (``.csv``/``.txt`` lines ``path label``, paths relative to the file's folder); label
    -1 when unknown. Missing paths are kept, so they are reported as unreadable later."""
    out: list[tuple[str, int]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += [(str(f), -1) for f in sorted(p.rglob("*")) if f.suffix.lower() in VIDEO_EXTS]
        elif p.suffix.lower() in (".csv", ".txt") and p.is_file():
            out += [(r.path, r.label) for r in read_kinetics_csv(p, p.parent)]
        else:
            out.append((str(p), -1))
    return out


def load_views(path: str, settings: ClipSettings) -> tuple[Tensor, np.ndarray]:
    """Decode the evaluation views of one video.

    Returns ``(views, frames)``: ``(num_views, C, T, S, S)`` normalised clips (view ``v`` =
    temporal clip ``v // crops``, spatial crop ``v % crops``) and the uint8 frames
    ``(T, S, S, 3)`` of the centre view, for overlays. Raises :class:`VideoDecodeError`.
    """
    s = settings
    transform = EvalTransform(s.crop_size, s.num_spatial_crops, s.mean, s.std)
    # Decode no larger than needed: the transform resizes the short side to crop_size anyway.
    reader = make_reader(path, s.backend, short_side=s.crop_size)
    views, frames = [], None
    try:
        n = len(reader)
        for temporal in range(s.num_temporal_views):
            idx = sample_indices(
                s.sampler, n, s.num_frames, s.sampling_rate,
                train=False, view=temporal, num_views=s.num_temporal_views,
            )  # fmt: skip
            resized = transform.resize(reader.get_frames(idx))  # (T, C, H, W) uint8
            for crop in range(s.num_spatial_crops):
                views.append(transform.crop(resized, crop))
                if len(views) - 1 == s.centre_view:
                    frames = _crop_uint8(resized, s.crop_size, crop, s.num_spatial_crops)
    finally:
        reader.close()
    return torch.stack(views), frames


def _crop_uint8(resized: Tensor, size: int, index: int, num_crops: int) -> np.ndarray:
    from lightning_tsf.data.transforms import spatial_crop_offsets

    y, x = spatial_crop_offsets(*resized.shape[-2:], size, index, num_crops)
    return resized[:, :, y : y + size, x : x + size].permute(0, 2, 3, 1).contiguous().numpy()


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the inference commands: model source and clip settings."""
    parser.add_argument("inputs", nargs="+", help="video files, folders or annotation files")
    parser.add_argument("--checkpoint", required=True, help="Lightning/official/HF checkpoint")
    parser.add_argument("--preset", help="model preset, when the checkpoint has no config")
    parser.add_argument("--model-config", help="YAML of TimeSformer arguments")
    parser.add_argument("--attention-type", help="override the attention scheme")
    parser.add_argument("--class-names", help="class-name file (one per line, or JSON)")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: checkpoint)")
    parser.add_argument("--sampling-rate", type=int, help="frame stride of dense clips")
    parser.add_argument("--sampler", choices=("dense", "segment"), help="clip sampler")
    parser.add_argument("--crop-size", type=int, help="crop size (default: model img_size)")
    parser.add_argument("--num-spatial-crops", type=int, default=1, choices=(1, 3))
    parser.add_argument("--num-temporal-views", type=int, default=1)
    parser.add_argument("--backend", default="decord", choices=("decord", "pyav"))
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def setup_from_args(args: argparse.Namespace) -> tuple[TimeSformer, ClipSettings, list[str]]:
    """Model (on ``args.device``), clip settings and class names from parsed arguments."""
    overrides = {"attention_type": args.attention_type} if args.attention_type else None
    model, extras = load_model(args.checkpoint, args.preset, args.model_config, overrides)
    model.to(args.device)
    settings = ClipSettings(
        num_frames=args.num_frames or extras["num_frames"],
        sampling_rate=args.sampling_rate or extras.get("sampling_rate", 32),
        sampler=args.sampler or extras.get("sampler") or "dense",
        crop_size=args.crop_size or extras["crop_size"],
        num_spatial_crops=args.num_spatial_crops,
        num_temporal_views=args.num_temporal_views,
        mean=tuple(extras.get("mean", DEFAULT_MEAN)),
        std=tuple(extras.get("std", DEFAULT_STD)),
        backend=args.backend,
    )
    names = read_class_names(args.class_names) if args.class_names else extras.get("class_names")
    return model, settings, list(names or [])


@torch.no_grad()
def batched(model: TimeSformer, fn: str, views: Tensor, batch_size: int) -> Tensor:
    """``getattr(model, fn)`` over ``views`` in chunks of ``batch_size`` (on the model's device)."""
    device = next(model.parameters()).device
    outs = [getattr(model, fn)(c.to(device)).float().cpu() for c in views.split(batch_size)]
    return torch.cat(outs)


def error_line(err: Exception) -> str:
    """One-line description of a failed video."""
    if isinstance(err, VideoDecodeError):
        return f"error: cannot decode {err.path}: {err.reason.splitlines()[0]}"
    return f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
