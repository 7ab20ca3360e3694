"""Writing videos with PyAV (H.264), shared by the synthetic generator, ``tsf prepare`` and tests.

Files are written to a temporary name and renamed when complete, so an interrupted job never
leaves a truncated file that a resumed job would take for a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

# Lossless H.264 in full-chroma 4:4:4 (decord decodes it; RGB round trip within ±1 per value).
LOSSLESS = {"pix_fmt": "yuv444p", "options": {"qp": "0", "preset": "ultrafast"}}


def container_format(path: str | Path) -> str:
    """Muxer for a file name: Matroska for .webm/.mkv (H.264 is not allowed in WebM proper, but
    readers probe the content, so SSv2's ``<id>.webm`` names keep working), else from suffix."""
    return "matroska" if Path(path).suffix.lower() in (".webm", ".mkv") else "mp4"


class VideoWriter:
    """Incremental H.264 writer: ``with VideoWriter(path, w, h, fps) as w: w.write(rgb)``."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float | Fraction = 30,
        *,
        pix_fmt: str = "yuv420p",
        options: dict[str, str] | None = None,
        codec: str = "libx264",
        metadata: dict[str, str] | None = None,
    ) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        self.container = av.open(str(self.tmp), "w", format=container_format(self.path))
        self.container.metadata.update(metadata or {})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = pix_fmt
        self.stream.options = dict(options or {"crf": "18", "preset": "veryfast"})
        self._av = av

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def close(self, ok: bool = True) -> None:
        """Flush and move into place (``ok``), or discard the partial file."""
        if ok:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float = 30,
    *,
    lossless: bool = True,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames to an H.264 file (lossless 4:4:4 by default)."""
    frames = iter(frames)
    first = next(frames)
    settings = dict(LOSSLESS) if lossless else {"pix_fmt": "yuv420p", "options": None}
    if pix_fmt:
        settings["pix_fmt"] = pix_fmt
    if options:
        settings["options"] = options
    h, w = first.shape[:2]
    with VideoWriter(path, w, h, fps, **settings) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return Path(path)
