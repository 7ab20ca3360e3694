"""Video decoding behind one small interface: decord, PyAV, or ``auto`` (chosen per file).

A reader is a cheap, picklable object holding only a path: the decoder itself is opened lazily on
first use, inside whichever process uses it. A decord ``VideoReader`` created in a dataset's
``__init__`` hangs forked DataLoader workers and cannot be pickled for spawned ones, so datasets
create one reader per sample in ``__getitem__``.

Every reader returns frame ``i`` as the ``i``-th frame in presentation order, upright: a display
rotation in the container (phones write one) is applied as players apply it, and ``tsf prepare``
writes upright frames, so a prepared copy reads the same as its source.

Every failure (missing, zero-byte, truncated, not a video, no video stream) is raised as
:class:`VideoDecodeError` carrying the path, so callers handle one exception type.
"""

from __future__ import annotations

import io
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from lightning_tsf.data.names import BACKENDS, PREPARED_TAG

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FrameOrderError(VideoDecodeError):
    """PyAV cannot tell which frame is which in this file (no or repeated timestamps, frames
    decoded out of order): it refuses instead of guessing; ``auto`` then reads with decord."""


def probe_size(path: str) -> tuple[int, int]:
    """Return ``(width, height)`` of the first video stream as displayed (after its display
    rotation, as every reader returns frames). Decodes the first frame: PyAV shows the display
    matrix on decoded frames only."""
    container = _open_av(path)
    try:
        for frame in container.decode(container.streams.video[0]):
            return display_size(frame)
    except Exception as exc:  # av raises many error types; all mean "unreadable"
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    finally:
        container.close()
    raise VideoDecodeError(path, "no frames")


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


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "zero-byte file")


class VideoReader(ABC):
    """Lazily opened video: ``len(reader)`` frames, ``reader.get_frames(indices)`` → uint8 array.

    ``short_side`` asks the decoder to scale frames down so the short side is at most that many
    pixels, which is much cheaper than decoding full size and resizing afterwards.
    """

    def __init__(self, path: str, short_side: int | None = None) -> None:
        self.path = str(path)
        self.short_side = short_side

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


