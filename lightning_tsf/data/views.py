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

from dataclasses import dataclass

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
    cut (None: ``crop_size``; the official 1-crop test uses 256, see the DataModule).
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


def decode_clip(
    path: str,
    spec: ViewSpec,
    temporal: int = 0,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode one clip of ``path``: ``(T, H, W, 3)`` uint8 frames at the sampler's indices.

    ``train=True`` draws a random clip with ``rng``; otherwise temporal clip ``temporal`` of
    ``spec.num_temporal_views``. Raises :class:`~lightning_tsf.data.decode.VideoDecodeError`.
    """
    reader = make_reader(path, spec.backend, spec.decode_short_side)
    try:
        return reader.get_frames(_clip_indices(reader, spec, temporal, train, rng))
    finally:
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


def clip_frame_indices(path: str, spec: ViewSpec, temporal: int = 0) -> list[int]:
    """The source frame numbers of evaluation clip ``temporal`` of ``path``: the frames
    :func:`decode_clip` reads, for labelling pictures. Opens the video without decoding it."""
    reader = make_reader(path, spec.backend, spec.decode_short_side)
    try:
        return [int(i) for i in _clip_indices(reader, spec, temporal, False, None)]
    finally:
        reader.close()


def resize_clip(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """Decoded ``(T, H, W, 3)`` frames with the short side resized to ``test_short_side`` (or
    the crop size): ``(T, C, H', W')`` uint8, ready for :func:`spatial_view`."""
    return resize_short_side(frames, spec.test_short_side or spec.crop_size)


def temporal_view(path: str, spec: ViewSpec, temporal: int) -> Tensor:
    """Temporal clip ``temporal`` decoded once and :func:`resize_clip`-ed."""
    return resize_clip(decode_clip(path, spec, temporal), spec)


def spatial_view(resized: Tensor, spec: ViewSpec, spatial: int) -> Tensor:
    """Spatial crop ``spatial`` of a :func:`temporal_view`: ``(T, C, crop, crop)`` uint8."""
    return spatial_crop(resized, spec.crop_size, spatial, spec.num_spatial_crops)


def clip_views(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """The spatial crops of one decoded clip ``(T, H, W, 3)``: ``(num_spatial_crops, T, C,
    crop, crop)`` uint8. Also used for clips at indices chosen elsewhere (timeline windows)."""
    resized = resize_clip(frames, spec)
    return torch.stack([spatial_view(resized, spec, s) for s in range(spec.num_spatial_crops)])


def read_views(path: str, spec: ViewSpec) -> Tensor:
    """All views of one video, ``(V, T, C, crop, crop)`` uint8, in view order."""
    views = [clip_views(decode_clip(path, spec, t), spec) for t in range(spec.num_temporal_views)]
    return torch.cat(views)


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
