"""The reader interface every backend implements, and its errors (see :mod:`.decode`).

A reader reads one video from one of two sources: a file (``path``) or a video held in memory
(``data``, a shard sample; ``path`` then only names it in errors). Each backend is one class
whose opener takes either: everything after opening is shared by both sources.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FrameOrderError(VideoDecodeError):
    """PyAV cannot tell which frame is which in this file (no or repeated timestamps, frames
    decoded out of order). The PyAV reader (``backend: pyav``, and ``auto``, which is PyAV on
    every file) refuses instead of guessing and says what to do; nothing falls back to decord,
    which is not reliable on these files either (see docs/data.md, readers)."""

    ADVICE = (
        "no reader is exact on this file: re-encode it with `tsf prepare` (it decodes frames "
        "in order), or name backend=decord to accept decord's reading"
    )

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, f"{reason}; {self.ADVICE}")


def check_source(path: str, data: bytes | None) -> None:
    """Refuse a missing or empty file (``data`` None) or empty in-memory video up front, with
    a reason every backend shares (decoders word these cases differently)."""
    if data is not None:
        if len(data) == 0:
            raise VideoDecodeError(path, "zero-byte video")
        return
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "zero-byte file")


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Size with the short side at ``short_side`` (aspect kept, even dimensions), or unchanged.

    Only shrinks: a source already at or below ``short_side`` is decoded at its own size.
    """
    if short_side is None or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    if width <= height:
        return short_side, max(2, int(round(height * scale / 2)) * 2)
    return max(2, int(round(width * scale / 2)) * 2), short_side


class VideoReader(ABC):
    """Lazily opened video: ``len(reader)`` frames, ``reader.get_frames(indices)`` → uint8 array.

    ``path`` is the file to read, or with ``data`` (the video's bytes) only its name in errors.
    ``short_side`` asks the decoder to scale frames down so the short side is at most that many
    pixels, which is much cheaper than decoding full size and resizing afterwards.
    """

    def __init__(self, path: str, short_side: int | None = None, data: bytes | None = None):
        self.path = str(path)
        self.short_side = short_side
        # a litdata memoryview must not outlive its worker's buffer: keep a copy
        self.data = None if data is None else bytes(data)

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames in the video (opens the file on first call)."""

    @property
    @abstractmethod
    def fps(self) -> float:
        """Average frame rate read from the container (the dense sampler's clip span uses it)."""

    @abstractmethod
    def _decode(self, indices: list[int]) -> np.ndarray:
        """Decode the given frame indices into a (T, H, W, 3) uint8 array."""

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames ``indices`` (any order, repeats allowed): (T, H, W, 3) uint8."""
        idx = [int(i) for i in indices]
        try:
            frames = self._decode(idx)
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc
        if frames.ndim != 4 or frames.shape[0] != len(idx):
            raise VideoDecodeError(self.path, f"decoded {frames.shape[0]} of {len(idx)} frames")
        return frames

    def iter_frames(
        self, indices: Sequence[int], chunk: int = 64
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for the distinct ``indices`` in ascending order, decoded in one
        pass (long videos: a timeline's windows, each frame decoded once and not all held).
        Here by :meth:`get_frames` on ``chunk`` indices at a time; PyAV streams them."""
        wanted = sorted({int(i) for i in indices})
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            yield from zip(part, self.get_frames(part))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the decoder (the reader can be reopened by using it again)."""
