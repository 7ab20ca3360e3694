"""Reading ``tsf shard`` outputs: LitData streams decoded from memory, cut like files.

Imported only when a DataModule reads shards (it imports litdata). A shard sample holds one
video's prepared bytes (schema: :mod:`.shards`); its clips are cut by the same functions as a
file's (:func:`~.views.decode_clip`, :func:`~.views.temporal_view`, :class:`TrainTransform`),
through a reader over the bytes (:func:`~.decode.make_bytes_reader`), and a training item's
random draws come from the same per-video seeds as :class:`~.dataset.SeededTrainSampler`'s, so a
video gives the same frames and crops from files and from shards.

Training items are one random clip per video, in LitData's shuffled order; evaluation items are
whole videos (all ``num_temporal_views x num_spatial_crops`` views), flattened into view rows by
:func:`collate_views`, so batches look like the file path's (``video_index``, ``view_index``,
``num_views``, ``valid``, ``error``). Evaluation streams are never shuffled, padded or dropped
(``drop_last=False``): under DDP LitData hands each rank a disjoint part and leftovers go to
the last worker, so every video is scored once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import default_collate

from lightning_tsf.data.dataset import VideoSample, decode_error_line, log_failure
from lightning_tsf.data.decode import VideoDecodeError, make_bytes_reader
from lightning_tsf.data.shard_format import verify_sample
from lightning_tsf.data.storage import as_storage_error
from lightning_tsf.data.transforms import TrainTransform, to_clip
from lightning_tsf.data.views import ViewSpec, decode_clip, spatial_view, temporal_view

log = logging.getLogger(__name__)


def item_seeds(seed: int, epoch: int, num_records: int) -> list[int]:
    """Per-video seeds of epoch ``epoch`` (0-based): :class:`SeededTrainSampler`'s table."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randint(0, 2**62, (num_records,), generator=generator).tolist()


class ShardVideoDataset(StreamingDataset):
    """Clips from one split of a shard folder (``input_dir``: the split's chunks).

    ``num_records``: videos the split's annotation listed (the seed table's length, as for
    files); ``num_videos``: samples in the split. Training shuffles with ``seed`` and drops
    the ranks' uneven tail; evaluation streams in order, nothing dropped."""

    def __init__(
        self,
        input_dir: str,
        spec: ViewSpec,
        *,
        train: bool,
        num_records: int,
        num_videos: int,
        transform: TrainTransform | None = None,
        seed: int = 0,
        max_decode_retries: int = 10,
        **stream: Any,
    ) -> None:
        if train and transform is None:
            raise ValueError("a training dataset needs a TrainTransform")
        # ``stream``: where and how to read (storage.input_dir: cache_dir, max_cache_size,
        # storage_options for object storage)
        super().__init__(input_dir, shuffle=train, drop_last=train, seed=seed, **stream)
        self.train = train
        self.spec = replace(spec, num_temporal_views=1, num_spatial_crops=1) if train else spec
        self.clip_transform = transform
        self.train_seed = seed
        self.num_records = num_records
        self.num_videos = num_videos  # in the split, over all ranks (the test summary's total)
        self.max_decode_retries = max_decode_retries
        self._seeds: tuple[int, list[int]] | None = None

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.spec.num_views

    def _reader(self, sample: dict[str, Any]):
        if bad := verify_sample(sample):  # changed bytes: a broken video, reported and skipped
            raise VideoDecodeError(str(sample["id"]), bad)
        return make_bytes_reader(sample["video"], sample["id"], self.spec.backend,
                                 self.spec.decode_short_side)  # fmt: skip

    def _sample(self, sample: dict, view: int, retries: int, clip: torch.Tensor,
                error: str = "") -> VideoSample:  # fmt: skip
        return VideoSample(video=clip, label=int(sample["label"]), video_index=int(sample["index"]),
                           view_index=view, valid=not error, path=str(sample["id"]),
                           retries=retries, num_views=self.num_views, error=error)  # fmt: skip

    def __getitem__(self, index: Any) -> VideoSample | list[VideoSample]:
        sample = super().__getitem__(index)
        return self._train_item(sample) if self.train else self._eval_item(sample)

    def _item_rng(self, video_index: int) -> np.random.Generator:
        epoch = max(0, self.current_epoch - 1)  # LitData counts epochs from 1
        if self._seeds is None or self._seeds[0] != epoch:
            self._seeds = (epoch, item_seeds(self.train_seed, epoch, self.num_records))
        return np.random.default_rng(self._seeds[1][video_index])

    def _train_item(self, sample: dict) -> VideoSample:
        assert self.clip_transform is not None
        rng = self._item_rng(int(sample["index"]))
        failed: list[str] = []
        while True:
            reader = None
            try:
                reader = self._reader(sample)
                frames = decode_clip(reader, self.spec, train=True, rng=rng)
                return self._sample(sample, 0, len(failed), self.clip_transform(frames, rng))
            except VideoDecodeError as err:
                log_failure(err)
                failed.append(str(sample["id"]))
            finally:
                if reader is not None:
                    reader.close()
            if len(failed) > self.max_decode_retries:
                raise RuntimeError(
                    f"{len(failed)} unreadable videos in a row (max_decode_retries="
                    f"{self.max_decode_retries}); last: {failed[-3:]}"
                )
            sample = super().__getitem__(int(rng.integers(0, len(self))))

    def _eval_item(self, sample: dict) -> list[VideoSample]:
        spec = self.spec
        reader = None
        views: list[VideoSample] = []
        try:
            reader = self._reader(sample)
            for temporal in range(spec.num_temporal_views):
                resized = temporal_view(reader, spec, temporal)
                for spatial in range(spec.num_spatial_crops):
                    clip = to_clip(spatial_view(resized, spec, spatial))
                    views.append(self._sample(sample, len(views), 0, clip))
        except VideoDecodeError as err:
            log_failure(err)
            c = spec.crop_size
            zero = torch.zeros((3, spec.num_frames, c, c), dtype=torch.uint8)
            views = [self._sample(sample, v, 0, zero, decode_error_line(err))
                     for v in range(spec.num_views)]  # fmt: skip
        finally:
            if reader is not None:
                reader.close()
        return views


