"""The map-style video dataset, its batch type and a non-padding distributed eval sampler.

Training samples are one random clip per video; a broken video is replaced by another random
one, at most ``max_decode_retries`` times, each failure logged once per worker and counted in the
sample's ``retries`` (worker-side counters are invisible to the main process, so the count
travels with the batch). Evaluation samples are views ``(video, temporal clip, spatial crop)``;
a broken video is never replaced: its views come back with ``valid=False`` and a zero clip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.decode import VideoDecodeError, make_reader
from lightning_tsf.data.sampling import sample_indices
from lightning_tsf.data.transforms import EvalTransform, TrainTransform

log = logging.getLogger(__name__)
_logged_failures: set[str] = set()  # per process: each broken path is logged once


class VideoBatch(TypedDict):
    """A collated batch (per-sample items have the same keys without the batch dimension)."""

    video: torch.Tensor  # float (B, C, T, H, W); zeros where not valid
    label: torch.Tensor  # long (B,), -1 when unlabelled
    video_index: torch.Tensor  # long (B,), index of the video in its split
    view_index: torch.Tensor  # long (B,), temporal_view * num_spatial_crops + spatial_crop
    valid: torch.Tensor  # bool (B,), False when the video could not be decoded (evaluation)
    path: list[str]
    retries: torch.Tensor  # long (B,), broken videos skipped to produce this sample (training)


def log_failure(err: VideoDecodeError) -> None:
    """Log a broken video once per process."""
    if err.path not in _logged_failures:
        _logged_failures.add(err.path)
        log.warning("unreadable video %s (%s)", err.path, err.reason)


class VideoDataset(Dataset):
    """Clips from annotated videos, decoded lazily with the chosen backend.

    In training (``train=True``) item ``i`` is a random clip of video ``i``. In evaluation item
    ``i`` is view ``i % num_views`` of video ``i // num_views``, where view ``v`` is temporal
    clip ``v // num_spatial_crops`` and spatial crop ``v % num_spatial_crops``.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        train: bool,
        transform: TrainTransform | EvalTransform,
        sampler: str = "dense",
        num_frames: int = 8,
        sampling_rate: int = 32,
        num_temporal_views: int = 1,
        num_spatial_crops: int = 1,
        backend: str = "decord",
        decode_short_side: int | None = None,
        max_decode_retries: int = 10,
    ) -> None:
        self.records = list(records)
        self.train = train
        self.transform = transform
        self.sampler = sampler
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.num_temporal_views = 1 if train else num_temporal_views
        self.num_spatial_crops = 1 if train else num_spatial_crops
        self.backend = backend
        self.decode_short_side = decode_short_side
        self.max_decode_retries = max_decode_retries
        self._cache: tuple[tuple[str, tuple[int, ...]], torch.Tensor] | None = None

    @property
    def num_videos(self) -> int:
        """Number of videos in the split."""
        return len(self.records)

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.num_temporal_views * self.num_spatial_crops

    def __len__(self) -> int:
        return self.num_videos * self.num_views

    def _indices(self, num_video_frames: int, view: int, rng: np.random.Generator) -> np.ndarray:
        return sample_indices(
            self.sampler,
            num_video_frames,
            self.num_frames,
            self.sampling_rate,
            train=self.train,
            view=view,
            num_views=self.num_temporal_views,
            rng=rng,
        )

    def _decode(self, path: str, view: int, rng: np.random.Generator) -> np.ndarray:
        reader = make_reader(path, self.backend, self.decode_short_side)
        try:
            return reader.get_frames(self._indices(len(reader), view, rng))
        finally:
            reader.close()

    def _sample(self, video_index: int, view: int, retries: int, valid: bool, clip: torch.Tensor):
        record = self.records[video_index]
        return {
            "video": clip,
            "label": record.label,
            "video_index": video_index,
            "view_index": view,
            "valid": valid,
            "path": record.path,
            "retries": retries,
        }

    def __getitem__(self, index: int) -> dict:
        # Seeded from torch so that workers differ and ``seed_everything`` makes runs repeatable.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        if self.train:
            return self._train_item(index, rng)
        return self._eval_item(index, rng)

    def _train_item(self, index: int, rng: np.random.Generator) -> dict:
        failed: list[str] = []
        video_index = index
        while True:
            path = self.records[video_index].path
            try:
                frames = self._decode(path, 0, rng)
                return self._sample(video_index, 0, len(failed), True, self.transform(frames, rng))
            except VideoDecodeError as err:
                log_failure(err)
                failed.append(path)
            if len(failed) > self.max_decode_retries:
                raise RuntimeError(
                    f"{len(failed)} unreadable videos in a row (max_decode_retries="
                    f"{self.max_decode_retries}); run `tsf check-videos`. Last: {failed[-3:]}"
                )
            video_index = int(rng.integers(0, self.num_videos))

    def _eval_item(self, index: int, rng: np.random.Generator) -> dict:
        video_index, view = divmod(index, self.num_views)
        temporal, spatial = divmod(view, self.num_spatial_crops)
        path = self.records[video_index].path
        assert isinstance(self.transform, EvalTransform)
        try:
            # The spatial crops of one temporal clip share a decode: views come in order.
            resized = self._resized_clip(path, temporal, rng)
            clip = self.transform.crop(resized, spatial)
            valid = True
        except VideoDecodeError as err:
            log_failure(err)
            c = self.transform.crop_size
            clip = torch.zeros((3, self.num_frames, c, c), dtype=torch.float32)
            valid = False
        return self._sample(video_index, view, 0, valid, clip)

    def _resized_clip(self, path: str, temporal: int, rng: np.random.Generator) -> torch.Tensor:
        key = (path, (temporal,))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        self._cache = None
        resized = self.transform.resize(self._decode(path, temporal, rng))
        self._cache = (key, resized)
        return resized


class DistributedEvalSampler(DistributedSampler):
    """Splits indices into contiguous per-rank chunks without padding or repeats.

    Every view of every video is seen exactly once across ranks (ranks may get one item more
    than others). Chunks are contiguous so a video's views stay together on one rank.
    Lightning leaves a ``DistributedSampler`` subclass in place instead of adding its own.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)  # type: ignore[arg-type]
        self.begin = n * self.rank // self.num_replicas
        self.end = n * (self.rank + 1) // self.num_replicas
        self.num_samples = self.end - self.begin
        self.total_size = n

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
