"""Reading what ``tsf shard`` wrote: ``shards.json``, split locations and sample checksums.

Split from the writer (:mod:`.shards`) so that training imports neither the writer nor what it
needs (re-encoding, LitData's ``optimize``): the DataModule and the shard stream read shards
through this module and :mod:`.storage` only.

Each shard sample carries ``sha256``, the hex SHA-256 of its ``video`` bytes as written;
:func:`verify_sample` checks it when a sample is read, so bytes changed in storage or transit
(which H.264 may decode without complaint, with wrong pixels) are reported by the video's id and
skipped like an undecodable video.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lightning_tsf.data.storage import is_remote, s3_client

SHARD_META = "shards.json"  # its presence marks a shard folder (the DataModule detects it)
SHARD_VERSION = 1
SPLITS = ("train", "val", "test")
CHECKSUM_KEY = "sha256"  # in each sample: hex SHA-256 of its "video" bytes


class ShardError(ValueError):
    """A shard folder cannot be written or read (names the folder or URL and why)."""


def output_dir(url: str | Path) -> Path:
    """A local shard folder, absolute (remote ones go through :mod:`.storage`)."""
    if is_remote(url):
        raise ShardError(f"{url}: a URL where a local shard folder was expected")
    return Path(url).expanduser().resolve()


def join(url: str | Path, *parts: str) -> str:
    """``url/part/...`` for a local folder or an object-storage URL."""
    if is_remote(url):
        return "/".join([str(url).rstrip("/"), *parts])
    return str(output_dir(url).joinpath(*parts))


def remote_read(url: str, options: dict | None) -> str:
    """Text of one object; ``FileNotFoundError`` when it is not there."""
    client, bucket, key = s3_client(url, options)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except client.exceptions.NoSuchKey:
        raise FileNotFoundError(url) from None


def read_metadata(url: str | Path, options: dict | None = None) -> dict:
    """``shards.json`` of a shard folder or ``s3://`` prefix: ``format``, ``class_names``,
    ``splits`` (per split: ``videos`` written, ``records`` annotated, ``failed``)."""
    path = join(url, SHARD_META)
    try:
        text = remote_read(path, options) if is_remote(url) else Path(path).read_text()
        meta = json.loads(text)
    except FileNotFoundError:
        raise ShardError(f"{path}: not found; is {url} a `tsf shard` output?") from None
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("version") != SHARD_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise ShardError(f"{path}: shard format version {version!r}, this "
                         f"lightning_tsf reads version {SHARD_VERSION}")  # fmt: skip
    return meta


def is_shard_folder(url: str | Path) -> bool:
    """True where ``url`` holds a ``tsf shard`` output (its ``shards.json``); an object-storage
    URL always reads as shards (files are read from local folders only)."""
    return is_remote(url) or (output_dir(url) / SHARD_META).is_file()


def split_dir(url: str | Path, split: str) -> str:
    """Where the chunks of ``split`` are (what ``StreamingDataset`` reads)."""
    return join(url, split)


def sample_checksum(data: bytes) -> str:
    """The checksum a shard sample carries for its video bytes (hex SHA-256)."""
    return hashlib.sha256(data).hexdigest()


def verify_sample(sample: dict[str, Any]) -> str | None:
    """Why a read shard sample's video bytes are not the ones written (a checksum mismatch),
    or None when they are (or the sample predates checksums). Callers report it by
    ``sample["id"]`` and skip the video, as an undecodable one."""
    expected = sample.get(CHECKSUM_KEY)
    if not expected:
        return None
    data = sample.get("video")
    got = sample_checksum(bytes(data) if data is not None else b"")
    if got != expected:
        return (f"checksum mismatch: the video bytes read differ from those written (sha256 "
                f"{got[:12]}..., written {str(expected)[:12]}...); re-shard it")  # fmt: skip
    return None


def check_sample(sample: dict[str, Any], backend: str = "auto", full: bool = False) -> str | None:
    """Why one shard sample cannot be used (checksum mismatch, or undecodable bytes: first,
    middle and last frames, every frame with ``full``), or None when it is fine."""
    from lightning_tsf.data.check import check_reader
    from lightning_tsf.data.decode import VideoDecodeError, make_bytes_reader

    if bad := verify_sample(sample):
        return bad
    try:
        reader = make_bytes_reader(bytes(sample["video"]), str(sample["id"]), backend)
    except VideoDecodeError as err:
        return err.reason
    return check_reader(reader, full)


