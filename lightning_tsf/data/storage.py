"""Where shard data lives: local folders or object storage (S3 and S3-compatible servers).

Everything about locations for ``tsf shard`` (writing with ``litdata.optimize``) and for training
from streams (``litdata.StreamingDataset``) goes through these functions, so endpoints,
credentials, the local cache and the plain-HTTP fix are decided in one place:

- :func:`is_remote`: ``s3://``, ``gs://``, ``azure://`` URLs (only S3 is tested here).
- :func:`storage_options`: endpoint and region for litdata (boto3 client keywords), from
  ``data.storage.options`` or the usual AWS variables.
- :func:`check_remote`: one clear :class:`StorageError` before training for a missing bucket,
  rejected credentials or an unreachable endpoint, instead of retries and a traceback later.
- :func:`output_dir` / :func:`input_dir`: keyword arguments for ``litdata.optimize`` and
  ``litdata.StreamingDataset``; :func:`worker_init` for the loader's workers.
- :func:`allow_plain_http`: litdata 0.2.76 cannot talk to ``http://`` endpoints without it.
- :func:`s3_client`: the one boto3 client factory (checks, the shard writer's reads and uploads).
- :func:`check_stream`: before training, a split's ``index.json`` parsed, its chunks present
  at their indexed sizes and the chunk cache usable, each fault one :class:`StorageError`.
- :class:`CheckedS3Downloader` (installed by :func:`input_dir` and :func:`worker_init`):
  chunk downloads with bounded timeouts, retried with backoff through an outage (one warning),
  a missing, short or denied object or a full cache disk as one :class:`StorageError`.
- :func:`as_storage_error`: what LitData, obstore or boto3 raised while streaming, as that line.
- :func:`redact` / :func:`secret_values`: credentials never written (config, checkpoints, W&B).

litdata and boto3 are imported inside functions: ``import lightning_tsf`` stays light, and
litdata is an optional install (the ``shards`` extra, see docs/data.md).
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REMOTE_SCHEMES = ("s3", "gs", "azure")

# boto3 ``client("s3", ...)`` keywords litdata passes through (plus its own data_connection_id).
S3_OPTION_KEYS = frozenset(
    {
        "endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "region_name",
        "verify",
        "config",
        "data_connection_id",
    }
)


class StorageError(ValueError):
    """A data location that cannot be used; the message says which and what to fix."""


REDACTED = "***"
# Keys whose values are credentials: written nowhere (config.yaml, checkpoints, W&B, logs).
SECRET_KEY = re.compile(
    r"secret|token|passw|credential|private_?key|api_?key|access_?key",
    re.IGNORECASE,
)


def is_secret_key(name: object) -> bool:
    """Whether a config key names a credential (``aws_secret_access_key``, ``*_token``, ...)."""
    return isinstance(name, str) and bool(SECRET_KEY.search(name))


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, namespaces) with every value under a secret-named key
    replaced by ``***``: what may be written to files and loggers."""
    items = getattr(obj, "items", None)
    if callable(items) and not isinstance(obj, str):
        out = {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v))
               for k, v in items()}  # fmt: skip
        try:
            return type(obj)(out)
        except Exception:
            return out
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj)
    return obj


