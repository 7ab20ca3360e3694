"""The zoo's cache folder: where files go, the sha256 recorded for every file that verified
(``zoo.lock.json``), and the lock that lets one process per folder download (:mod:`.zoo`)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_tsf.models.names import CACHE_ENV
from lightning_tsf.models.zoo_catalog import ZooError

LOCK_JSON = "zoo.lock.json"  # sha256 of every file that verified, per cache folder
LOCK_TIMEOUT = 6 * 3600.0  # seconds a process waits for another one's download


_HASHES: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime) -> sha256, per process


def sha256(path: Path) -> str:
    """sha256 of a file, hashed once per process while its size and mtime hold."""
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def read_lock(folder: Path) -> dict[str, dict]:
    """The records of ``folder``'s ``zoo.lock.json``: key -> sha256, size, source, time."""
    path = folder / LOCK_JSON
    try:
        return dict(json.loads(path.read_text())["files"])
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as err:
        raise ZooError(f"{path} is not a zoo lock file ({err!r}); delete it to record the "
                       "hashes again") from err  # fmt: skip


def record(folder: Path, key: str, path: Path, source: str) -> None:
    """Add ``path``'s sha256 to the lock file (caller holds the download lock)."""
    files = read_lock(folder)
    files[key] = {"sha256": sha256(path), "size": path.stat().st_size, "source": source,
                  "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    tmp = folder / f".{LOCK_JSON}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / LOCK_JSON)


def recorded(folder: Path, key: str, path: Path) -> bool:
    """True when ``path`` has the sha256 recorded for ``key``, False when none is recorded; a
    :class:`ZooError` when it differs (the file changed after it verified)."""
    known = read_lock(folder).get(key)
    if known is None:
        return False
    digest = sha256(path)
    if digest != known["sha256"]:
        raise ZooError(
            f"{path} changed since it verified ({known['verified']}, from {known['source']}): "
            f"sha256 {digest[:16]}... is not the {known['sha256'][:16]}... recorded in "
            f"{folder / LOCK_JSON}; delete the file to download it again (or its entry in "
            f"{LOCK_JSON} if you replaced it on purpose)"
        )
    return True


@contextmanager
def download_lock(folder: Path, timeout: float) -> Iterator[None]:
    """One downloading process per cache folder (shared file systems included); others wait."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / ".zoo.download.lock"), timeout=timeout)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout as err:
        raise ZooError(f"waited {timeout:.0f} s for {lock.lock_file}: another process is "
                       "downloading; if none is, delete that file") from err  # fmt: skip
    except OSError as err:  # a read-only or missing cache folder
        raise ZooError(f"cannot write to {folder} ({err.strerror or err}); set {CACHE_ENV} to "
                       "a writable folder") from err  # fmt: skip
    try:
        yield
    finally:
        lock.release()
