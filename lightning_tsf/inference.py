"""Running a trained TimeSformer: checkpoint → model and its data settings → views → outputs.

Used by :class:`lightning_tsf.predictor.Predictor` (and so by the commands that run a trained
model on files), the demo's pictures and the dashboard callbacks. Views come from
:mod:`lightning_tsf.data.views`, the same path the dataset uses, and scores are averaged per
video with :func:`~lightning_tsf.data.views.average_views`, as ``tsf test`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.annotations import VIDEO_EXTENSIONS, read_kinetics_csv
from lightning_tsf.data.dataset import VideoBatch
from lightning_tsf.data.decode import VideoDecodeError
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, normalize_video
from lightning_tsf.data.views import ViewSpec, average_views, read_views
from lightning_tsf.models import TimeSformer, create_model, load_checkpoint
from lightning_tsf.models.checkpoint import checkpoint_state, head_classes, read_checkpoint

_MODEL_ARGS = set(inspect.signature(TimeSformer.__init__).parameters) - {"self"}
_SPEC_ARGS = set(inspect.signature(ViewSpec).parameters)


@dataclass
class DataSettings:
    """What a model expects of its input: views, normalisation and class names."""

    spec: ViewSpec = field(default_factory=ViewSpec)
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    class_names: list[str] = field(default_factory=list)


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


def _data_settings(obj: Any, hparams: Mapping[str, Any], model: TimeSformer) -> DataSettings:
    """Views and normalisation saved with a Lightning checkpoint (its DataModule's hparams)."""
    data_hp = obj.get("datamodule_hyper_parameters", {}) if isinstance(obj, Mapping) else {}
    spec = {k: v for k, v in data_hp.items() if k in _SPEC_ARGS and v is not None}
    if "sampler" not in spec and data_hp.get("format") == "ssv2":
        spec["sampler"] = "segment"  # the DataModule's default for SSv2
    spec.setdefault("num_frames", model.num_frames)
    spec.setdefault("crop_size", model.img_size)
    names = hparams.get("class_names") or data_hp.get("class_names") or []
    return DataSettings(
        spec=ViewSpec(**spec),
        mean=tuple(data_hp.get("mean") or DEFAULT_MEAN),
        std=tuple(data_hp.get("std") or DEFAULT_STD),
        class_names=list(names),
    )


def load_model(
    checkpoint: str,
    preset: str | None = None,
    model_config: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[TimeSformer, DataSettings]:
    """Model (eval mode) with the checkpoint's weights, and the data settings saved with it.

    The architecture comes from, in order: ``model_config`` (a YAML of TimeSformer arguments,
    optionally with ``preset``), ``preset``, or the net config stored in a Lightning
    checkpoint's ``hyper_parameters``. ``num_classes`` is taken from the head's weight. The
    file is read with ``weights_only=True``. Official and HF files carry no data settings:
    the defaults (8×32 dense clips at the model's size, mean 0.45 / std 0.225) apply.
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
    model = build_model(config, head_classes(checkpoint_state(obj)))
    load_checkpoint(model, obj)
    return model.eval(), _data_settings(obj, hparams, model)


# ---------------------------------------------------------------------------- inputs and views
def collect_videos(inputs: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` pairs from video files, folders (searched recursively) and annotation
    files (``.csv``/``.txt`` lines ``path label``, paths relative to the file's folder); label
    -1 when unknown. Missing paths are kept, so they are reported as unreadable later."""
    out: list[tuple[str, int]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(p.rglob("*"))
            out += [(str(f), -1) for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
        elif p.suffix.lower() in (".csv", ".txt") and p.is_file():
            out += [(r.path, r.label) for r in read_kinetics_csv(p, p.parent)]
        else:
            out.append((str(p), -1))
    return out


def load_views(path: str, settings: DataSettings) -> tuple[Tensor, np.ndarray]:
    """Decode the views of one video for the model.

    Returns ``(views, frames)``: ``(V, C, T, S, S)`` normalised clips in view order and the
    uint8 frames ``(T, S, S, 3)`` of the centre view, for overlays. Raises
    :class:`~lightning_tsf.data.decode.VideoDecodeError`.
    """
    raw = read_views(path, settings.spec)  # (V, T, C, S, S) uint8
    views = normalize_video(raw.transpose(1, 2), settings.mean, settings.std)  # (V, C, T, S, S)
    frames = raw[settings.spec.centre_view].permute(0, 2, 3, 1).contiguous().numpy()
    return views, frames


@torch.no_grad()
def batched(
    model: TimeSformer, fn: str | Callable[[Tensor], Tensor], views: Tensor, batch_size: int
) -> Tensor:
    """``fn`` (a model method's name, or a function of a batch) over ``views`` in chunks of
    ``batch_size`` on the model's device; float32 results on the CPU."""
    device = next(model.parameters()).device
    call = getattr(model, fn) if isinstance(fn, str) else fn
    return torch.cat([call(c.to(device)).float().cpu() for c in views.split(batch_size)])


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
    """One-line description of a failed video."""
    if isinstance(err, VideoDecodeError):
        return f"error: cannot decode {err.path}: {err.reason.splitlines()[0]}"
    return f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# ---------------------------------------------------------------------------- over a dataloader
@dataclass
class VideoOutputs:
    """Per-view outputs accumulated batch by batch, then averaged per video by :meth:`videos`.

    Batches straight from a DataLoader hold uint8 clips: they are normalised with ``mean`` and
    ``std``; batches that went through a LightningModule's transfer are float already.
    """

    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    features: list[Tensor] = field(default_factory=list)
    logits: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    video_index: list[Tensor] = field(default_factory=list)
    paths: dict[int, str] = field(default_factory=dict)

    @torch.no_grad()
    def add(self, model: TimeSformer, batch: VideoBatch) -> None:
        """Run ``model`` on the batch's decodable clips and keep features and logits."""
        n = batch["video"].shape[0]
        valid = torch.as_tensor(batch.get("valid", True)).bool().expand(n).cpu()
        if not valid.any():
            return
        device = next(model.parameters()).device
        video = batch["video"][valid.to(batch["video"].device)].to(device)
        if video.dtype == torch.uint8:
            video = normalize_video(video, self.mean, self.std)
        feats = model.forward_features(video)
        self.features.append(feats.float().cpu())
        self.logits.append(model.forward_head(feats).float().cpu())
        self.labels.append(torch.as_tensor(batch["label"]).cpu()[valid])
        vidx = torch.as_tensor(batch.get("video_index", torch.arange(n))).cpu()[valid]
        self.video_index.append(vidx)
        paths = batch.get("path") or [""] * n
        self.paths.update(
            {int(v): p for v, p in zip(vidx.tolist(), np.array(paths)[valid.numpy()])}
        )

    def videos(self) -> dict[str, np.ndarray | list[str]]:
        """Per video (sorted by index): ``features`` (V, D), mean softmax ``probs`` (V, K),
        ``labels`` (V,), ``video_index`` (V,), ``paths``."""
        if not self.features:
            empty = np.zeros((0, 0), np.float32)
            none = np.zeros(0, np.int64)
            return {"features": empty, "probs": empty, "labels": none, "video_index": none,
                    "paths": []}  # fmt: skip
        vidx = torch.cat(self.video_index)
        uniq, features = average_views(vidx, torch.cat(self.features))
        _, probs = average_views(vidx, torch.cat(self.logits).softmax(-1))
        labels = torch.zeros(len(uniq), dtype=torch.long)
        labels[torch.searchsorted(uniq, vidx.contiguous())] = torch.cat(self.labels)
        return {
            "features": features.numpy(),
            "probs": probs.numpy(),
            "labels": labels.numpy(),
            "video_index": uniq.numpy(),
            "paths": [self.paths.get(int(v), "") for v in uniq.tolist()],
        }


def collect_outputs(
    model: TimeSformer,
    batches: Iterable[VideoBatch],
    limit: int | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> dict[str, np.ndarray | list[str]]:
    """:meth:`VideoOutputs.videos` of ``model`` (put in eval mode) over a dataloader whose
    uint8 clips are normalised with ``mean``/``std``."""
    was_training = model.training
    model.eval()
    outputs = VideoOutputs(tuple(mean), tuple(std))
    try:
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break
            outputs.add(model, batch)
    finally:
        model.train(was_training)
    return outputs.videos()
