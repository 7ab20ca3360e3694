"""Video decoding behind one small interface: PyAV or decord, from a file or from bytes.

One reader class per backend (:class:`PyAVReader`, :class:`DecordReader`), each opening either
source: a file (``path``) or a video held in memory (``data``: a shard sample, decoded without
a file; ``path`` then names it in errors). ``backend: auto``, the default, is PyAV on every
file and every sample: the exact reader (frame ``i`` is always the ``i``-th frame shown), and
the fastest on prepared files. A file PyAV cannot order (:class:`FrameOrderError`) is refused
with what to do, never read another way; ``decord`` and ``pyav`` are honoured as named.

A reader is a cheap, picklable object holding only its source: the decoder itself is opened
lazily on first use, inside whichever process uses it. A decord ``VideoReader`` created in a
dataset's ``__init__`` hangs forked DataLoader workers and cannot be pickled for spawned ones,
so datasets create one reader per sample in ``__getitem__``.

Every reader returns frame ``i`` as the ``i``-th frame in presentation order, upright: a display
rotation in the container (phones write one) is applied as players apply it, and ``tsf prepare``
writes upright frames, so a prepared copy reads the same as its source.

Every failure (missing, zero-byte, truncated, not a video, no video stream) is raised as
:class:`VideoDecodeError` carrying the path, so callers handle one exception type.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from lightning_tsf.data.names import BACKENDS, PREPARED_TAG
from lightning_tsf.data.pyav_index import FrameIndex, frame_index, keyframe_interval
from lightning_tsf.data.video_reader import (
    FrameOrderError,
    VideoDecodeError,
    VideoReader,
    check_source,
    scaled_size,
)

__all__ = [
    "BACKENDS", "PREPARED_TAG", "DecordReader", "FrameOrderError", "PyAVReader",
    "VideoDecodeError", "VideoReader", "display_size", "keyframe_interval", "make_bytes_reader",
    "make_reader", "probe_size", "scaled_size", "upright_rgb",
]  # fmt: skip

log = logging.getLogger(__name__)
OUT_OF_ORDER = "decoded frames out of timestamp order (B-frames in AVI?): frame positions unknown"


def open_av(path: str, data: bytes | None = None):
    """An open PyAV container with a video stream set to one decoder thread: of the file
    ``path``, or of the in-memory video ``data`` (then ``path`` only names it in errors)."""
    import av

    check_source(path, data)
    try:
        container = av.open(path if data is None else io.BytesIO(data))
    except Exception as exc:
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    container.streams.video[0].codec_context.thread_count = 1  # one core per worker
    return container


def probe_size(path: str, data: bytes | None = None) -> tuple[int, int]:
    """Return ``(width, height)`` of the first video stream as displayed (after its display
    rotation, as every reader returns frames), of the file ``path`` or the bytes ``data``.
    Decodes the first frame: PyAV shows the display matrix on decoded frames only."""
    container = open_av(path, data)
    try:
        for frame in container.decode(container.streams.video[0]):
            return display_size(frame)
    except Exception as exc:  # av raises many error types; all mean "unreadable"
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    finally:
        container.close()
    raise VideoDecodeError(path, "no frames")


def display_size(frame) -> tuple[int, int]:
    """(width, height) of a decoded PyAV frame as displayed (after its display rotation)."""
    turns = _quarter_turns(frame)
    return (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)


def upright_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PyAV frame, rotated as its display matrix says (as players and
    decord show it) and scaled to the displayed ``size`` (width, height) when given."""
    turns = _quarter_turns(frame)
    w, h = size or display_size(frame)
    if turns % 2:
        w, h = h, w
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns of a frame's display matrix (flips are not applied)."""
    return int(round(frame.rotation / 90)) % 4


class DecordReader(VideoReader):
    """decord backend: random access via ``get_batch`` on the sampled indices only, no bridge;
    a file by its path, bytes through ``io.BytesIO``."""

    def __init__(self, path: str, short_side: int | None = None, data: bytes | None = None):
        super().__init__(path, short_side, data)
        self._vr = None
        self._fallback: VideoReader | None = None

    def _open(self):
        if self._vr is None:
            check_source(self.path, self.data)
            import decord

            size = (-1, -1)
            if self.short_side is not None:
                w, h = probe_size(self.path, self.data)
                if (w, h) != scaled_size(w, h, self.short_side):
                    size = scaled_size(w, h, self.short_side)
            source = self.path if self.data is None else io.BytesIO(self.data)
            try:
                self._vr = decord.VideoReader(
                    source, ctx=decord.cpu(0), width=size[0], height=size[1], num_threads=1
                )
            except Exception as exc:
                raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc
            if len(self._vr) == 0:
                raise VideoDecodeError(self.path, "no frames")
        return self._vr

    def __len__(self) -> int:
        return len(self._open())

    @property
    def fps(self) -> float:
        try:
            return float(self._open().get_avg_fps())
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(self.path, f"frame rate: {type(exc).__name__}: {exc}") from exc

    def _decode(self, indices: list[int]) -> np.ndarray:
        vr = self._open()
        if self._fallback is not None:
            return self._fallback.get_frames(indices)
        # decord decodes each distinct index once; repeats are expanded in numpy.
        uniq, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        try:
            frames = vr.get_batch(uniq.tolist()).asnumpy()
        except Exception as exc:
            # decord 0.6.0 cannot copy out frames of some widths (16, 24, 48, 72, ...): its
            # "DECORDArrayCopyFromTo: The size must exactly match" check. PyAV reads them.
            if "CopyFromTo" not in str(exc):
                raise
            self._fallback = PyAVReader(self.path, self.short_side, self.data)
            return self._fallback.get_frames(indices)
        return frames if len(uniq) == len(indices) else frames[inverse]

    def close(self) -> None:
        self._vr = self._fallback = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_vr": None, "_fallback": None}


