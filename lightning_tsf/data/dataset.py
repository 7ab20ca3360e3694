"""The map-style video dataset, its batch type and a non-padding distributed eval sampler.

Training samples are one random clip per video; a broken video is replaced by another random
one, at most ``max_decode_retries`` times, each failure logged once per worker and counted in the
sample's ``retries`` (worker-side counters are invisible to the main process, so the count
travels with the batch). Evaluation samples are views ``(video, temporal clip, spatial crop)``;
a broken video is never replaced: its views come back with ``valid=False`` and a zero clip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.decode import VideoDecodeError
from lightning_tsf.data.transforms import TrainTransform, to_clip
from lightning_tsf.data.views import ViewSpec, decode_clip, spatial_view, temporal_view

log = logging.getLogger(__name__)
_logged_failures: set[str] = set()  # per process: each broken path is logged once


class VideoSample(TypedDict):
    """One dataset item: a clip and where it comes from."""

    video: torch.Tensor  # uint8 (C, T, H, W); zeros where not valid
    label: int  # -1 when unlabelled
    video_index: int  # index of the video in its split
    view_index: int  # temporal_view * num_spatial_crops + spatial_crop (0 in training)
    valid: bool  # False when the video could not be decoded (evaluation)
    path: str
    retries: int  # broken videos skipped to produce this sample (training)
    num_views: int  # views of this video in the split (1 in training)
    error: str  # why the video could not be decoded ("" when valid)


class VideoBatch(TypedDict):
    """A collated batch of :class:`VideoSample` (the DataLoader's default collation)."""

    video: torch.Tensor  # uint8 (B, C, T, H, W); float32 normalised after the device transfer
    label: torch.Tensor  # long (B,)
    video_index: torch.Tensor  # long (B,)
    view_index: torch.Tensor  # long (B,)
    valid: torch.Tensor  # bool (B,)
    path: list[str]
    retries: torch.Tensor  # long (B,)
    num_views: torch.Tensor  # long (B,)
    error: list[str]


def decode_error_line(err: VideoDecodeError) -> str:
    """The one wording of an unreadable video: ``cannot decode PATH: first line of reason``."""
    reason = err.reason.splitlines()[0] if err.reason else "unknown reason"
    return f"cannot decode {err.path}: {reason}"


def log_failure(err: VideoDecodeError) -> None:
    """Log a broken video once per process."""
    if err.path not in _logged_failures:
        _logged_failures.add(err.path)
        log.warning("%s", decode_error_line(err))


class VideoDataset(Dataset):
    """Clips from annotated videos, decoded lazily with the spec's backend.

    In training (``train=True``) item ``i`` is a random clip of video ``i``, through
    ``transform``. In evaluation item ``i`` is view ``i % num_views`` of video
    ``i // num_views`` (:mod:`lightning_tsf.data.views`). Clips are uint8 ``(C, T, H, W)``:
    the model's side normalises them on the device.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        spec: ViewSpec,
        *,
        train: bool,
        transform: TrainTransform | None = None,
        max_decode_retries: int = 10,
    ) -> None:
        if train and transform is None:
            raise ValueError("a training dataset needs a TrainTransform")
        self.records = list(records)
        self.train = train
        # Training draws one clip per video: views belong to evaluation only.
        self.spec = replace(spec, num_temporal_views=1, num_spatial_crops=1) if train else spec
        self.transform = transform
        self.max_decode_retries = max_decode_retries
        self._cache: tuple[tuple[str, int], torch.Tensor] | None = None

    @property
    def num_videos(self) -> int:
        """Number of videos in the split."""
        return len(self.records)

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.spec.num_views

    def __len__(self) -> int:
        return self.num_videos * self.num_views

    def _sample(
        self,
        video_index: int,
        view: int,
        retries: int,
        clip: torch.Tensor,
        error: str = "",
    ) -> VideoSample:
        record = self.records[video_index]
        return VideoSample(
            video=clip,
            label=record.label,
            video_index=video_index,
            view_index=view,
            valid=not error,
            path=record.path,
            retries=retries,
            num_views=self.num_views,
            error=error,
        )

    def __getitem__(self, index: int | tuple[int, int]) -> VideoSample:
        """Item ``index``; in training ``(index, seed)`` (from :class:`SeededTrainSampler`)
        fixes the item's random draws, else they are seeded from torch's generator."""
        if self.train:
            if isinstance(index, tuple):
                index, seed = index
            else:
                seed = int(torch.randint(0, 2**62, ()).item())
            return self._train_item(index, np.random.default_rng(seed))
        return self._eval_item(int(index))

    def _train_item(self, index: int, rng: np.random.Generator) -> VideoSample:
        assert self.transform is not None
        failed: list[str] = []
        video_index = index
        while True:
            path = self.records[video_index].path
            try:
                frames = decode_clip(path, self.spec, train=True, rng=rng)
                return self._sample(video_index, 0, len(failed), self.transform(frames, rng))
            except VideoDecodeError as err:
                log_failure(err)
                failed.append(path)
            if len(failed) > self.max_decode_retries:
                raise RuntimeError(
                    f"{len(failed)} unreadable videos in a row (max_decode_retries="
                    f"{self.max_decode_retries}); run `tsf check-videos`. Last: {failed[-3:]}"
                )
            video_index = int(rng.integers(0, self.num_videos))

    def _eval_item(self, index: int) -> VideoSample:
        video_index, view = divmod(index, self.num_views)
        temporal, spatial = self.spec.split(view)
        path = self.records[video_index].path
        try:
            resized = self._temporal_view(path, temporal)
            return self._sample(video_index, view, 0, to_clip(spatial_view(resized, self.spec,
                                                                           spatial)))
        except VideoDecodeError as err:
            log_failure(err)
            c = self.spec.crop_size
            clip = torch.zeros((3, self.spec.num_frames, c, c), dtype=torch.uint8)
            return self._sample(video_index, view, 0, clip, decode_error_line(err))

    def _temporal_view(self, path: str, temporal: int) -> torch.Tensor:
        """The spatial crops of one temporal clip share a decode: views come in order."""
        key = (path, temporal)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        self._cache = None
        resized = temporal_view(path, self.spec, temporal)
        self._cache = (key, resized)
        return resized


class SeededTrainSampler(DistributedSampler):
    """Training order and each item's random draws as functions of ``(seed, epoch)`` alone.

    Yields ``(index, item_seed)``: the order is ``DistributedSampler``'s shuffle (seeded with
    ``seed + epoch``), the item seeds come from a generator seeded with ``(seed, epoch)`` and
    are indexed by the video, so they do not depend on the rank, the worker or the number of
    workers. ``skip`` (called as each epoch's iteration starts) says how many items of the
    epoch were already trained: a run resumed mid-epoch then draws exactly what an
    uninterrupted run draws. Works with one process too.
    """

    def __init__(
        self,
        dataset: VideoDataset,
        seed: int = 0,
        skip: Callable[[], int] | None = None,
        drop_last: bool = False,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(
            dataset,
            num_replicas=None if distributed else 1,
            rank=None if distributed else 0,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        seeds = torch.randint(0, 2**62, (len(self.dataset),), generator=generator).tolist()
        indices = list(super().__iter__())[self.skip() if self.skip else 0 :]
        return iter([(i, seeds[i]) for i in indices])


class DistributedEvalSampler(DistributedSampler):
    """Splits the items into contiguous per-rank chunks of whole videos, without padding.

    Every view of every video is seen exactly once across ranks, and all views of a video are
    on the same rank (chunk bounds fall between videos; ranks may get one video more than
    others). Lightning leaves a ``DistributedSampler`` subclass in place instead of adding its
    own.
    """

    def __init__(
        self, dataset: VideoDataset, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        videos, views = dataset.num_videos, dataset.num_views
        self.begin = videos * self.rank // self.num_replicas * views
        self.end = videos * (self.rank + 1) // self.num_replicas * views
        self.num_samples = self.end - self.begin
        self.total_size = videos * views

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.num_samples


def eval_summary(num_videos: int, failed_paths: Sequence[str]) -> str:
    """One report line for the end of evaluation: evaluated/total videos and unreadable paths."""
    failed = sorted(set(failed_paths))
    line = f"evaluated {num_videos - len(failed)}/{num_videos} videos"
    if failed:
        line += f"; {len(failed)} unreadable: " + ", ".join(failed)
    return line