class DecordReader(VideoReader):
    """decord backend: random access via ``get_batch`` on the sampled indices only, no bridge."""

    def __init__(self, path: str, short_side: int | None = None) -> None:
        super().__init__(path, short_side)
        self._vr = None
        self._fallback: VideoReader | None = None

    def _open(self):
        if self._vr is None:
            _check_file(self.path)
            import decord

            size = (-1, -1)
            if self.short_side is not None:
                w, h = probe_size(self.path)
                if (w, h) != scaled_size(w, h, self.short_side):
                    size = scaled_size(w, h, self.short_side)
            try:
                self._vr = decord.VideoReader(
                    self.path, ctx=decord.cpu(0), width=size[0], height=size[1], num_threads=1
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
            self._fallback = PyAVReader(self.path, self.short_side)
            return self._fallback.get_frames(indices)
        return frames if len(uniq) == len(indices) else frames[inverse]

    def close(self) -> None:
        self._vr = self._fallback = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_vr": None, "_fallback": None}


class PyAVReader(VideoReader):
    """PyAV backend, one decoder thread, exact frame identity on every file it accepts.

    Frame ``i`` is the ``i``-th frame in presentation order (what decord returns too). On a plain
    file the reader demuxes the packets once per open (no decoding) and sorts their timestamps:
    that table gives the length, maps each decoded frame's pts to its index (variable frame rate
    and B-frames included) and says which keyframe to seek to for a frame (the one before it in
    decode order; the one before that for the leading frames of an open GOP). A file whose frames
    cannot be told apart by timestamp (missing or repeated pts) is refused. Files written by
    ``tsf prepare`` (constant rate, no B-frames, the keyframe interval in their tag, see
    :func:`keyframe_interval`) skip the table when their header counts the frames (mp4): the pts
    of frame ``i`` follows from the frame rate, so a sampled frame more than one interval ahead
    is reached by a seek, and a clip costs about its own frames, not its span. Frames come back
    upright (:func:`upright_rgb`)."""

    def __init__(self, path: str, short_side: int | None = None) -> None:
        super().__init__(path, short_side)
        self._meta: _Meta | None = None
        self._container = None  # open from first use until close(): one open per sample

    def _open_container(self):
        if self._container is None:
            self._container = _open_av(self.path)
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_container": None}

    def _metadata(self, container) -> _Meta:
        if self._meta is None:
            stream = container.streams.video[0]
            fps = Fraction(stream.average_rate or stream.guessed_rate or 30)
            tb = Fraction(stream.time_base)
            keyint = keyframe_interval(container.metadata)
            if keyint is None or not stream.frames:  # Matroska headers have no frame count
                self._meta = self._pts_table(container, fps, tb)
            else:
                self._meta = _Meta(int(stream.frames), fps, tb, int(stream.start_time or 0), keyint)
        return self._meta

    def _pts_table(self, container, fps: Fraction, tb: Fraction) -> _Meta:
        """Demux every packet of the video stream (no decoding) into the presentation-order
        table of timestamps and the keyframe to seek to for each frame."""
        stream = container.streams.video[0]
        pts, keys = [], []  # in decode order
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet.pts is None:
                raise FrameOrderError(self.path, "packets without timestamps: frame order unknown")
            if packet.is_keyframe:
                keys.append(len(pts))
            pts.append(int(packet.pts))
        if not pts:
            raise VideoDecodeError(self.path, "no frames")
        if not keys or keys[0] != 0:
            raise VideoDecodeError(self.path, "stream does not start with a keyframe")
        order = np.argsort(pts, kind="stable")
        table = np.asarray(pts, dtype=np.int64)[order]
        if len(table) > 1 and not np.all(np.diff(table) > 0):
            raise FrameOrderError(self.path, "repeated timestamps: frames cannot be told apart")
        # GOP of each packet (decode order), then each frame's seek point (presentation order):
        # its GOP's keyframe, or the one before for frames shown before their GOP's keyframe.
        gop = np.cumsum(np.isin(np.arange(len(pts)), keys)) - 1
        key_index = np.searchsorted(table, np.asarray(pts)[keys])  # keyframes' frame indices
        frame_gop = gop[order]
        leading = np.arange(len(table)) < key_index[frame_gop]
        seek_gop = np.maximum(frame_gop - leading, 0)
        return _Meta(len(table), fps, tb, int(table[0]), None, table, table[key_index], seek_gop)

    def __len__(self) -> int:
        return self._metadata(self._open_container()).frames

    @property
    def fps(self) -> float:
        return float(self._metadata(self._open_container()).fps)

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
        as it is decoded: one pass, seeking forward only where :meth:`_Meta.should_seek` says
        so (and backward to an earlier keyframe for an open GOP's leading frames)."""
        if not targets:
            return
        container = self._open_container()  # stays open for further reads until close()
        meta = self._metadata(container)
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
                        raise FrameOrderError(self.path, "decoded frames out of timestamp order "
                                              "(B-frames in AVI?): frame positions unknown")
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


class _Meta(NamedTuple):
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


def _open_av(path: str, data: bytes | memoryview | None = None):
    """An open PyAV container with a video stream set to one decoder thread: of the file
    ``path``, or of the in-memory video ``data`` (then ``path`` only names it in errors)."""
    import av

    if data is None:
        _check_file(path)
    elif len(data) == 0:
        raise VideoDecodeError(path, "zero-byte video")
    try:
        container = av.open(path if data is None else io.BytesIO(data))
    except Exception as exc:
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    container.streams.video[0].codec_context.thread_count = 1  # one core per worker
    return container


class AutoReader(VideoReader):
    """The default reader (``backend: auto``): the exact one, PyAV, on every file.

    On files written by ``tsf prepare`` (their tag says so) PyAV seeks to each sampled frame,
    the fastest exact reader; elsewhere it maps frames through the demuxer's timestamp table,
    which is exact on variable frame rate, B-frames and open GOPs (where decord shifts frames
    after a seek). A file whose frames PyAV cannot tell apart (:class:`FrameOrderError`:
    B-frames in AVI, no or repeated timestamps) is refused with what to do: decord is not
    reliable there either (on x264 B-frames in AVI it returned other frames in some runs and
    not in others), and ``tsf prepare`` rewrites such a file exactly (it decodes in order).
    The header is opened on first use; the choice survives pickling, open decoders do not."""

    def __init__(self, path: str, short_side: int | None = None) -> None:
        super().__init__(path, short_side)
        self._reader: VideoReader | None = None

    @property
    def reader(self) -> VideoReader:
        """The reader (opens the header on first use)."""
        if self._reader is None:
            reader = PyAVReader(self.path, self.short_side)
            reader._container = _open_av(self.path)
            self._reader = reader
        return self._reader

    def _fall_back(self, err: FrameOrderError) -> VideoReader:
        raise FrameOrderError(
            self.path, f"{err.reason}; no reader is exact on this file: re-encode it with "
            "`tsf prepare` (it decodes frames in order), or name backend=decord to accept "
            "decord's reading"
        ) from err

    def __len__(self) -> int:
        try:
            return len(self.reader)
        except FrameOrderError as err:
            return len(self._fall_back(err))

    @property
    def fps(self) -> float:
        try:
            return self.reader.fps
        except FrameOrderError as err:
            return self._fall_back(err).fps

    def _decode(self, indices: list[int]) -> np.ndarray:
        try:
            return self.reader.get_frames(indices)
        except FrameOrderError as err:
            return self._fall_back(err).get_frames(indices)

    def iter_frames(
        self, indices: Sequence[int], chunk: int = 64
    ) -> Iterator[tuple[int, np.ndarray]]:
        done = -1
        try:
            for index, frame in self.reader.iter_frames(indices, chunk):
                done = index
                yield index, frame
        except FrameOrderError as err:
            rest = [i for i in indices if i > done]
            yield from self._fall_back(err).iter_frames(rest, chunk)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


class PyAVBytesReader(PyAVReader):
    """PyAV on a video held in memory (a shard sample, :mod:`.shards`): the same frame logic
    as :class:`PyAVReader` (prepared bytes: seek by the keyframe tag), no file opened;
    ``name`` (the video's id) names it in errors."""

    def __init__(self, data: bytes, name: str, short_side: int | None = None) -> None:
        super().__init__(name, short_side)
        self.data = bytes(data)  # a litdata memoryview must not outlive its worker's buffer

    def _open_container(self):
        if self._container is None:
            self._container = _open_av(self.path, self.data)
        return self._container


class DecordBytesReader(DecordReader):
    """decord on a video held in memory (``decord.VideoReader(io.BytesIO(data))``)."""

    def __init__(self, data: bytes, name: str, short_side: int | None = None) -> None:
        super().__init__(name, short_side)
        self.data = bytes(data)

    def _open(self):
        if self._vr is None:
            import decord

            if not self.data:
                raise VideoDecodeError(self.path, "zero-byte video")
            size = (-1, -1)
            if self.short_side is not None:
                probe = PyAVBytesReader(self.data, self.path)
                container = probe._open_container()
                try:
                    frame = next(container.decode(container.streams.video[0]))
                    w, h = display_size(frame)
                except Exception as exc:
                    raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc
                finally:
                    probe.close()
                if (w, h) != scaled_size(w, h, self.short_side):
                    size = scaled_size(w, h, self.short_side)
            try:
                self._vr = decord.VideoReader(io.BytesIO(self.data), ctx=decord.cpu(0),
                                              width=size[0], height=size[1], num_threads=1)
            except Exception as exc:
                raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc
            if len(self._vr) == 0:
                raise VideoDecodeError(self.path, "no frames")
        return self._vr

    def _decode(self, indices: list[int]) -> np.ndarray:
        vr = self._open()
        uniq, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        try:
            frames = vr.get_batch(uniq.tolist()).asnumpy()
        except Exception as exc:  # decord's odd-width copy bug: PyAV reads them
            if "CopyFromTo" not in str(exc):
                raise
            return PyAVBytesReader(self.data, self.path, self.short_side).get_frames(indices)
        return frames if len(uniq) == len(indices) else frames[inverse]


def make_bytes_reader(
    data: bytes, name: str, backend: str = "auto", short_side: int | None = None
) -> VideoReader:
    """Create a reader of an in-memory video: ``auto`` and ``pyav`` read with PyAV (shards hold
    prepared bytes, which PyAV seeks exactly), ``decord`` with decord."""
    if backend in ("auto", "pyav"):
        return PyAVBytesReader(data, name, short_side)
    if backend == "decord":
        return DecordBytesReader(data, name, short_side)
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")



def keyframe_interval(metadata: dict[str, str]) -> int | None:
    """The keyframe interval ``tsf prepare`` wrote into a container's comment tag, or None."""
    for key, value in metadata.items():
        if key.lower() == "comment" and value.startswith(PREPARED_TAG):
            try:
                return max(1, int(value[len(PREPARED_TAG) :].split()[0]))
            except (ValueError, IndexError):
                return None
    return None


def make_reader(path: str, backend: str = "auto", short_side: int | None = None) -> VideoReader:
    """Create an (unopened) reader for ``path``: ``auto`` chooses per file (:class:`AutoReader`),
    ``decord`` and ``pyav`` are honoured as named."""
    if backend == "auto":
        return AutoReader(path, short_side)
    if backend == "decord":
        return DecordReader(path, short_side)
    if backend == "pyav":
        return PyAVReader(path, short_side)
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
