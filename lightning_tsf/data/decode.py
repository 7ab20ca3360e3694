"""Video decoding behind one small interface, with decord as the default backend.

A reader is a cheap, picklable object holding only a path: the decoder itself is opened lazily on
first use, inside whichever process uses it. A decord ``VideoReader`` created in a dataset's
``__init__`` hangs forked DataLoader workers and cannot be pickled for spawned ones, so datasets
create one reader per sample in ``__getitem__``.

Every failure (missing, zero-byte, truncated, not a video, no video stream) is raised as
:class:`VideoDecodeError` carrying the path, so callers handle one exception type.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

BACKENDS = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def probe_size(path: str) -> tuple[int, int]:
    """Return ``(width, height)`` of the first video stream from the header only (no decode)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            ctx = container.streams.video[0].codec_context
            return int(ctx.width), int(ctx.height)
    except VideoDecodeError:
        raise
    except Exception as exc:  # av raises many error types; all mean "unreadable"
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc


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
    """PyAV backend, one decoder thread. Plain files are read as the official TimeSformer does:
    seek to the keyframe before the first sampled frame, then decode forward to the last one.
    Files written by ``tsf prepare`` carry their keyframe interval (:func:`keyframe_interval`);
    there, a sampled frame more than one interval ahead is reached by a seek instead of
    decoding the frames in between, so a clip costs about its own frames, not its span."""

    def __init__(self, path: str, short_side: int | None = None) -> None:
        super().__init__(path, short_side)
        self._meta: _Meta | None = None
        self._container = None  # open from first use until close(): one open per sample

    def _open_container(self):
        if self._container is not None:
            return self._container
        import av

        _check_file(self.path)
        try:
            container = av.open(self.path)
        except Exception as exc:
            raise VideoDecodeError(self.path, f"{type(exc).__name__}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise VideoDecodeError(self.path, "no video stream")
        container.streams.video[0].codec_context.thread_count = 1  # one core per worker
        self._container = container
        return container

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
            n = int(stream.frames or 0)
            if n <= 0 and stream.duration:
                n = int(round(stream.duration * tb * fps))
            if n <= 0 and container.duration:
                n = int(round(container.duration / 1_000_000 * fps))
            if n <= 0:
                raise VideoDecodeError(self.path, "no frames")
            start = int(stream.start_time or 0)
            self._meta = _Meta(n, fps, tb, start, keyframe_interval(container.metadata))
        return self._meta

    def __len__(self) -> int:
        return self._metadata(self._open_container()).frames

    @property
    def fps(self) -> float:
        return float(self._metadata(self._open_container()).fps)

    def _decode(self, indices: list[int]) -> np.ndarray:
        container = self._open_container()  # stays open for further reads until close()
        meta = self._metadata(container)
        stream = container.streams.video[0]
        wanted = set(indices)
        decoded: dict[int, np.ndarray] = {}
        frames, position, size = None, -1, None  # decoder iterator, last decoded index
        for target in sorted(wanted):
            if target <= position:
                continue  # already passed (a frame the container skipped)
            if frames is None or (meta.keyint and target - position > meta.keyint):
                pts = meta.start + int(target / meta.fps / meta.time_base)
                container.seek(pts, any_frame=False, backward=True, stream=stream)
                frames = container.decode(stream)
            for frame in frames:
                position = meta.index(frame.pts) if frame.pts is not None else position + 1
                if position in wanted:
                    if size is None:
                        size = scaled_size(frame.width, frame.height, self.short_side)
                    decoded[position] = frame.to_ndarray(
                        format="rgb24", width=size[0], height=size[1]
                    )
                if position >= target:
                    break
            else:
                break  # end of stream
        if not decoded:
            raise VideoDecodeError(self.path, "no frames decoded")
        keys = np.array(sorted(decoded))
        # Frames the container could not deliver (short or truncated tails) fall back to the
        # nearest decoded one, mirroring decord's behaviour for the last frame.
        nearest = [int(keys[np.abs(keys - i).argmin()]) for i in indices]
        return np.stack([decoded[k] for k in nearest])


class _Meta(NamedTuple):
    frames: int
    fps: Fraction
    time_base: Fraction
    start: int  # pts of frame 0
    keyint: int | None  # keyframe interval of a prepared file, else None

    def index(self, pts: int) -> int:
        """Frame index of a presentation timestamp."""
        return int(round((pts - self.start) * self.time_base * self.fps))


PREPARED_TAG = "lightning_tsf prepared keyint="


def keyframe_interval(metadata: dict[str, str]) -> int | None:
    """The keyframe interval ``tsf prepare`` wrote into a container's comment tag, or None."""
    for key, value in metadata.items():
        if key.lower() == "comment" and value.startswith(PREPARED_TAG):
            try:
                return max(1, int(value[len(PREPARED_TAG) :].split()[0]))
            except (ValueError, IndexError):
                return None
    return None


def make_reader(path: str, backend: str = "decord", short_side: int | None = None) -> VideoReader:
    """Create an (unopened) reader for ``path`` with the named backend."""
    if backend in ("decord", "auto"):
        return DecordReader(path, short_side)
    if backend == "pyav":
        return PyAVReader(path, short_side)
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
