"""Frames that carry their index as a barcode robust to lossy x264 at small sizes, and writers of
the awkward files the readers must agree on (variable frame rate, B-frames, display rotation).

The barcode is a 2×5 grid of black/white blocks (bit ``b`` at row ``b // 5``, column ``b % 5``)
over the top half of the frame, so a 64×48 frame has 12-pixel blocks; :func:`read_barcode` reads
the block centres at any decoded size (the frame may be scaled, never cropped).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

BITS, COLS, ROWS = 10, 5, 2  # up to 1023 frames


def barcode_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(H, W, 3) uint8: a colour gradient, with ``index`` as a barcode in the top half."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 3 + y) % 100 + 80, (y * 2) % 100 + 80, np.full_like(x, 110)], -1)
    frame = frame.astype(np.uint8)
    bh, bw = height // (2 * ROWS), width // COLS
    for bit in range(BITS):
        r, c = divmod(bit, COLS)
        frame[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255 if (index >> bit) & 1 else 0
    return frame


def barcode_video(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) frames of :func:`barcode_frame`."""
    return np.stack([barcode_frame(i, height, width) for i in range(num_frames)])


def read_barcode(frame: np.ndarray) -> int:
    """The index :func:`barcode_frame` painted into ``frame`` (decoded at any size); raises if a
    block is neither clearly black nor clearly white (a blend of two frames, say)."""
    height, width = frame.shape[:2]
    bh, bw = height / (2 * ROWS), width / COLS
    value = 0
    for bit in range(BITS):
        r, c = divmod(bit, COLS)
        y, x = int((r + 0.5) * bh), int((c + 0.5) * bw)
        level = float(frame[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].mean())
        if 70 < level < 185:
            raise ValueError(f"bit {bit} unreadable (level {level:.0f})")
        value |= (level >= 185) << bit
    return value


def read_barcodes(frames: np.ndarray, rotation: int = 0) -> list[int]:
    """Indices of decoded frames; ``rotation`` (counter-clockwise degrees, as the file's display
    matrix says) is undone first, so upright frames of a rotated source read back."""
    return [read_barcode(np.rot90(f, -(rotation // 90))) for f in frames]


def write_barcode_video(
    path: Path,
    num_frames: int,
    fps: float = 30,
    *,
    height: int = 48,
    width: int = 64,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Lossy x264 (default options: B-frames, long GOP) of :func:`barcode_video` frames.

    ``pts`` with ``time_base``: the frames' presentation timestamps (irregular: variable frame
    rate). ``rotation``: a display matrix rotating by that many degrees counter-clockwise.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options or {"crf": "18", "preset": "veryfast"})
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(barcode_frame(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def vfr_pts(num_frames: int, seed: int = 0) -> list[int]:
    """Irregular increasing timestamps in 1/1000 s: gaps of 5..80 ms (frame rate 12..200)."""
    gaps = np.random.default_rng(seed).integers(5, 80, num_frames)
    return [0, *np.cumsum(gaps[1:]).tolist()]
