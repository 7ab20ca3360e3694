"""What happens after a source opens a video, once for files and shards alike: clip cutting,
per-video seeds, retries and the zero-clip fallback, the train transform, evaluation views, the
item and batch format, and broken-video reporting.

A source (:mod:`.sources`) only says which videos there are and how to open one: it hands
:class:`ClipItems` a :class:`Video` (index in its split, label, name, and an ``open`` that gives
a :class:`~.decode.VideoReader` over a path or over bytes).

Item shapes:

* **training**: one random clip of one video, a :class:`VideoSample` (``video`` ``(C, T, H, W)``
  uint8). A broken video is replaced by another random one, at most ``max_decode_retries``
  times, each failure logged once per process and counted in ``retries``.
* **evaluation**: one whole video, a :class:`VideoItem` with all its
  ``num_temporal_views x num_spatial_crops`` views (``video`` ``(V, C, T, H, W)``), decoded
  from one open reader, each temporal clip once. A broken video is never replaced: its views
  come back with ``valid=False``, zero clips and the one-line reason. :func:`collate_views`
  turns a list of them into one batch of view rows (:class:`VideoBatch`), the layout of
  training batches; :func:`view_of` gives one view of an item as a :class:`VideoSample`.

Whole videos as evaluation items, for both sources: a shard stream hands out whole videos (a
sample is a video's bytes), DDP sharding of a file split by whole videos stays one contiguous
range of indices per rank, a video's views are scored in one batch, and its reader is opened
once. An evaluation batch holds ``max(1, batch_size // views)`` videos.

Outside a DataModule (the Predictor, inference on files), the evaluation views of one video
are ``ClipItems(spec, train=False).eval_item(Video.from_path(path, spec))`` (or
:meth:`Video.from_bytes`); ``VideoDataModule.dataset(stage)`` gives a stage's dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TypedDict

import numpy as np
import torch

from lightning_tsf.data.clips import ViewSpec, decode_clip, read_views
from lightning_tsf.data.decode import (
    VideoDecodeError,
    VideoReader,
    make_bytes_reader,
    make_reader,
)
from lightning_tsf.data.transforms import TrainTransform

log = logging.getLogger(__name__)
_logged_failures: set[str] = set()  # per process: each broken video is logged once


class VideoSample(TypedDict):
    """One clip (a training item, or one view of an evaluation item) and where it comes from."""

    video: torch.Tensor  # uint8 (C, T, H, W); zeros where not valid
    label: int  # -1 when unlabelled
    video_index: int  # index of the video in its split's annotation
    view_index: int  # temporal_view * num_spatial_crops + spatial_crop (0 in training)
    valid: bool  # False when the video could not be decoded (evaluation)
    path: str  # the file's path (files) or its id, the path relative to the root (shards)
    retries: int  # broken videos skipped to produce this sample (training)
    num_views: int  # views of this video in the split (1 in training)
    error: str  # why the video could not be decoded ("" when valid)


class VideoItem(TypedDict):
    """An evaluation item: every view of one video."""

    video: torch.Tensor  # uint8 (V, C, T, H, W); zeros where not valid
    label: int
    video_index: int
    view_index: torch.Tensor  # long (V,): 0..V-1
    valid: bool
    path: str
    retries: int  # 0
    num_views: int  # V
    error: str


class VideoBatch(TypedDict):
    """A batch of view rows: training samples (default collation) or the views of whole videos
    (:func:`collate_views`)."""

    video: torch.Tensor  # uint8 (B, C, T, H, W); float32 normalised after the device transfer
    label: torch.Tensor  # long (B,)
    video_index: torch.Tensor  # long (B,)
    view_index: torch.Tensor  # long (B,)
    valid: torch.Tensor  # bool (B,)
    path: list[str]
    retries: torch.Tensor  # long (B,)
    num_views: torch.Tensor  # long (B,)
    error: list[str]


@dataclass(frozen=True)
class Video:
    """A video as its source hands it out: ``index`` in the split's annotation (what seeds its
    training draws), ``label``, ``name`` (path or shard id: reported in items and logs) and
    ``open``, which gives a reader over its file or its bytes."""

    index: int
    label: int
    name: str
    open: Callable[[], VideoReader]

    @classmethod
    def from_path(cls, path: str, spec: ViewSpec, index: int = 0, label: int = -1) -> Video:
        """A video file, read with the spec's backend and decode size."""
        opener = partial(make_reader, path, spec.backend, spec.decode_short_side)
        return cls(index, label, path, opener)

    @classmethod
    def from_bytes(cls, data: bytes, name: str, spec: ViewSpec, index: int = 0,
                   label: int = -1) -> Video:  # fmt: skip
        """A video held in memory (a shard sample's bytes), named ``name`` in reports."""
        opener = partial(make_bytes_reader, data, name, spec.backend, spec.decode_short_side)
        return cls(index, label, name, opener)


