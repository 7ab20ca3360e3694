"""Evaluation views: the one path from a video file to the clips that the test protocol scores,
and the one function that averages view scores per video.

A video gives ``num_temporal_views × num_spatial_crops`` views; view ``v`` is temporal clip
``v // num_spatial_crops`` and spatial crop ``v % num_spatial_crops``. Each temporal clip is
decoded once and all its spatial crops are cut from that one decode. The dataset (``tsf test``,
validation, ``tsf predict``) and inference on files (:mod:`lightning_tsf.inference`) both call
:func:`temporal_view` / :func:`spatial_view`, so they see the same pixels; both average with
:func:`average_views`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.decode import BACKENDS, VideoReader, make_reader
from lightning_tsf.data.sampling import SAMPLERS, sample_indices
from lightning_tsf.data.transforms import resize_short_side, spatial_crop


@dataclass(frozen=True)
class ViewSpec:
    """How clips are cut from a video (defaults: the paper's 8×32 clips, 224 crops, 1 view).

    ``test_short_side``: the short side an evaluation clip is resized to before its crops are
    cut (None: ``crop_size``; the official 1-crop test uses 256: the rule lives in
    :func:`~lightning_tsf.data.inputs.resolve_input_config`, and a model's views come from its
    :class:`~lightning_tsf.data.inputs.InputConfig`).
    ``decode_short_side`` asks the decoder to scale sources down while decoding (None: decode
    at the source size).
    """

    sampler: str = "dense"
    num_frames: int = 8
    sampling_rate: int = 32
    crop_size: int = 224
    num_spatial_crops: int = 1
    num_temporal_views: int = 1
    backend: str = "auto"
    decode_short_side: int | None = None
    test_short_side: int | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in [
            ("sampler", self.sampler, SAMPLERS),
            ("backend", self.backend, BACKENDS),
            ("num_spatial_crops", self.num_spatial_crops, (1, 3)),
        ]:
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; expected one of {allowed}")

    @property
    def num_views(self) -> int:
        """Views per video."""
        return self.num_temporal_views * self.num_spatial_crops

    @property
    def centre_view(self) -> int:
        """The middle temporal clip's centre crop: the view shown in pictures."""
        return (self.num_temporal_views // 2) * self.num_spatial_crops + self.num_spatial_crops // 2

    def split(self, view: int) -> tuple[int, int]:
        """``(temporal clip, spatial crop)`` of view ``view``."""
        return divmod(view, self.num_spatial_crops)


def open_source(source: str | VideoReader, spec: ViewSpec) -> tuple[VideoReader, bool]:
    """``(reader, owned)``: a reader of the spec's backend for a path (``owned``: the caller
    closes it), or the given reader (a file's or an in-memory video's, as shards hold)."""
    if isinstance(source, VideoReader):
        return source, False
    return make_reader(source, spec.backend, spec.decode_short_side), True


def decode_clip(
    source: str | VideoReader,
    spec: ViewSpec,
    temporal: int = 0,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode one clip of ``source`` (a path or a reader): ``(T, H, W, 3)`` uint8 frames at the
    sampler's indices; files and shard bytes are cut by this one function.

    ``train=True`` draws a random clip with ``rng``; otherwise temporal clip ``temporal`` of
    ``spec.num_temporal_views``. Raises :class:`~lightning_tsf.data.decode.VideoDecodeError`.
    """
    reader, owned = open_source(source, spec)
    try:
        return reader.get_frames(_clip_indices(reader, spec, temporal, train, rng))
    finally:
        if owned:
            reader.close()


def _clip_indices(
    reader: VideoReader, spec: ViewSpec, temporal: int, train: bool, rng: np.random.Generator | None
) -> np.ndarray:
    return sample_indices(
        spec.sampler,
        len(reader),
        spec.num_frames,
        spec.sampling_rate,
        fps=reader.fps,
        train=train,
        view=temporal,
        num_views=spec.num_temporal_views,
        rng=rng,
    )


def clip_frame_indices(
    source: str | VideoReader, spec: ViewSpec, temporal: int = 0
) -> list[int]:
    """The source frame numbers of evaluation clip ``temporal`` of ``source``: the frames
    :func:`decode_clip` reads, for labelling pictures. Opens the video without decoding it."""
    reader, owned = open_source(source, spec)
    try:
        return [int(i) for i in _clip_indices(reader, spec, temporal, False, None)]
    finally:
        if owned:
            reader.close()


def resize_clip(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """Decoded ``(T, H, W, 3)`` frames with the short side resized to ``test_short_side`` (or
    the crop size): ``(T, C, H', W')`` uint8, ready for :func:`spatial_view`."""
    return resize_short_side(frames, spec.test_short_side or spec.crop_size)


def temporal_view(source: str | VideoReader, spec: ViewSpec, temporal: int) -> Tensor:
    """Temporal clip ``temporal`` of a path or reader decoded once and :func:`resize_clip`-ed."""
    return resize_clip(decode_clip(source, spec, temporal), spec)


def spatial_view(resized: Tensor, spec: ViewSpec, spatial: int) -> Tensor:
    """Spatial crop ``spatial`` of a :func:`temporal_view`: ``(T, C, crop, crop)`` uint8."""
    return spatial_crop(resized, spec.crop_size, spatial, spec.num_spatial_crops)


def clip_views(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """The spatial crops of one decoded clip ``(T, H, W, 3)``: ``(num_spatial_crops, T, C,
    crop, crop)`` uint8. Also used for clips at indices chosen elsewhere (timeline windows)."""
    resized = resize_clip(frames, spec)
    return torch.stack([spatial_view(resized, spec, s) for s in range(spec.num_spatial_crops)])


def window_clips(
    reader: VideoReader, windows: Sequence[tuple[float, float, np.ndarray]]
) -> Iterator[tuple[tuple[float, float, np.ndarray], np.ndarray]]:
    """``(window, frames (T, H, W, 3))`` of each window (a timeline's
    :func:`~lightning_tsf.data.sampling.sliding_windows`, frame indices ascending), in order.

    The video is read once, front to back (:meth:`VideoReader.iter_frames` of the union of the
    windows' frames): each frame is decoded once and a window goes out as soon as its last
    frame is in; only frames that a later window still needs are held, so memory stays that of
    about one window however long the video.
    """
    if not windows:
        return
    lows = np.minimum.accumulate([int(w[2].min()) for w in windows][::-1])[::-1]
    union = np.unique(np.concatenate([w[2] for w in windows]))
    held: dict[int, np.ndarray] = {}
    next_window = 0
    for index, frame in reader.iter_frames(union.tolist()):
        held[index] = frame
        while next_window < len(windows) and int(windows[next_window][2].max()) <= index:
            window = windows[next_window]
            yield window, np.stack([held[int(i)] for i in window[2]])
            next_window += 1
            low = int(lows[next_window]) if next_window < len(windows) else index + 1
            for i in [i for i in held if i < low]:
                del held[i]


def read_views(source: str | VideoReader, spec: ViewSpec) -> Tensor:
    """All views of one video (a path or a reader, opened once), ``(V, T, C, crop, crop)``
    uint8, in view order."""
    reader, owned = open_source(source, spec)
    try:
        clips = [decode_clip(reader, spec, t) for t in range(spec.num_temporal_views)]
    finally:
        if owned:
            reader.close()
    return torch.cat([clip_views(frames, spec) for frames in clips])


def average_views(video_index: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Average the rows of ``scores`` ``(N, K)`` that belong to the same video.

    ``video_index`` ``(N,)`` names each row's video. Returns ``(videos, mean)``: the distinct
    video indices in ascending order ``(V,)`` and their mean scores ``(V, K)`` (float32).
    """
    videos, inverse = torch.unique(video_index.long().cpu(), return_inverse=True)
    x = scores.detach().float().cpu()
    total = torch.zeros(len(videos), x.shape[1]).index_add_(0, inverse, x)
    count = torch.bincount(inverse, minlength=len(videos)).clamp_min(1).unsqueeze(1)
    return videos, total / count


@dataclass
class VideoScores:
    """Per-video results averaged from their views: ``video_index`` ``(V,)`` ascending,
    ``labels`` ``(V,)``, ``paths``, ``rows`` (name → ``(V, K)`` mean over the video's valid
    views) and ``errors`` (path → one-line reason) of the videos no view of which decoded."""

    video_index: Tensor
    labels: Tensor
    paths: list[str]
    rows: dict[str, Tensor]
    errors: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.video_index)


class ViewAccumulator:
    """The one per-video accumulator: view rows come in batch by batch (``tsf test``,
    ``tsf predict``, the dashboard callbacks, :class:`~lightning_tsf.predictor.Predictor`),
    whole videos go out averaged with :func:`average_views`.

    :meth:`complete` hands out the videos whose views are all in (streaming: predict, the
    Predictor); :meth:`result` all of them (test). Under DDP, :meth:`state` of every rank is
    gathered and :meth:`merge`-d first.
    """

    def __init__(self) -> None:
        self._videos: dict[int, dict[str, Any]] = {}

    def add(
        self,
        video_index: Sequence[int] | Tensor,
        label: Sequence[int] | Tensor,
        path: Sequence[str],
        valid: Sequence[bool] | Tensor | None = None,
        errors: Sequence[str] | None = None,
        **rows: Tensor,
    ) -> None:
        """One batch of views: per view its video, label, path, whether it decoded (and why
        not, in ``errors``); ``rows`` hold one row per *valid* view, in batch order."""
        vids = torch.as_tensor(video_index).tolist()
        labels = torch.as_tensor(label).tolist()
        ok = [True] * len(vids) if valid is None else torch.as_tensor(valid).bool().tolist()
        if len(ok) == 1 and len(vids) > 1:
            ok = ok * len(vids)
        row = 0
        for i, v in enumerate(vids):
            entry = self._videos.setdefault(
                int(v), {"label": int(labels[i]), "path": str(path[i]), "seen": 0, "rows": {},
                         "error": ""},
            )  # fmt: skip
            entry["seen"] += 1
            if not ok[i]:
                reason = errors[i] if errors is not None and errors[i] else "cannot decode"
                entry["error"] = entry["error"] or reason
                continue
            for name, values in rows.items():
                entry["rows"].setdefault(name, []).append(values[row].detach().float().cpu())
            row += 1

    def __len__(self) -> int:
        return len(self._videos)

    def state(self) -> dict[int, dict[str, Any]]:
        """What this accumulator holds, for ``all_gather_object`` under DDP."""
        return self._videos

    def merge(self, states: Sequence[dict[int, dict[str, Any]]]) -> None:
        """Add the :meth:`state` of other accumulators (other ranks' videos)."""
        for state in states:
            for v, entry in state.items():
                mine = self._videos.get(v)
                if mine is None or mine is entry:
                    self._videos[v] = entry
                    continue
                mine["seen"] += entry["seen"]
                mine["error"] = mine["error"] or entry["error"]
                for name, values in entry["rows"].items():
                    mine["rows"].setdefault(name, []).extend(values)

    def complete(self, num_views: int) -> VideoScores:
        """Pop and average the videos of which ``num_views`` views are in."""
        return self.pop([v for v, e in self._videos.items() if e["seen"] >= num_views])

    def result(self) -> VideoScores:
        """Pop and average every video."""
        return self.pop(list(self._videos))

    def pop(self, vids: Sequence[int]) -> VideoScores:
        """Pop and average the videos ``vids`` (in ascending order)."""
        entries = [(v, self._videos.pop(v)) for v in sorted(vids)]
        errors = {e["path"]: e["error"] for _, e in entries if not e["rows"]}
        good = [(v, e) for v, e in entries if e["rows"]]
        names = sorted({n for _, e in good for n in e["rows"]})
        rows: dict[str, Tensor] = {}
        index = torch.tensor([v for v, e in good for _ in e["rows"][names[0]]] if good else [],
                             dtype=torch.long)  # fmt: skip
        for name in names:
            stacked = torch.stack([x for _, e in good for x in e["rows"][name]])
            rows[name] = average_views(index, stacked)[1]
        return VideoScores(
            video_index=torch.tensor([v for v, _ in good], dtype=torch.long),
            labels=torch.tensor([e["label"] for _, e in good], dtype=torch.long),
            paths=[e["path"] for _, e in good],
            rows=rows,
            errors=errors,
        )