class PyAVReader(VideoReader):
    """PyAV backend (``auto`` and ``pyav``), one decoder thread, exact frame identity on every
    file it accepts; a file by its path, bytes through ``io.BytesIO`` (:func:`open_av`).

    Frame ``i`` is the ``i``-th frame in presentation order (what decord returns too), found
    through the stream's :class:`~.pyav_index.FrameIndex`: on a plain file a table of the
    demuxed timestamps, on a file written by ``tsf prepare`` its frame rate, so a sampled frame
    more than one keyframe interval ahead is reached by a seek and a clip costs about its own
    frames, not its span. A file whose frames cannot be told apart is refused
    (:class:`FrameOrderError`). Frames come back upright (:func:`upright_rgb`)."""

    def __init__(self, path: str, short_side: int | None = None, data: bytes | None = None):
        super().__init__(path, short_side, data)
        self._index: FrameIndex | None = None
        self._container = None  # open from first use until close(): one open per sample

    def _open_container(self):
        if self._container is None:
            self._container = open_av(self.path, self.data)
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_container": None}

    def _frame_index(self, container) -> FrameIndex:
        if self._index is None:
            self._index = frame_index(container, self.path)
        return self._index

    def __len__(self) -> int:
        return self._frame_index(self._open_container()).frames

    @property
    def fps(self) -> float:
        return float(self._frame_index(self._open_container()).fps)

    def _decode(self, indices: list[int]) -> np.ndarray:
        decoded = dict(self._stream(sorted(set(indices))))
        return np.stack([decoded[i] for i in indices])

    def iter_frames(
        self, indices: Sequence[int], chunk: int = 64
    ) -> Iterator[tuple[int, np.ndarray]]:
        try:
            yield from self._stream(sorted({int(i) for i in indices}))
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc

    def _stream(self, targets: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode the ascending distinct ``targets``, yielding each ``(index, frame)`` as soon
        as it is decoded: one pass, seeking forward only where the index says so
        (:meth:`~.pyav_index.FrameIndex.should_seek`), and backward to an earlier keyframe for
        an open GOP's leading frames."""
        if not targets:
            return
        container = self._open_container()  # stays open for further reads until close()
        meta = self._frame_index(container)
        stream = container.streams.video[0]
        if targets[0] < 0 or targets[-1] >= meta.frames:
            raise VideoDecodeError(self.path, f"frame index out of range 0..{meta.frames - 1}")
        wanted = set(targets)
        decoded: dict[int, np.ndarray] = {}  # decoded ahead of the target being looked for
        frames, position, size, done = None, -1, None, -1  # decoder iterator, last index
        for target in targets:
            if target in decoded:
                done = target
                yield target, decoded.pop(target)
                continue
            gop = meta.seek_point(target)
            for attempt in range(gop + 1):
                if frames is None or attempt or meta.should_seek(position, target):
                    container.seek(meta.seek_pts(gop - attempt), backward=True,
                                   any_frame=False, stream=stream)  # fmt: skip
                    frames, position = container.decode(stream), -1
                for frame in frames:
                    if frame.pts is None:
                        raise FrameOrderError(self.path, "decoded frame without timestamp")
                    previous, position = position, meta.index(self.path, int(frame.pts))
                    if position <= previous:
                        raise FrameOrderError(self.path, OUT_OF_ORDER)
                    if position in wanted and position > done and position not in decoded:
                        if size is None:
                            size = scaled_size(*display_size(frame), self.short_side)
                        decoded[position] = upright_rgb(frame, size)
                    if position >= target:
                        break
                else:
                    frames = None  # end of stream
                if target in decoded or meta.table is None:
                    break  # prepared files: no earlier seek point to try
            if target not in decoded:
                raise VideoDecodeError(self.path, f"frame {target} not delivered by the decoder")
            done = target
            yield target, decoded.pop(target)


def make_reader(
    path: str, backend: str = "auto", short_side: int | None = None, data: bytes | None = None
) -> VideoReader:
    """Create an (unopened) reader of the file ``path``, or of the in-memory video ``data``
    (``path`` then names it): ``auto`` (the default) and ``pyav`` read with PyAV, ``decord``
    with decord."""
    if backend in ("auto", "pyav"):
        return PyAVReader(path, short_side, data)
    if backend == "decord":
        return DecordReader(path, short_side, data)
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")


def make_bytes_reader(
    data: bytes, name: str, backend: str = "auto", short_side: int | None = None
) -> VideoReader:
    """Create a reader of an in-memory video (a shard sample), ``name`` (its id) naming it in
    errors: :func:`make_reader` on bytes."""
    return make_reader(name, backend, short_side, data)
