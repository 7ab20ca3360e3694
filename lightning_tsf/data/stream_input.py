"""Reading a split of shards as a stream: checked first, then LitData's keyword arguments.

:func:`input_dir` gives ``litdata.StreamingDataset`` its arguments for a folder or an ``s3://``
prefix, after :func:`check_stream` has made sure (before any loader starts) that the split's
``index.json`` parses, its chunks are there at their indexed sizes and the chunk cache is
usable: each fault one :class:`~.storage.StorageError`. :func:`worker_init` sets up the
loader's workers. Apart from :mod:`.storage` (locations, the client) because it installs the
checked downloader of :mod:`.storage_faults`, which builds on :mod:`.storage` itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_tsf.data.storage import (
    StorageError,
    allow_plain_http,
    bucket_of,
    default_cache_dir,
    error_code,
    is_remote,
    s3_client,
    storage_options,
)
from lightning_tsf.data.storage_faults import (
    RESHARD,
    as_storage_error,
    fault_kind,
    install_downloader,
    retrying,
)


@dataclass(frozen=True)
class worker_init:  # noqa: N801 - used like a function: worker_init(options)
    """``worker_init_fn`` for a ``StreamingDataLoader``: :func:`allow_plain_http` and
    :func:`install_downloader` in each worker.

    Needed with spawned workers (litdata's ``optimize`` switches the process to ``spawn``), which
    re-import litdata without the fix. Picklable; ``then`` is called after it (chaining).
    """

    options: Mapping[str, Any] | None = None
    then: Callable[[int], None] | None = None

    def __call__(self, worker_id: int) -> None:
        allow_plain_http((self.options or {}).get("endpoint_url"))
        install_downloader()
        if self.then is not None:
            self.then(worker_id)


def input_dir(
    url: str | os.PathLike[str],
    options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_cache_size: int | str | None = None,
) -> dict:
    """Keyword arguments for ``litdata.StreamingDataset`` to read shards at ``url``.

    Local folder: ``{"input_dir": absolute path}`` (read in place, no cache). Remote:
    ``input_dir`` (the URL), ``cache_dir`` (``cache_dir`` or :func:`default_cache_dir`; litdata
    adds a folder per URL and index version, so a re-sharded prefix is not read stale),
    ``max_cache_size`` (bytes or ``"50GB"``; ``None``: litdata's default, 75% of free disk) and
    ``storage_options``. Checked first (:func:`check_stream`): a fault is one StorageError here,
    before any loader starts. Plain-HTTP endpoints are allowed and the checked downloader
    installed in this process; pass :func:`worker_init` to the loader for its workers.
    """
    url = os.fspath(url)
    if not is_remote(url):
        path = Path(url).expanduser().absolute()
        check_stream(str(path))
        return {"input_dir": str(path)}
    opts = storage_options(url, options)
    allow_plain_http(opts.get("endpoint_url"))
    install_downloader()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    check_stream(url, opts, cache, max_cache_size, resolved=True)
    return {
        "input_dir": url,
        "cache_dir": str(cache.absolute()),
        "max_cache_size": max_cache_size,
        "storage_options": opts,
    }


def _read_index(url: str, opts: Mapping[str, Any], resolved: bool) -> dict:
    """A split's ``index.json``, parsed; one StorageError when it is absent or unreadable."""
    where = f"{url.rstrip('/')}/index.json"
    try:
        if is_remote(url):
            import botocore.exceptions

            client, bucket, key = s3_client(url, opts, resolved=resolved)
            key = f"{key.rstrip('/')}/index.json" if key else "index.json"
            try:
                text = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise StorageError(f"{url}: no index.json under this prefix: nothing "
                                       "sharded there; run `tsf shard SRC OUT` with this URL "
                                       "as OUT, or fix the URL") from None  # fmt: skip
                raise
        else:
            text = Path(where).read_bytes()
        index = json.loads(text)
        if not isinstance(index, dict) or not isinstance(index.get("chunks"), list):
            raise ValueError("no 'chunks' list")
        return index
    except FileNotFoundError:
        raise StorageError(f"{url}: no index.json: nothing sharded there; run `tsf shard SRC "
                           f"{url}` or fix the path") from None  # fmt: skip
    except (ValueError, UnicodeDecodeError) as err:
        raise StorageError(f"{where}: unreadable ({type(err).__name__}: {str(err)[:80]}), "
                           f"truncated or not LitData's index; {RESHARD}") from None  # fmt: skip
    except StorageError:
        raise
    except Exception as exc:
        if fault_kind(exc) == "transient":
            raise  # retried by the caller
        raise as_storage_error(exc, where) or exc from None


def _object_sizes(url: str, opts: Mapping[str, Any], resolved: bool) -> dict[str, int]:
    """Sizes of the objects (or files) directly under a split's prefix, by file name."""
    if not is_remote(url):
        return {p.name: p.stat().st_size for p in Path(url).iterdir() if p.is_file()}
    client, bucket, key = s3_client(url, opts, resolved=resolved)
    prefix = f"{key.rstrip('/')}/" if key else ""
    sizes: dict[str, int] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                sizes[obj["Key"][len(prefix) :]] = int(obj["Size"])
    except Exception as exc:
        if fault_kind(exc) == "transient":
            raise  # retried by the caller
        raise as_storage_error(exc, url) or exc from None
    return sizes


def parse_size(size: int | str | None) -> int | None:
    """``max_cache_size`` in bytes (``"50GB"``, ``"500MB"``, an int); None when unset."""
    if size is None:
        return None
    from litdata.utilities.format import _parse_max_cache_size

    try:
        return int(_parse_max_cache_size(size))
    except Exception:
        raise StorageError(f"max_cache_size={size!r}: expected bytes or a size like '50GB'"
                           ) from None  # fmt: skip


def check_cache(cache: Path, need: int, max_cache_size: int | str | None) -> None:
    """The chunk cache folder can be created and written, holds ``need`` more bytes, and
    ``max_cache_size`` is not below it (LitData would evict a chunk as it reads it)."""
    what = "set data.storage.cache_dir (or LIGHTNING_TSF_CACHE) to a writable folder"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".tsf-write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise StorageError(f"chunk cache {cache}: unusable ({reason}); {what}") from None
    limit = parse_size(max_cache_size)
    if limit is not None and limit < need:
        raise StorageError(f"chunk cache {cache}: max_cache_size {max_cache_size} is below "
                           f"the room of the stream's two largest chunks ({need} bytes); raise "
                           "data.storage.max_cache_size")  # fmt: skip
    free = shutil.disk_usage(cache).free
    if free < need:
        raise StorageError(f"chunk cache {cache}: disk full ({free} bytes free, the two "
                           f"largest chunks need {need}); free space there or {what} on a "
                           "larger disk")  # fmt: skip


def check_stream(
    url: str,
    options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_cache_size: int | str | None = None,
    *,
    resolved: bool = False,
) -> dict:
    """Before reading a split's chunks (``url``: a folder or ``s3://`` prefix holding LitData's
    ``index.json``): the index parses, every chunk it lists is there at its indexed size
    (missing and truncated objects are named, a few of them), and for remote data the cache
    folder is usable with room for two chunks. Each fault is one :class:`StorageError` naming
    the URL or file and what to do. One listing of the prefix: cheap next to an epoch.
    Returns the parsed index."""
    host = str(dict(options or {}).get("endpoint_url") or bucket_of(url) or "")
    index = retrying(lambda: _read_index(url, options or {}, resolved), url, host)
    chunks = [c for c in index["chunks"] if isinstance(c, dict) and c.get("filename")]
    sizes = retrying(lambda: _object_sizes(url, options or {}, resolved), url, host)
    missing = [c["filename"] for c in chunks if c["filename"] not in sizes]
    short = [f"{c['filename']} ({sizes[c['filename']]} of {c['chunk_bytes']} bytes)"
             for c in chunks if c["filename"] in sizes and c.get("chunk_bytes")
             and sizes[c["filename"]] != int(c["chunk_bytes"])]  # fmt: skip
    base = url.rstrip("/")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StorageError(f"{base}: {len(missing)} chunk(s) listed in index.json missing: "
                           f"{', '.join(missing[:3])}{more}; {RESHARD}")  # fmt: skip
    if short:
        more = f" and {len(short) - 3} more" if len(short) > 3 else ""
        raise StorageError(f"{base}: {len(short)} chunk(s) truncated: {', '.join(short[:3])}"
                           f"{more}; {RESHARD}")  # fmt: skip
    if is_remote(url):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        largest = sorted((int(c.get("chunk_bytes") or 0) for c in chunks), reverse=True)
        check_cache(cache.absolute(), sum(largest[:2]), max_cache_size)
    return index