def secret_values(obj: Any) -> set[str]:
    """The string values under secret-named keys anywhere in ``obj`` (to scrub them from text
    such as the process's own command line)."""
    found: set[str] = set()
    items = getattr(obj, "items", None)
    if callable(items) and not isinstance(obj, str):
        for k, v in items():
            if is_secret_key(k) and isinstance(v, str) and v and v != REDACTED:
                found.add(v)
            else:
                found |= secret_values(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            found |= secret_values(v)
    return found


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise StorageError(f"{name}={os.environ[name]!r}: expected seconds (a number)") from None


def request_timeout() -> float:
    """Seconds a storage request may wait to connect or for its next bytes before it counts as
    failed (``LIGHTNING_TSF_STORAGE_TIMEOUT``, default 30)."""
    return _seconds("LIGHTNING_TSF_STORAGE_TIMEOUT", 30.0)


def retry_window() -> float:
    """Seconds an outage is retried (backoff 0.5 s doubling to 15 s) before it stops training
    (``LIGHTNING_TSF_STORAGE_RETRY``, default 300)."""
    return _seconds("LIGHTNING_TSF_STORAGE_RETRY", 300.0)


def is_remote(url: str | os.PathLike[str]) -> bool:
    """Whether ``url`` is an object-storage URL (``s3://``, ``gs://``, ``azure://``)."""
    return urlparse(os.fspath(url)).scheme in REMOTE_SCHEMES


def _scheme(url: str) -> str:
    return urlparse(url).scheme


def bucket_of(url: str) -> str:
    """The bucket (``s3://BUCKET/prefix``) of a remote URL."""
    return urlparse(url).netloc


def storage_options(url: str | os.PathLike[str], given: Mapping[str, Any] | None = None) -> dict:
    """Connection options for litdata (``storage_options=``) for data at ``url``.

    For ``s3://``: ``given`` (the config's ``data.storage.options``) wins; otherwise the endpoint
    comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` and the region from ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``. Keys are boto3's ``client("s3", ...)`` keywords (``endpoint_url``,
    ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``region_name``),
    which is what litdata hands to boto3. Credentials not given are left to boto3's own chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role), so secrets
    from the environment are never copied into a dict that might be logged or saved.
    Local paths get ``{}``; other schemes get ``given`` as it is. Values ``***`` (a
    redacted config written by a run) are dropped.
    """
    url = os.fspath(url)
    # a value redacted in a saved config (``***``) is no credential: boto3's chain finds it
    options = {k: v for k, v in dict(given or {}).items() if v != REDACTED}
    if not is_remote(url):
        return {}
    if _scheme(url) != "s3":
        return options
    unknown = sorted(set(options) - S3_OPTION_KEYS)
    if unknown:
        raise StorageError(
            f"data.storage.options for {url}: unknown key(s) {', '.join(unknown)}; "
            f"use boto3's names: {', '.join(sorted(S3_OPTION_KEYS - {'config', 'verify'}))}"
        )
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not options.get("endpoint_url"):
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and not options.get("region_name"):
        options["region_name"] = region
    return options


def allow_plain_http(endpoint: str | None) -> bool:
    """Let litdata's obstore client use a plain ``http://`` endpoint; True when it was needed.

    Why: litdata 0.2.76 downloads and uploads chunks with obstore, whose ``S3Store`` refuses
    ``http://`` URLs unless its client option ``allow_http`` is set ("HTTP error: builder
    error"), and litdata builds every store from the module dict
    ``litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS`` without it. So a loopback test
    server or an on-prem MinIO/Ceph endpoint on plain HTTP fails while boto3 (index.json) works.
    Setting ``AWS_ALLOW_HTTP`` does not help: litdata's explicit client options win over it.
    The dict is per process: a spawned DataLoader worker re-imports litdata, so the loader must
    also run :func:`worker_init` in its workers. Idempotent; ``https://`` and no endpoint change
    nothing. Remove when litdata passes ``allow_http`` for http endpoints itself.
    """
    if not endpoint or urlparse(endpoint).scheme != "http":
        return False
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if not isinstance(options, dict):
        raise StorageError(
            f"cannot allow plain HTTP for {endpoint}: this litdata version has no "
            "litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS dict (written for 0.2.76); "
            "use an https:// endpoint or pip install --no-deps litdata==0.2.76"
        )
    options["allow_http"] = "true"
    return True


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


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) or str(
        (response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}).get(
            "HTTPStatusCode", ""
        )
    )


