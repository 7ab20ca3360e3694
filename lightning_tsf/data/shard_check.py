"""Every sample of a ``tsf shard`` output, read outside training: ``tsf check-videos`` on shards
(each sample's checksum verified and its video decoded, reported by its id) and
``tsf bench-data``'s probes.

Imported only for shards (it imports litdata). Local folders and ``s3://`` prefixes alike: the
splits are LitData streams read in order (:func:`split_stream`, the one place that opens a
split outside the DataModule), each sample's bytes opened with the reader the DataModule uses
(:func:`~.decode.make_bytes_reader`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from litdata import StreamingDataLoader, StreamingDataset
from tqdm import tqdm

from lightning_tsf.data.shard_format import check_sample, read_metadata, split_dir
from lightning_tsf.data.storage import input_dir, is_remote, storage_options, worker_init


def split_stream(url: str, split: str, options: dict | None = None,
                 cache_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``StreamingDataset`` keywords of one split of the shards at ``url``, in order."""
    return input_dir(split_dir(url, split), options, cache_dir) | {"shuffle": False}


def first_samples(url: str, split: str, count: int, options: dict | None = None,
                  cache_dir: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The first ``count`` samples of ``split`` (the shard sample schema: ``id``, ``video``
    bytes, ...), for probing."""
    stream = StreamingDataset(**split_stream(url, split, options, cache_dir))
    return [stream[i] for i in range(min(count, len(stream)))]


class _CheckedSamples(StreamingDataset):
    """A split whose items are ``(id, reason or None)``: each sample checked where it is read
    (a loader worker)."""

    def __init__(self, backend: str, full: bool, **stream: Any) -> None:
        super().__init__(**stream)
        self.backend, self.full = backend, full

    def __getitem__(self, index: Any) -> tuple[str, str | None]:
        sample = super().__getitem__(index)  # checksum verified, then decoded
        return str(sample["id"]), check_sample(sample, self.backend, self.full)


def _first(items: list[Any]) -> Any:
    return items[0]


@dataclass
class ShardCheck:
    """What :func:`check_shards` found: videos checked per split, the unreadable ones
    ``(split, id, reason)``, and the sources left out when the shards were written."""

    checked: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)


def check_shards(
    url: str,
    splits: Sequence[str] | None = None,
    *,
    backend: str = "auto",
    full: bool = False,
    num_workers: int = 1,
    options: dict | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> ShardCheck:
    """Decode every sample of ``splits`` (None: every split in ``shards.json``) of the shards
    at ``url`` (a folder or an ``s3://`` prefix): the first, middle and last frames, or every
    frame with ``full``."""
    meta = read_metadata(url, options)
    written = meta.get("splits", {})
    splits = list(dict.fromkeys(splits or written))
    for split in splits:
        if split not in written:
            raise ValueError(f"{url}: the shards have no {split!r} split (they hold "
                             f"{', '.join(written) or 'none'})")  # fmt: skip
    result = ShardCheck()
    for split in splits:
        result.left_out[split] = int(written[split].get("failed", 0))
        items = list(_checked(url, split, backend, full, num_workers, options, cache_dir,
                              progress))  # fmt: skip
        result.checked[split] = len(items)
        result.bad += [(split, name, why) for name, why in items if why is not None]
    return result


def _checked(url: str, split: str, backend: str, full: bool, workers: int,
             options: dict | None, cache_dir: str | None,
             progress: bool) -> Iterator[tuple[str, str | None]]:  # fmt: skip
    dataset = _CheckedSamples(backend, full, **split_stream(url, split, options, cache_dir))
    init = None
    if is_remote(url) and workers > 0:  # object storage over plain http, in every worker
        init = worker_init(storage_options(url, options))
    loader = StreamingDataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=_first,
                                 worker_init_fn=init)  # fmt: skip
    yield from tqdm(loader, total=len(dataset), desc=f"checking {split}", unit="video",
                    disable=not progress)  # fmt: skip
