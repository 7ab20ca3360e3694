"""Temporal sampling: which frame indices of a video make up one clip.

Two schemes, as in the paper's recipes:

- **dense** (Kinetics, 8×32): ``num_frames`` frames ``sampling_rate`` apart. Training picks a
  random start; evaluation places ``num_views`` clips at the centres of equal parts of the
  possible start range (one view = the centred clip).
- **segment** (SSv2): the video is cut into ``num_frames`` equal segments and one frame is taken
  per segment, at a random position in training and at the centre at evaluation (with several
  views, at evenly spread positions inside each segment). Segment bounds follow the official
  TimeSformer code.

A video shorter than a clip's span never fails: the stride shrinks to fit, and if even stride 1
is too long the last frame is repeated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SAMPLERS = ("dense", "segment")


def dense_indices(
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    *,
    train: bool,
    view: int = 0,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices of a dense clip of ``num_frames`` frames spaced ``sampling_rate`` apart."""
    if video_len <= 0:
        raise ValueError("video_len must be positive")
    if num_frames > 1:
        rate = max(1, min(sampling_rate, (video_len - 1) // (num_frames - 1)))
    else:
        rate = 1
    span = (num_frames - 1) * rate + 1
    delta = max(video_len - span, 0)
    if train:
        start = int((rng or np.random.default_rng()).integers(0, delta + 1))
    else:
        start = int(delta * (2 * view + 1) // (2 * num_views))
    return np.minimum(start + rate * np.arange(num_frames), video_len - 1)


def segment_indices(
    video_len: int,
    num_frames: int,
    *,
    train: bool,
    view: int = 0,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One index per equal segment: random in the segment in training, centred at evaluation."""
    if video_len <= 0:
        raise ValueError("video_len must be positive")
    seg = (video_len - 1) / num_frames
    starts = np.round(seg * np.arange(num_frames)).astype(np.int64)
    ends = np.round(seg * np.arange(1, num_frames + 1)).astype(np.int64)
    if train:
        idx = (rng or np.random.default_rng()).integers(starts, ends + 1)
    else:
        idx = starts + ((ends - starts) * (2 * view + 1)) // (2 * num_views)
    return np.clip(idx, 0, video_len - 1).astype(np.int64)


def sample_indices(
    sampler: str, video_len: int, num_frames: int, sampling_rate: int, **kwargs: Any
) -> np.ndarray:
    """Dispatch to :func:`dense_indices` or :func:`segment_indices` by name.

    ``kwargs`` are their keyword arguments (``train``, ``view``, ``num_views``, ``rng``).
    """
    if sampler == "dense":
        return dense_indices(video_len, num_frames, sampling_rate, **kwargs)
    if sampler == "segment":
        return segment_indices(video_len, num_frames, **kwargs)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
