"""Faults of object storage while streaming, each one clear :class:`StorageError` line.

Kept apart from :mod:`.storage` (where data lives) because this is the policy for when it
fails, and it patches LitData: a transient outage (refused or reset connections, timeouts, 5xx)
is retried with backoff (:func:`retrying`, one warning per host); a missing, short or denied
object or a full cache disk stops at once.

- :class:`CheckedS3Downloader` (installed by :func:`install_downloader`): LitData's chunk
  downloads with bounded timeouts, through :func:`retrying`.
- :func:`as_storage_error`: what LitData, obstore or boto3 raised while streaming, as that line.

litdata, obstore and filelock are imported inside functions (litdata is an optional install).
"""

from __future__ import annotations

import errno
import os
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from lightning_tsf.data.storage import StorageError, error_code, request_timeout, retry_window

RESHARD = "run `tsf shard` again into a new prefix (or delete this split there first)"


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
    code = error_code(exc) if hasattr(exc, "response") else ""
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


def fault_kind(exc: BaseException) -> str:
    """``missing``, ``denied``, ``full`` (permanent) or ``transient`` (retry) for a download
    error of obstore or boto3."""
    name = type(exc).__name__
    code = error_code(exc) if hasattr(exc, "response") else ""
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
    """:class:`CheckedS3Downloader` (see :func:`__getattr__`): LitData's class to subclass is
    only importable here; one download attempt is :func:`_download_once`."""
    from filelock import FileLock, Timeout
    from litdata.streaming.downloader import S3Downloader, _cached_obstore_store

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
            retrying(lambda: _download_once(self, remote, local, parsed), remote, host)

    CheckedS3Downloader.__module__ = __name__
    CheckedS3Downloader.__qualname__ = "CheckedS3Downloader"
    return CheckedS3Downloader


def _download_once(downloader: Any, remote: str, local: str, parsed: Any) -> None:
    """One attempt of :class:`CheckedS3Downloader` to fetch ``remote`` to ``local``:
    permanent faults as StorageError, transient ones raised as is (:func:`retrying` retries)."""
    from litdata.streaming.downloader import (
        _indexed_object_bytes,
        _obstore_get_to_tmp,
        _use_obstore_for_s3_key,
    )

    key = parsed.path.lstrip("/")
    expected = _indexed_object_bytes(downloader._chunks, parsed.path)
    tmp = downloader._temp_download_path(local)
    try:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        if _use_obstore_for_s3_key(parsed.path):
            _obstore_get_to_tmp(downloader._get_store(parsed.netloc), key, tmp, expected)
        else:
            downloader._client.client.download_file(parsed.netloc, key, tmp)
        got = os.path.getsize(tmp)
        if expected and got != expected:
            raise StorageError(f"{remote}: object truncated ({got} of {expected} bytes "
                               f"that index.json lists); {RESHARD}")  # fmt: skip
        downloader._publish_file(tmp, local)
    except Exception as exc:
        _remove(tmp)
        kind = "" if isinstance(exc, StorageError) else fault_kind(exc)
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


def _reason(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}"


def retrying(call: Callable[[], Any], where: str, host: str) -> Any:
    """``call()``, retried through a transient outage (refused or reset connections, timeouts,
    5xx) with backoff (0.5 s doubling to 15 s, jittered) for :func:`retry_window` seconds; the
    first failure per ``host`` and process is one warning line on stderr. A permanent fault
    (missing, denied, full: :func:`fault_kind`) or a :class:`StorageError` passes through; an
    outage longer than the window ends as one StorageError naming ``where``."""
    start, delay = time.monotonic(), 0.5
    while True:
        try:
            return call()
        except StorageError:
            raise
        except Exception as exc:
            if fault_kind(exc) != "transient":
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
