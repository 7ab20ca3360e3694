"""Long videos: the frames of many overlapping windows (a timeline), each frame decoded once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lightning_tsf.data.decode import VideoReader


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