def s3_client(
    url: str, options: Mapping[str, Any] | None = None, *, resolved: bool = False
) -> tuple[Any, str, str]:
    """The one boto3 S3 client factory: ``(client, bucket, key)`` for ``url``.

    ``options``: the config's ``data.storage.options`` (``resolved``: already
    :func:`storage_options`' result). Bounded waits (:func:`request_timeout` to connect and per
    read, two attempts), so a dead endpoint is an error in seconds, not a hang."""
    import boto3
    import botocore.config

    opts = dict(options or {}) if resolved else storage_options(url, options)
    opts.pop("data_connection_id", None)
    given = opts.pop("config", None)
    timeout = request_timeout()
    config = botocore.config.Config(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    parsed = urlparse(url)
    client = boto3.client("s3", config=config.merge(given) if given else config, **opts)
    return client, parsed.netloc, parsed.path.lstrip("/")


def check_remote(
    url: str | os.PathLike[str], options: Mapping[str, Any] | None = None, *, index: bool = False
) -> None:
    """Before any work, make sure the bucket of ``url`` is there and the credentials are accepted.

    Raises one-line :class:`StorageError`\\ s naming the URL, the endpoint and what to fix: a
    missing bucket, rejected or missing credentials, an unreachable endpoint, and with
    ``index=True`` (reading) a prefix without litdata's ``index.json`` (nothing sharded there).
    Local paths and non-S3 schemes are not checked here (litdata reports those itself).
    ``options`` are :func:`storage_options`' result.
    """
    url = os.fspath(url)
    if not is_remote(url) or _scheme(url) != "s3":
        return
    import botocore.exceptions

    endpoint = dict(options or {}).get("endpoint_url") or "AWS S3"
    bucket = bucket_of(url)
    prefix = urlparse(url).path.strip("/")
    where = f"{url} (endpoint {endpoint})"
    if not bucket:
        raise StorageError(f"{url}: no bucket in the URL; write s3://BUCKET/PREFIX")
    client, _, _ = s3_client(url, options, resolved=True)
    try:
        client.head_bucket(Bucket=bucket)
        if index:
            key = f"{prefix}/index.json" if prefix else "index.json"
            try:
                client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise StorageError(
                        f"{where}: no index.json under this prefix: nothing sharded there; "
                        "run `tsf shard SRC OUT` with this URL as OUT, or fix the URL"
                    ) from None
                raise
    except botocore.exceptions.NoCredentialsError:
        raise StorageError(
            f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or an AWS profile), or data.storage.options"
        ) from None
    except botocore.exceptions.EndpointConnectionError:
        raise StorageError(
            f"{where}: cannot connect to the endpoint; check AWS_ENDPOINT_URL or "
            "data.storage.options.endpoint_url and that the server is up"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"{where}: bucket '{bucket}' does not exist; create it or fix the URL"
            ) from None
        if code == "403":  # HEAD replies carry no body: ask again for the reason
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except botocore.exceptions.ClientError as again:
                code = _error_code(again) or code
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(
                f"{where}: access to bucket '{bucket}' denied ({code}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or data.storage.options and the "
                "bucket's permissions"
            ) from None
        raise StorageError(f"{where}: {code or type(exc).__name__}: {exc}") from None


