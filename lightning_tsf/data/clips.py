"""Clip cutting: the one path from an opened video to the clips a model sees.

:class:`ClipSpec` holds the clip settings once: the input record
(:class:`~lightning_tsf.data.inputs.InputConfig`), the DataModule's ``data.clips`` options
(:class:`~lightning_tsf.data.options.ClipOptions`) and the reader-side :class:`ViewSpec` all
extend it, so a field and its checks are written here only.

A video gives ``num_temporal_views × num_spatial_crops`` evaluation views; view ``v`` is temporal
clip ``v // num_spatial_crops`` and spatial crop ``v % num_spatial_crops``. Each temporal clip is
decoded once and all its spatial crops are cut from that one decode. Files and shard bytes are
cut by these functions alike (a path or an opened :class:`~.decode.VideoReader`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.decode import BACKENDS, VideoReader, make_reader
from lightning_tsf.data.sampling import SAMPLERS, sample_indices
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD, resize_short_side, spatial_crop

# Defaults of the fields a ClipSpec may leave open (None): a resolved spec (the input record,
# a ViewSpec) fills them with these; ``test_short_side`` None is the crop size.
OPEN_DEFAULTS = {"sampler": "dense", "num_spatial_crops": 3, "num_temporal_views": 1}


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut: frames, sampling, crops and views, and the pixel normalisation.

    Args:
        sampler: ``dense`` (the official decoder's clips), ``centred`` or ``segment``
            (:mod:`.sampling`); None = the format's (``segment`` for ssv2, else ``dense``).
        num_frames: frames per clip.
        sampling_rate: frame stride (unused by ``segment``).
        crop_size: side of the square clips.
        test_short_side: short side an evaluation clip is resized to before its crops; None =
            the official rule (the crop size with 3 crops and for ssv2, else the training
            scale's minimum; see :func:`~.inputs.resolve_input_config`).
        num_spatial_crops: evaluation crops per clip, 1 (centre) or 3; None = as the checkpoint
            under test says, else 3.
        num_temporal_views: evaluation clips per video; None = as the checkpoint says, else 1.
        mean, std: per-channel normalisation of [0, 1] pixels (applied on the device).
    """

    sampler: str | None = None
    num_frames: int = 8
    sampling_rate: int = 32
    crop_size: int = 224
    test_short_side: int | None = None
    num_spatial_crops: int | None = None
    num_temporal_views: int | None = None
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD

    def __post_init__(self) -> None:
        """The checks of every field, for every kind of spec (open values pass)."""
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}; expected one of {SAMPLERS}")
        if self.num_spatial_crops is not None and self.num_spatial_crops not in (1, 3):
            raise ValueError(f"num_spatial_crops={self.num_spatial_crops}; expected 1 or 3")
        for name in ("num_frames", "sampling_rate", "crop_size", "test_short_side",
                     "num_temporal_views"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))

    def _close(self) -> None:
        """Fill the open fields (for resolved specs: the record and the reader's spec)."""
        for name, value in OPEN_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.test_short_side is None:
            object.__setattr__(self, "test_short_side", self.crop_size)

    @property
    def num_views(self) -> int:
        """Views per video at evaluation."""
        return int(self.num_temporal_views or 1) * int(self.num_spatial_crops or 1)

    @property
    def centre_view(self) -> int:
        """The middle temporal clip's centre crop: the view shown in pictures."""
        crops = int(self.num_spatial_crops or 1)
        return (int(self.num_temporal_views or 1) // 2) * crops + crops // 2

    def split(self, view: int) -> tuple[int, int]:
        """``(temporal clip, spatial crop)`` of view ``view``."""
        return divmod(view, int(self.num_spatial_crops or 1))


@dataclass(frozen=True)
class ViewSpec(ClipSpec):
    """A resolved :class:`ClipSpec` and how this machine reads the files: ``backend`` (see
    :data:`~.decode.BACKENDS`) and ``decode_short_side`` (decode sources larger than this at
    this short side; None: at the source size). Open fields take :data:`OPEN_DEFAULTS`."""

    backend: str = "auto"
    decode_short_side: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._close()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; expected one of {BACKENDS}")


def open_source(source: str | VideoReader, spec: ViewSpec) -> tuple[VideoReader, bool]:
    """``(reader, owned)``: a reader of the spec's backend for a path (``owned``: the caller
    closes it), or the given reader (a file's or an in-memory video's, as shards hold)."""
    if isinstance(source, VideoReader):
        return source, False
    return make_reader(source, spec.backend, spec.decode_short_side), True


def decode_clip(
    source: str | VideoReader,
    spec: ViewSpec,
    temporal: int = 0,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode one clip of ``source`` (a path or a reader): ``(T, H, W, 3)`` uint8 frames at the
    sampler's indices.

    ``train=True`` draws a random clip with ``rng``; otherwise temporal clip ``temporal`` of
    ``spec.num_temporal_views``. Raises :class:`~lightning_tsf.data.decode.VideoDecodeError`.
    """
    reader, owned = open_source(source, spec)
    try:
        return reader.get_frames(_clip_indices(reader, spec, temporal, train, rng))
    finally:
        if owned:
            reader.close()


def _clip_indices(
    reader: VideoReader, spec: ViewSpec, temporal: int, train: bool, rng: np.random.Generator | None
) -> np.ndarray:
    return sample_indices(
        spec.sampler,
        len(reader),
        spec.num_frames,
        spec.sampling_rate,
        fps=reader.fps,
        train=train,
        view=temporal,
        num_views=spec.num_temporal_views,
        rng=rng,
    )


def clip_frame_indices(source: str | VideoReader, spec: ViewSpec, temporal: int = 0) -> list[int]:
    """The source frame numbers of evaluation clip ``temporal`` of ``source``: the frames
    :func:`decode_clip` reads, for labelling pictures. Opens the video without decoding it."""
    reader, owned = open_source(source, spec)
    try:
        return [int(i) for i in _clip_indices(reader, spec, temporal, False, None)]
    finally:
        if owned:
            reader.close()


def resize_clip(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """Decoded ``(T, H, W, 3)`` frames with the short side resized to ``test_short_side`` (or
    the crop size): ``(T, C, H', W')`` uint8, ready for :func:`spatial_view`."""
    return resize_short_side(frames, spec.test_short_side or spec.crop_size)


def temporal_view(source: str | VideoReader, spec: ViewSpec, temporal: int) -> Tensor:
    """Temporal clip ``temporal`` of a path or reader decoded once and :func:`resize_clip`-ed."""
    return resize_clip(decode_clip(source, spec, temporal), spec)


def spatial_view(resized: Tensor, spec: ViewSpec, spatial: int) -> Tensor:
    """Spatial crop ``spatial`` of a :func:`temporal_view`: ``(T, C, crop, crop)`` uint8."""
    return spatial_crop(resized, spec.crop_size, spatial, spec.num_spatial_crops)


def clip_views(frames: np.ndarray, spec: ViewSpec) -> Tensor:
    """The spatial crops of one decoded clip ``(T, H, W, 3)``: ``(num_spatial_crops, T, C,
    crop, crop)`` uint8. Also used for clips at indices chosen elsewhere (timeline windows)."""
    resized = resize_clip(frames, spec)
    return torch.stack([spatial_view(resized, spec, s) for s in range(spec.num_spatial_crops)])


def read_views(source: str | VideoReader, spec: ViewSpec) -> Tensor:
    """All views of one video (a path or a reader, opened once), ``(V, T, C, crop, crop)``
    uint8, in view order."""
    reader, owned = open_source(source, spec)
    try:
        clips = [decode_clip(reader, spec, t) for t in range(spec.num_temporal_views)]
    finally:
        if owned:
            reader.close()
    return torch.cat([clip_views(frames, spec) for frames in clips])


def describe_protocol(spec: ViewSpec, train_scale: tuple[int, int], flip: bool,
                      inverse_uniform_scale: bool) -> dict[str, str]:  # fmt: skip
    """How clips are cut in training, validation and test, in words (the DataModule's
    ``protocol``, logged with the config and stated in the test summary)."""
    s = spec
    clip = {
        "dense": f"{s.num_frames} frames over rate {s.sampling_rate} x {s.num_frames} / 30 "
        "x fps source frames (official dense)",
        "centred": f"{s.num_frames} frames {s.sampling_rate} apart",
        "segment": f"{s.num_frames} frames, one per equal segment",
    }[s.sampler]
    low, high = train_scale
    jitter = f"1/U[1/{high}, 1/{low}]" if inverse_uniform_scale else f"U[{low}, {high}]"
    flipped = ", horizontal flip" if flip else ""
    crops = "left/centre/right" if s.num_spatial_crops == 3 else "centre"
    views = (
        f"{s.num_temporal_views} clip(s) x {s.num_spatial_crops} {crops} crop(s) of "
        f"{s.crop_size} after short side {s.test_short_side or s.crop_size}; {clip}"
    )
    return {
        "train": f"{clip}, random position; short side {jitter}, random {s.crop_size} "
        f"crop{flipped}",
        "validation": f"clip-level accuracy (each view scored alone) over {views}",
        "test": f"video-level accuracy, the paper's kind (softmax averaged per video) over {views}",
    }
