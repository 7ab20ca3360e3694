"""PyAV's presentation-order index: which decoded frame is frame ``i``, and where to seek for it.

On a plain file the packets are demuxed once per open (no decoding) and their timestamps
sorted: that table gives the length, maps each decoded frame's pts to its index (variable frame
rate and B-frames included) and says which keyframe to seek to for a frame (the one before it
in decode order; the one before that for the leading frames of an open GOP). A file whose
frames cannot be told apart by timestamp (missing or repeated pts) is refused. Files written by
``tsf prepare`` (constant rate, no B-frames, the keyframe interval in their tag, see
:func:`keyframe_interval`) skip the table when their header counts the frames (mp4): the pts of
frame ``i`` follows from the frame rate.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from lightning_tsf.data.names import PREPARED_TAG
from lightning_tsf.data.video_reader import FrameOrderError, VideoDecodeError


def keyframe_interval(metadata: dict[str, str]) -> int | None:
    """The keyframe interval ``tsf prepare`` wrote into a container's comment tag, or None."""
    for key, value in metadata.items():
        if key.lower() == "comment" and value.startswith(PREPARED_TAG):
            try:
                return max(1, int(value[len(PREPARED_TAG) :].split()[0]))
            except (ValueError, IndexError):
                return None
    return None


class FrameIndex(NamedTuple):
    """Length, rate and the pts <-> frame index map of one video stream (see the module doc)."""

    frames: int
    fps: Fraction
    time_base: Fraction
    start: int  # pts of frame 0
    keyint: int | None  # keyframe interval of a prepared file, else None
    table: np.ndarray | None = None  # plain files: pts of each frame, presentation order
    key_pts: np.ndarray | None = None  # plain files: pts of each GOP's keyframe
    seek_gop: np.ndarray | None = None  # plain files: the GOP to seek to for each frame

    def index(self, path: str, pts: int) -> int:
        """Frame index of a presentation timestamp; a pts off the table or the grid is refused."""
        if self.table is not None:
            i = int(np.searchsorted(self.table, pts))
            if i < len(self.table) and self.table[i] == pts:
                return i
            raise VideoDecodeError(path, f"decoded a frame (pts {pts}) the demuxer did not list")
        exact = (pts - self.start) * self.time_base * self.fps
        if abs(exact - round(exact)) > Fraction(1, 10):
            raise VideoDecodeError(path, f"pts {pts} off the frame grid of a prepared file")
        return int(round(exact))

    def seek_point(self, target: int) -> int:
        """GOP to seek to for frame ``target`` (prepared files: the frame itself)."""
        return target if self.seek_gop is None else int(self.seek_gop[target])

    def seek_pts(self, point: int) -> int:
        """Timestamp to seek (backward, to a keyframe) for a seek point."""
        if self.key_pts is not None:
            return int(self.key_pts[point])
        return self.start + int(point / self.fps / self.time_base)

    def should_seek(self, position: int, target: int) -> bool:
        """Seek rather than decode on from ``position``: the target lies in a later GOP (plain
        files) or more than one keyframe interval ahead (prepared files)."""
        if position < 0 or position >= target:
            return True
        if self.seek_gop is not None:
            return bool(self.seek_gop[target] > self.seek_gop[position])
        return target - position > self.keyint


def frame_index(container, path: str) -> FrameIndex:
    """The index of ``container``'s first video stream: from the header and the prepared tag
    when they suffice, else from the demuxed timestamps (:func:`pts_table`)."""
    stream = container.streams.video[0]
    fps = Fraction(stream.average_rate or stream.guessed_rate or 30)
    tb = Fraction(stream.time_base)
    keyint = keyframe_interval(container.metadata)
    if keyint is None or not stream.frames:  # Matroska headers have no frame count
        return pts_table(container, path, fps, tb)
    return FrameIndex(int(stream.frames), fps, tb, int(stream.start_time or 0), keyint)


def pts_table(container, path: str, fps: Fraction, tb: Fraction) -> FrameIndex:
    """Demux every packet of the video stream (no decoding) into the presentation-order
    table of timestamps and the keyframe to seek to for each frame."""
    stream = container.streams.video[0]
    pts, keys = [], []  # in decode order
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        if packet.pts is None:
            raise FrameOrderError(path, "packets without timestamps: frame order unknown")
        if packet.is_keyframe:
            keys.append(len(pts))
        pts.append(int(packet.pts))
    if not pts:
        raise VideoDecodeError(path, "no frames")
    if not keys or keys[0] != 0:
        raise VideoDecodeError(path, "stream does not start with a keyframe")
    order = np.argsort(pts, kind="stable")
    table = np.asarray(pts, dtype=np.int64)[order]
    if len(table) > 1 and not np.all(np.diff(table) > 0):
        raise FrameOrderError(path, "repeated timestamps: frames cannot be told apart")
    # GOP of each packet (decode order), then each frame's seek point (presentation order):
    # its GOP's keyframe, or the one before for frames shown before their GOP's keyframe.
    gop = np.cumsum(np.isin(np.arange(len(pts)), keys)) - 1
    key_index = np.searchsorted(table, np.asarray(pts)[keys])  # keyframes' frame indices
    frame_gop = gop[order]
    leading = np.arange(len(table)) < key_index[frame_gop]
    seek_gop = np.maximum(frame_gop - leading, 0)
    return FrameIndex(len(table), fps, tb, int(table[0]), None, table, table[key_index], seek_gop)
