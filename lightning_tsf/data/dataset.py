"""Videos from files: the map-style dataset over annotation records, its seeded training
sampler and the non-padding distributed evaluation sampler.

Items are made by :class:`~.items.ClipItems` (shared with shards): training item ``i`` is a
random clip of video ``i`` (``(i, seed)`` from :class:`SeededTrainSampler` fixes its draws),
evaluation item ``i`` is every view of video ``i``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.clips import ViewSpec
from lightning_tsf.data.items import (  # noqa: F401 - earlier home of the item types
    ClipItems,
    Video,
    VideoBatch,
    VideoItem,
    VideoSample,
    decode_error_line,
    eval_summary,
    item_seeds,
    log_failure,
)
from lightning_tsf.data.transforms import TrainTransform


class VideoDataset(Dataset):
    """Items of annotated video files, opened by path with the spec's backend.

    Training: item ``i`` is a random clip of video ``i`` through ``transform``; evaluation:
    item ``i`` is every view of video ``i`` (collate with :func:`~.items.collate_views`).
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
        self.records = list(records)
        self.items = ClipItems(spec, train=train, transform=transform,
                               max_decode_retries=max_decode_retries)  # fmt: skip
        self.train = train
        self.spec = self.items.spec
        self.transform = transform

    @property
    def num_videos(self) -> int:
        """Number of videos in the split."""
        return len(self.records)

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.items.num_views

    def __len__(self) -> int:
        return self.num_videos

    def video(self, index: int) -> Video:
        """Video ``index`` of the split, opened from its path."""
        record = self.records[index]
        return Video.from_path(record.path, self.spec, index, record.label)

    def _another(self, rng: np.random.Generator) -> Video:
        return self.video(int(rng.integers(0, self.num_videos)))

    def __getitem__(self, index: int | tuple[int, int]) -> VideoSample | VideoItem:
        """Item ``index``; in training ``(index, seed)`` (from :class:`SeededTrainSampler`)
        fixes the item's random draws, else they are seeded from torch's generator."""
        if not self.train:
            return self.items.eval_item(self.video(int(index)))  # type: ignore[arg-type]
        if isinstance(index, tuple):
            index, seed = index
        else:
            seed = int(torch.randint(0, 2**62, ()).item())
        return self.items.train_item(self.video(index), np.random.default_rng(seed), self._another)


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
        seeds = item_seeds(self.seed, self.epoch, len(self.dataset))
        indices = list(super().__iter__())[self.skip() if self.skip else 0 :]
        return iter([(i, seeds[i]) for i in indices])


class DistributedEvalSampler(DistributedSampler):
    """Splits the videos (evaluation items: whole videos) into contiguous per-rank chunks,
    without padding: every video is scored exactly once across ranks, ranks may get one video
    more than others. Lightning leaves a ``DistributedSampler`` subclass in place instead of
    adding its own.
    """

    def __init__(
        self, dataset: VideoDataset, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        videos = dataset.num_videos
        self.begin = videos * self.rank // self.num_replicas
        self.end = videos * (self.rank + 1) // self.num_replicas
        self.num_samples = self.end - self.begin
        self.total_size = videos

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.num_samples
