"""Scanning a dataset for unreadable videos before any GPU time is spent on it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial

import numpy as np

from lightning_tsf.data.decode import VideoDecodeError, VideoReader, make_reader
from lightning_tsf.data.parallel import parallel_map


def check_video(path: str, backend: str = "auto", full: bool = False) -> str | None:
    """Return why ``path`` cannot be used, or None if it decodes.

    By default the first, middle and last frames are decoded (catching missing, empty,
    non-video, stream-less and most truncated files); ``full=True`` decodes every frame.
    """
    return check_reader(make_reader(path, backend), full)


def check_reader(reader: VideoReader, full: bool = False) -> str | None:
    """:func:`check_video` on an opened reader (a file's, or a shard sample's bytes); closes
    it."""
    try:
        n = len(reader)
        indices = np.arange(n) if full else np.unique([0, n // 2, n - 1])
        for chunk in np.array_split(indices, max(1, len(indices) // 64)):
            reader.get_frames(chunk)
    except VideoDecodeError as err:
        return err.reason
    finally:
        reader.close()
    return None


def check_videos(
    paths: Iterable[str],
    *,
    backend: str = "auto",
    full: bool = False,
    num_workers: int = os.cpu_count() or 1,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Check many videos in parallel; return ``(path, reason)`` for each unreadable one."""
    paths = list(dict.fromkeys(paths))
    func = partial(check_video, backend=backend, full=full)
    results = parallel_map(func, paths, num_workers, "checking", progress)
    return [(p, r) for p, r in zip(paths, results) if r is not None]