def collate_views(items: list[list[VideoSample]]) -> dict:
    """Evaluation batches: the views of whole videos as rows (the file path's batch layout)."""
    return default_collate([view for item in items for view in item])


class ShardLoader(StreamingDataLoader):
    """LitData's loader; its state (Lightning saves it in checkpoints) resumes mid-epoch.

    A resume with the world size, worker count and batch size it was saved with replays the
    epoch exactly; with others it says (once, as a warning) what LitData will do instead.
    ``trainer_epoch`` (the Trainer's epoch, for training): each epoch's shuffle and clip draws
    follow it, not the loader's own count. Lightning restores a loader's state only when it
    resumes mid-epoch; from a checkpoint written at an epoch's end it builds a fresh loader,
    whose own count would start again at the first epoch's order."""

    def __init__(
        self,
        *args: Any,
        trainer_epoch: Callable[[], int] | None = None,
        batches_done: Callable[[], int] | None = None,
        saved_state: Callable[[], dict[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.trainer_epoch = trainer_epoch
        self.batches_done = batches_done
        self.saved_state = saved_state
        self._resumed = False  # the previous epoch was a restored one

    def __iter__(self) -> Any:
        # A generator, like LitData's: what to resume is decided at the first batch, after
        # Lightning restored its loops (an iterator may be created before that).
        if self.trainer_epoch is not None:
            if self.restore and self._resumed:  # left set by a restored epoch cut short
                self.restore = False  # (limit_train_batches): the next epoch starts afresh
            if not self.restore:
                saved = self.saved_state() if self.saved_state else None
                done = self.batches_done() if self.batches_done else 0
                if saved is not None and done:  # restored mid-epoch: `done` batches trained
                    self.resume_at(done, saved)
                else:
                    self.current_epoch = self.trainer_epoch()  # LitData adds 1 as it starts
            self._resumed = self.restore
        try:
            yield from super().__iter__()
        except Exception as exc:  # a storage fault: one line naming the URL and what to do
            where = getattr(self.dataset, "input_dir", None)
            error = as_storage_error(exc, str(getattr(where, "url", None) or where or ""))
            if error is None:
                raise
            raise error from None

    def resume_at(self, batches_done: int, saved: dict[str, Any]) -> None:
        """Continue the saved epoch after its first ``batches_done`` batches (the Trainer's
        count, as the file path's sampler does; the saved stream may have handed out more)."""
        n = batches_done * int(self.batch_size or 1)
        workers = max(1, self.num_workers)
        state = {**saved, "num_samples_yielded": n,
                 "latest_worker_idx": (batches_done - 1) % workers,
                 "dataset": {**saved["dataset"], "num_samples_yielded": n}}  # fmt: skip
        self.load_state_dict(state)

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        note = resume_note(obj, world_size=_world_size(), num_workers=self.num_workers or 1,
                           batch_size=int(self.batch_size or 1))  # fmt: skip
        if note:
            log.warning("%s", note)
        super().load_state_dict(obj)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def resume_note(state: dict[str, Any], *, world_size: int, num_workers: int,
                batch_size: int) -> str:  # fmt: skip
    """What a resume from a saved loader ``state`` does, in words, when it is not an exact
    replay (empty when it is)."""
    saved = state.get("dataset", {})
    was = (saved.get("world_size"), saved.get("num_workers"), saved.get("batch_size"))
    now = (world_size, num_workers, batch_size)
    if None in was or tuple(was) == now:
        return ""
    return (
        f"resuming the shard stream saved with world size {was[0]}, {was[1]} worker(s), batch "
        f"{was[2]} as world size {now[0]}, {now[1]} worker(s), batch {now[2]}: LitData resumes "
        "elastically: the epoch's remaining samples are each read once (none repeated or "
        "skipped), but in another order and split over ranks differently, so the run is not "
        "bit-equal to an uninterrupted one; resume with the saved settings for that"
    )
