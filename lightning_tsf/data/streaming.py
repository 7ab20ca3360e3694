"""Reading ``tsf shard`` outputs: LitData streams of video bytes, and their resumable loader.

Imported only when a DataModule reads shards (it imports litdata). A shard sample holds one
video's prepared bytes (schema: :mod:`.shards`); the stream hands it out as a
:class:`~.items.Video` opened over the bytes (:func:`~.decode.make_bytes_reader`), and its items
are made by the same :class:`~.items.ClipItems` as a file's, with the same per-video seeds
(:func:`~.items.item_seeds`), so a video gives the same items from files and from shards.

Training items come in LitData's shuffled order; evaluation items (whole videos) stream in
order, never shuffled, padded or dropped (``drop_last=False``): under DDP LitData hands each
rank a disjoint part and leftovers go to the last worker, so every video is scored once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from lightning_tsf.data.clips import ViewSpec
from lightning_tsf.data.decode import VideoDecodeError
from lightning_tsf.data.items import ClipItems, Video, VideoItem, VideoSample, item_seeds
from lightning_tsf.data.shard_format import verify_sample
from lightning_tsf.data.storage import as_storage_error
from lightning_tsf.data.transforms import TrainTransform

log = logging.getLogger(__name__)


def _refuse(name: str, reason: str) -> None:
    raise VideoDecodeError(name, reason)


class ShardVideoDataset(StreamingDataset):
    """Items of one split of a shard folder (``input_dir``: the split's chunks), made by
    :class:`~.items.ClipItems` from readers over each sample's bytes.

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
        items = ClipItems(spec, train=train, transform=transform,
                          max_decode_retries=max_decode_retries)  # fmt: skip
        # ``stream``: where and how to read (storage.input_dir: cache_dir, max_cache_size,
        # storage_options for object storage)
        super().__init__(input_dir, shuffle=train, drop_last=train, seed=seed, **stream)
        self.items = items
        self.train = train
        self.spec = items.spec
        self.train_seed = seed
        self.num_records = num_records
        self.num_videos = num_videos  # in the split, over all ranks (the test summary's total)
        self._seeds: tuple[int, list[int]] | None = None

    @property
    def num_views(self) -> int:
        """Views per video (1 in training)."""
        return self.items.num_views

    def video(self, sample: dict[str, Any]) -> Video:
        """The video of a shard sample (schema: :mod:`.shards`), opened from its bytes; a
        sample whose bytes fail their checksum opens as a broken video (reported, skipped)."""
        name, index, label = str(sample["id"]), int(sample["index"]), int(sample["label"])
        if bad := verify_sample(sample):
            return Video(index, label, name, partial(_refuse, name, bad))
        return Video.from_bytes(sample["video"], name, self.spec, index, label)

    def _another(self, rng: np.random.Generator) -> Video:
        return self.video(super().__getitem__(int(rng.integers(0, len(self)))))

    def __getitem__(self, index: Any) -> VideoSample | VideoItem:
        video = self.video(super().__getitem__(index))
        if not self.train:
            return self.items.eval_item(video)
        return self.items.train_item(video, self._item_rng(video.index), self._another)

    def _item_rng(self, video_index: int) -> np.random.Generator:
        epoch = max(0, self.current_epoch - 1)  # LitData counts epochs from 1
        if self._seeds is None or self._seeds[0] != epoch:
            self._seeds = (epoch, item_seeds(self.train_seed, epoch, self.num_records))
        return np.random.default_rng(self._seeds[1][video_index])


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
