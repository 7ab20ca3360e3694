"""Temporal sampling: which frame indices of a video make up one clip.

Three samplers:

- **dense** (Kinetics, K600; also HR 16×16 and L 96×4), as the official TimeSformer decoder
  does it: a clip spans ``sampling_rate * num_frames / 30 * fps`` source frames (256 for 8×32
  at 30 fps, 512 at 60 fps, 213.3 at 25 fps). Training starts it at ``uniform(0, delta)``,
  ``delta = max(video_frames - span, 0)``; test clip ``k`` of ``K`` starts at ``delta * k / K``
  (the single test clip at frame 0). Indices are ``linspace(start, start + span - 1,
  num_frames)`` in float32, clamped to the video and truncated, so the stride is
  ``(span - 1) / (num_frames - 1)``, not ``sampling_rate``. A video shorter than the span
  repeats its last frame.
- **centred**: ``num_frames`` frames exactly ``sampling_rate`` apart whatever the frame rate;
  evaluation places clips at the centres of equal parts of the possible start range (the
  earlier default of this project; kept as an option).
- **segment** (SSv2): the video is cut into ``num_frames`` equal segments and one frame is taken
  per segment, at a random position in training and at the middle at test (with several
  views, at evenly spread positions inside each segment), with the official segment bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SAMPLERS = ("dense", "centred", "segment")
TARGET_FPS = 30  # the official decoder's reference frame rate for ``sampling_rate``


def dense_indices(
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    *,
    train: bool,
    view: int = 0,
    num_views: int = 1,
    fps: float = TARGET_FPS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices of the official dense clip (see the module doc) of a ``fps`` video."""
    if video_len <= 0:
        raise ValueError("video_len must be positive")
    span = sampling_rate * num_frames / TARGET_FPS * fps
    delta = max(video_len - span, 0.0)
    if train:
        start = (rng or np.random.default_rng()).uniform(0, delta)
    else:
        start = delta * view / num_views
    index = torch.linspace(start, start + span - 1, num_frames)  # float32, as the official code
    return torch.clamp(index, 0, video_len - 1).long().numpy()


def centred_indices(
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    *,
    train: bool,
    view: int = 0,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``num_frames`` frames ``sampling_rate`` apart (the stride shrinks for short videos)."""
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
    sampler: str,
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    fps: float = TARGET_FPS,
    **kwargs: Any,
) -> np.ndarray:
    """Dispatch to the sampler named ``sampler`` (one of :data:`SAMPLERS`).

    ``fps`` is the video's frame rate (used by ``dense``); ``kwargs`` are the samplers' keyword
    arguments (``train``, ``view``, ``num_views``, ``rng``).
    """
    if sampler == "dense":
        return dense_indices(video_len, num_frames, sampling_rate, fps=fps, **kwargs)
    if sampler == "centred":
        return centred_indices(video_len, num_frames, sampling_rate, **kwargs)
    if sampler == "segment":
        return segment_indices(video_len, num_frames, **kwargs)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def sliding_windows(
    video_len: int, fps: float, window_s: float, stride_s: float, num_frames: int
) -> list[tuple[float, float, np.ndarray]]:
    """Windows of ``window_s`` seconds every ``stride_s`` seconds over a video, for a timeline.

    Returns ``(start_s, end_s, indices)`` per window: the window covers source frames
    ``round(start_s·fps)`` up to (not including) ``round(end_s·fps)``, and ``indices`` spreads
    the clip's ``num_frames`` over them with the segment sampler's test positions (one frame
    at the middle of each equal part). Only whole windows are kept: a window that would run
    past the end of the video is dropped, so a tail shorter than the stride is not scored. A
    video shorter than one window gives one window over the whole video.
    """
    if video_len <= 0 or fps <= 0:
        raise ValueError(f"empty video ({video_len} frames at {fps} fps)")
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window and stride must be positive (got {window_s} s, {stride_s} s)")
    duration = video_len / fps
    if duration <= window_s:
        bounds = [(0.0, duration)]
    else:
        count = int(np.floor((duration - window_s) / stride_s + 1e-9)) + 1
        starts = [round(float(i * stride_s), 9) for i in range(count)]
        bounds = [(start, round(start + window_s, 9)) for start in starts]
    windows = []
    for start, end in bounds:
        first = min(int(round(start * fps)), video_len - 1)
        last = min(max(int(round(end * fps)), first + 1), video_len)
        windows.append((start, end, first + segment_indices(last - first, num_frames, train=False)))
    return windows