def default_cache_dir() -> Path:
    """Root of the local chunk cache for remote streams.

    ``$LIGHTNING_TSF_CACHE/streams``, else ``~/.cache/lightning_tsf/streams``. litdata keeps
    one sub-folder per URL (and per version of its index.json) below it.
    """
    root = os.environ.get("LIGHTNING_TSF_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "lightning_tsf"
    return base / "streams"


def output_dir(url: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> dict:
    """Keyword arguments for ``litdata.optimize`` to write shards to ``url``.

    ``{"output_dir": ..., "storage_options": ...}``: an absolute folder for a local path, the URL
    and :func:`storage_options` for a remote one (plain-HTTP endpoints allowed on the way).
    """
    url = os.fspath(url)
    if not is_remote(url):
        return {"output_dir": str(Path(url).expanduser().absolute()), "storage_options": {}}
    opts = storage_options(url, options)
    allow_plain_http(opts.get("endpoint_url"))
    return {"output_dir": url, "storage_options": opts}


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


RESHARD = "run `tsf shard` again into a new prefix (or delete this split there first)"


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
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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
        if _kind(exc) == "transient":
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
        if _kind(exc) == "transient":
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


def as_storage_error(exc: BaseException, url: str = "") -> StorageError | None:
    """What LitData, obstore or boto3 raised while streaming ``url``, as one-line
    :class:`StorageError` naming it and what to do; None when ``exc`` is no storage fault.

    Recognises a :class:`StorageError` anywhere in the cause chain or named in a DataLoader
    worker's re-raised message, LitData's chunk wait timeouts and prefetch-thread crashes,
    a full disk, refused connections and rejected credentials."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, StorageError):
            return StorageError(str(cur).splitlines()[0])
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    match = re.search(r"StorageError: (.+)", text)
    if match:
        return StorageError(match.group(1).strip())
    where = url or "object storage"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in text:
        return StorageError(f"{where}: no space left on the chunk cache's disk; free space "
                            "there or set data.storage.cache_dir / "
                            "data.storage.max_cache_size")  # fmt: skip
    name = type(exc).__name__
    if name == "ChunkWaitTimeoutError" or "Chunk prefetch thread crashed" in text:
        first = text.splitlines()[0][:200] if text else name
        return StorageError(f"{where}: chunk download failed ({first}); check the endpoint, "
                            "the objects and the cache disk, then resume with "
                            "--ckpt_path latest")  # fmt: skip
    code = _error_code(exc) if hasattr(exc, "response") else ""
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError") or "Connection refused" in text:  # fmt: skip
        return StorageError(f"{where}: cannot reach the endpoint ({name}); check that the "
                            "server is up, then resume with --ckpt_path latest")  # fmt: skip
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StorageError(f"{where}: access denied ({code}); check the credentials "
                            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE)")  # fmt: skip
    if code in ("404", "NoSuchKey", "NoSuchBucket"):
        return StorageError(f"{where}: not found ({code}); {RESHARD}")
    return None


# --- chunk downloads -------------------------------------------------------------------------

_warned: set[str] = set()  # outages already reported by this process (one warning each)


def _kind(exc: BaseException) -> str:
    """``missing``, ``denied``, ``full`` (permanent) or ``transient`` (retry) for a download
    error of obstore or boto3."""
    name = type(exc).__name__
    code = _error_code(exc) if hasattr(exc, "response") else ""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "full"
    if name == "NotFoundError" or code in ("404", "NoSuchKey"):
        return "missing"
    if isinstance(exc, FileNotFoundError):  # obstore's 404 has no file name; the OS's has one
        return "cache" if exc.filename else "missing"
    if name in ("PermissionDeniedError", "UnauthenticatedError") or code in (
        "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):  # fmt: skip
        return "denied"
    if isinstance(exc, PermissionError) or isinstance(exc, OSError) and exc.errno in (
        errno.EROFS, errno.ENOTDIR, errno.EACCES):  # fmt: skip
        return "cache"
    return "transient"


def __getattr__(name: str) -> Any:
    """``CheckedS3Downloader`` built on first use (litdata is an optional import), under its
    module-level name so that pickling it to spawned loader workers finds it."""
    if name == "CheckedS3Downloader":
        cls = _make_checked_downloader()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_checked_downloader() -> type:
    """:class:`CheckedS3Downloader` (see :func:`__getattr__`)."""
    from filelock import FileLock, Timeout
    from litdata.streaming.downloader import (
        S3Downloader,
        _cached_obstore_store,
        _indexed_object_bytes,
        _obstore_get_to_tmp,
        _use_obstore_for_s3_key,
    )

    class CheckedS3Downloader(S3Downloader):
        """LitData's S3 downloader with bounded waits and one clear error per fault.

        Each chunk GET (obstore in the prefetch thread, boto3 for ``index.json``) may wait
        :func:`request_timeout` to connect or for more bytes; a failure that can pass
        (refused or reset connection, timeout, 5xx) is retried with backoff for
        :func:`retry_window` seconds, reported once per process as a warning line; a missing
        (404), denied (403) or short object (fewer bytes than ``index.json`` says), or a full
        or unwritable cache disk, raises :class:`StorageError` at once."""

        def _get_store(self, bucket: str) -> Any:
            return _cached_obstore_store(self, lambda: _obstore_store(bucket, self._client))

        def download_file(self, remote_filepath: str, local_filepath: str) -> None:
            parsed = urlparse(remote_filepath)
            if os.path.exists(local_filepath):
                return
            index = parsed.path.endswith("index.json")
            try:
                with FileLock(local_filepath + ".lock", timeout=1 if index else 0):
                    if not os.path.exists(local_filepath):
                        self._fetch(remote_filepath, local_filepath, parsed)
            except Timeout:
                return  # another worker downloads it; LitData's waiters see it published

        def _fetch(self, remote: str, local: str, parsed: Any) -> None:
            host = self._client.client.meta.endpoint_url or parsed.netloc
            retrying(lambda: self._once(remote, local, parsed), remote, host)

        def _once(self, remote: str, local: str, parsed: Any) -> None:
            """One attempt; permanent faults as StorageError, transient ones raised as is."""
            key = parsed.path.lstrip("/")
            expected = _indexed_object_bytes(self._chunks, parsed.path)
            tmp = self._temp_download_path(local)
            try:
                os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
                if _use_obstore_for_s3_key(parsed.path):
                    _obstore_get_to_tmp(self._get_store(parsed.netloc), key, tmp, expected)
                else:
                    self._client.client.download_file(parsed.netloc, key, tmp)
                got = os.path.getsize(tmp)
                if expected and got != expected:
                    raise StorageError(f"{remote}: object truncated ({got} of {expected} bytes "
                                       f"that index.json lists); {RESHARD}")  # fmt: skip
                self._publish_file(tmp, local)
            except Exception as exc:
                _remove(tmp)
                kind = "" if isinstance(exc, StorageError) else _kind(exc)
                if kind == "missing":
                    raise StorageError(f"{remote}: object missing (404); {RESHARD}") from None
                if kind == "denied":
                    raise StorageError(f"{remote}: access denied ({_reason(exc)}); check the "
                                       "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                       "AWS_PROFILE)") from None  # fmt: skip
                if kind in ("full", "cache"):
                    what = "no space left" if kind == "full" else f"cannot write ({_reason(exc)})"
                    raise StorageError(f"chunk cache {os.path.dirname(local)}: {what}; free "
                                       "space there or set data.storage.cache_dir / "
                                       "data.storage.max_cache_size") from None  # fmt: skip
                raise

    CheckedS3Downloader.__module__ = __name__
    CheckedS3Downloader.__qualname__ = "CheckedS3Downloader"
    return CheckedS3Downloader


def _reason(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}"


def retrying(call: Callable[[], Any], where: str, host: str) -> Any:
    """``call()``, retried through a transient outage (refused or reset connections, timeouts,
    5xx) with backoff (0.5 s doubling to 15 s, jittered) for :func:`retry_window` seconds; the
    first failure per ``host`` and process is one warning line on stderr. A permanent fault
    (missing, denied, full: :func:`_kind`) or a :class:`StorageError` passes through; an
    outage longer than the window ends as one StorageError naming ``where``."""
    start, delay = time.monotonic(), 0.5
    while True:
        try:
            return call()
        except StorageError:
            raise
        except Exception as exc:
            if _kind(exc) != "transient":
                raise
            waited = time.monotonic() - start
            if waited + delay > retry_window():
                raise StorageError(f"{where}: storage unreachable for {waited:.0f} s "
                                   f"({_reason(exc)}); check the endpoint, then resume with "
                                   "--ckpt_path latest") from None  # fmt: skip
            if host not in _warned:
                _warned.add(host)
                print(f"tsf: warning: storage at {host} failing ({_reason(exc)}); retrying "
                      f"with backoff for up to {retry_window():.0f} s", file=sys.stderr,
                      flush=True)  # fmt: skip
            time.sleep(delay * (0.5 + random.random()))
            delay = min(15.0, delay * 2)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _obstore_store(bucket: str, client: Any) -> Any:
    """An obstore ``S3Store`` like litdata's (same endpoint, region, credentials) with bounded
    waits and no retries of its own (:class:`CheckedS3Downloader` retries, and says so)."""
    from datetime import timedelta

    from litdata.streaming import downloader
    from obstore.store import S3Store

    boto = client.client
    config: dict[str, Any] = {}
    if boto.meta.region_name:
        config["region"] = boto.meta.region_name
    if boto.meta.endpoint_url:
        config["endpoint"] = boto.meta.endpoint_url
        if "amazonaws.com" not in boto.meta.endpoint_url:
            config["virtual_hosted_style_request"] = False
    timeout = f"{max(1, int(request_timeout()))}s"
    client_options = {**downloader._OBSTORE_CLIENT_OPTIONS, "connect_timeout": timeout,
                      "read_timeout": timeout}  # fmt: skip
    return S3Store(
        bucket,
        config=config or None,
        credential_provider=downloader._obstore_credential_provider(client),
        client_options=client_options,
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
    )


def install_downloader() -> None:
    """Make LitData download ``s3://`` chunks with :class:`CheckedS3Downloader` in this
    process (idempotent), and keep its prefetch thread from printing a traceback for a
    :class:`StorageError` (the loader reports it, in one line)."""
    from litdata.streaming import downloader, reader

    cls = globals().get("CheckedS3Downloader") or __getattr__("CheckedS3Downloader")
    if downloader._DOWNLOADERS.get("s3://") is not cls:
        downloader.register_downloader("s3://", cls, overwrite=True)
    thread = reader.PrepareChunksThread
    report = thread._report_crash
    if not getattr(report, "checked", False):

        def quiet_report(self: Any, exc: BaseException) -> None:
            if not isinstance(exc, StorageError):
                report(self, exc)

        quiet_report.checked = True  # type: ignore[attr-defined]
        thread._report_crash = quiet_report


@contextmanager
def keep_start_method() -> Iterator[None]:
    """Undo ``litdata.optimize``'s process-wide ``multiprocessing.set_start_method("spawn")``.

    optimize forces the start method for the whole process; wrap it in this so later
    DataLoaders (and other code) keep the start method they had.
    """
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)