def item_seeds(seed: int, epoch: int, count: int) -> list[int]:
    """Per-video seeds of epoch ``epoch`` (0-based) for ``count`` annotated videos: a training
    item of video ``i`` draws its clip and crop from ``default_rng(item_seeds(...)[i])``,
    whatever the source, rank, worker or position in the order."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randint(0, 2**62, (count,), generator=generator).tolist()


def decode_error_line(err: VideoDecodeError) -> str:
    """The one wording of an unreadable video: ``cannot decode PATH: first line of reason``."""
    reason = err.reason.splitlines()[0] if err.reason else "unknown reason"
    return f"cannot decode {err.path}: {reason}"


def log_failure(err: VideoDecodeError) -> None:
    """Log a broken video once per process."""
    if err.path not in _logged_failures:
        _logged_failures.add(err.path)
        log.warning("%s", decode_error_line(err))


def eval_summary(num_videos: int, failed_paths: Sequence[str]) -> str:
    """One report line for the end of evaluation: evaluated/total videos and unreadable paths."""
    failed = sorted(set(failed_paths))
    line = f"evaluated {num_videos - len(failed)}/{num_videos} videos"
    if failed:
        line += f"; {len(failed)} unreadable: " + ", ".join(failed)
    return line


class ClipItems:
    """Makes the items of one split from opened videos (training or evaluation).

    ``spec``: how clips are cut (training uses one view of it); ``transform``: the training
    crop/scale/flip (required in training); ``max_decode_retries``: broken videos replaced in
    a row before a training item fails."""

    def __init__(
        self,
        spec: ViewSpec,
        *,
        train: bool,
        transform: TrainTransform | None = None,
        max_decode_retries: int = 10,
    ) -> None:
        if train and transform is None:
            raise ValueError("a training dataset needs a TrainTransform")
        self.train = train
        # Training draws one clip per video: views belong to evaluation only.
        self.spec = replace(spec, num_temporal_views=1, num_spatial_crops=1) if train else spec
        self.transform = transform
        self.max_decode_retries = max_decode_retries

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.spec.num_views

    def train_item(self, video: Video, rng: np.random.Generator,
                   another: Callable[[np.random.Generator], Video]) -> VideoSample:  # fmt: skip
        """A random clip of ``video`` drawn with ``rng``; a broken video is replaced by
        ``another(rng)`` (a random video of the split), at most ``max_decode_retries`` times."""
        assert self.transform is not None
        failed: list[str] = []
        while True:
            reader: VideoReader | None = None
            try:
                reader = video.open()
                frames = decode_clip(reader, self.spec, train=True, rng=rng)
                return self._sample(video, self.transform(frames, rng), retries=len(failed))
            except VideoDecodeError as err:
                log_failure(err)
                failed.append(video.name)
            finally:
                if reader is not None:
                    reader.close()
            if len(failed) > self.max_decode_retries:
                raise RuntimeError(
                    f"{len(failed)} unreadable videos in a row (max_decode_retries="
                    f"{self.max_decode_retries}); run `tsf check-videos`. Last: {failed[-3:]}"
                )
            video = another(rng)

    def eval_item(self, video: Video) -> VideoItem:
        """Every view of ``video`` (one reader, each temporal clip decoded once), or zero clips
        and the reason when it cannot be decoded."""
        spec, error = self.spec, ""
        reader: VideoReader | None = None
        try:
            reader = video.open()
            clips = read_views(reader, spec).transpose(1, 2).contiguous()  # (V, C, T, H, W)
        except VideoDecodeError as err:
            log_failure(err)
            error = decode_error_line(err)
            c = spec.crop_size
            clips = torch.zeros((spec.num_views, 3, spec.num_frames, c, c), dtype=torch.uint8)
        finally:
            if reader is not None:
                reader.close()
        return VideoItem(video=clips, label=video.label, video_index=video.index,
                         view_index=torch.arange(spec.num_views), valid=not error,
                         path=video.name, retries=0, num_views=spec.num_views,
                         error=error)  # fmt: skip

    def _sample(self, video: Video, clip: torch.Tensor, retries: int) -> VideoSample:
        return VideoSample(video=clip, label=video.label, video_index=video.index, view_index=0,
                           valid=True, path=video.name, retries=retries, num_views=1,
                           error="")  # fmt: skip


def view_of(item: VideoItem, view: int) -> VideoSample:
    """View ``view`` of an evaluation item as one :class:`VideoSample` (``(C, T, H, W)``)."""
    return VideoSample(video=item["video"][view], label=item["label"],
                       video_index=item["video_index"], view_index=view, valid=item["valid"],
                       path=item["path"], retries=item["retries"], num_views=item["num_views"],
                       error=item["error"])  # fmt: skip


def collate_views(items: Sequence[VideoItem]) -> VideoBatch:
    """Evaluation items (whole videos) as one batch of view rows, video after video."""

    def rows(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([it[key] for it in items for _ in range(it["num_views"])], dtype=dtype)

    return VideoBatch(
        video=torch.cat([it["video"] for it in items]),
        label=rows("label", torch.long),
        video_index=rows("video_index", torch.long),
        view_index=torch.cat([it["view_index"] for it in items]).long(),
        valid=rows("valid", torch.bool),
        path=[it["path"] for it in items for _ in range(it["num_views"])],
        retries=rows("retries", torch.long),
        num_views=rows("num_views", torch.long),
        error=[it["error"] for it in items for _ in range(it["num_views"])],
    )
