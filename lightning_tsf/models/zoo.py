"""Pretrained weights a user can get in one command: the official TimeSformer checkpoints and
the ImageNet-21K ViT-B/16 the paper initialises from.

``tsf weights list`` prints :data:`ZOO`; ``tsf weights download NAME`` (or
``model.pretrained: zoo:NAME`` in an experiment) fetches a file into the cache
(``$LIGHTNING_TSF_CACHE``, default ``~/.cache/lightning_tsf``): with a progress bar, resuming
an interrupted download (HTTP ``Range``), into a temporary file that is checked (its
sha256 where known, and a strict load into the matching model) before it is renamed into
place. Nothing is ever loaded from a half-written file.

Sources, in this order (:func:`sources`): a mirror alone when ``$LIGHTNING_TSF_ZOO_URL`` (or
``tsf weights download --from``) names one; else the release link, then the HF hub copy where
one exists (:attr:`ZooEntry.hf`, through ``huggingface_hub``: ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and its cache apply). One process per cache downloads, under a file lock
(``<cache>/.zoo.download.lock``); the others wait for the verified file. The sha256 of a file
is recorded in ``<cache>/zoo.lock.json`` the first time it verifies and checked on every later
use: a file that changed is refused.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from lightning_tsf.models.checkpoint import (
    CheckpointError,
    checkpoint_state,
    head_classes,
    load_checkpoint,
    read_checkpoint,
)
from lightning_tsf.models.names import CACHE_ENV, MIRROR_ENV, cache_dir
from lightning_tsf.models.presets import create_model
from lightning_tsf.models.zoo_catalog import PREFIX, ZOO, NotInSource, ZooEntry, ZooError, entry
from lightning_tsf.models.zoo_lock import (
    LOCK_JSON,
    LOCK_TIMEOUT,
    download_lock,
    read_lock,
    record,
    recorded,
    sha256,
)

__all__ = [
    "CACHE_ENV", "HF_FILE", "LOCK_JSON", "MIRROR_ENV", "PREFIX", "ZOO", "Fetched", "NotInSource",
    "Source", "ZooEntry", "ZooError", "cache_dir", "cached", "download", "entry", "fetch",
    "read_lock", "resolve", "sources", "verify",
]  # fmt: skip

HF_FILE = "pytorch_model.bin"  # the weights file of the HF hub copies


@dataclass(frozen=True)
class Source:
    """Where a zoo file can come from: ``name`` (``mirror``, ``release`` or ``hf``), the layout
    ``kind`` of its file for ``load_checkpoint``, and ``where`` (a URL, a folder or an HF repo)."""

    name: str
    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.name} {self.where}"


@dataclass(frozen=True)
class Fetched:
    """A verified local file of a zoo entry: its ``path``, layout ``kind`` and ``source`` name
    (``cache`` when it was there already)."""

    path: Path
    kind: str
    source: str


def sources(item: ZooEntry, mirror: str | None = None) -> list[Source]:
    """Where ``item`` is fetched from, in order.

    A mirror (``mirror``, else ``$LIGHTNING_TSF_ZOO_URL``) is the only source when set: a closed
    cluster reaches nothing else, and trying the internet would only add timeouts. Otherwise the
    release link comes first: it is the file the official accuracies were measured with, in the
    layout the experiments name (``pretrained_kind``); the HF hub copy (the same tensors under
    transformers' names, ``kind="hf"``) follows where one exists, for when the release link is
    down, refused or rate-limited.
    """
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        return [Source("mirror", item.kind, mirror)]
    found = [Source("release", item.kind, item.url)]
    if item.hf:
        found.append(Source("hf", "hf", item.hf))
    return found


def verify(item: ZooEntry, path: Path) -> None:
    """The sha256 where known, then a strict load into the matching model (its class
    count read from the file's head, and checked against the entry's where it has one)."""
    if item.sha256 is not None and sha256(path) != item.sha256:
        raise ZooError(f"{path}: sha256 differs from the known {item.sha256}")
    try:
        obj = read_checkpoint(path)
        classes = head_classes(checkpoint_state(obj))
        if item.num_classes and classes is not None and classes != item.num_classes:
            raise CheckpointError(f"its head has {classes} classes, expected {item.num_classes}")
        model = create_model(item.preset, num_frames=item.num_frames,
                             num_classes=classes or item.num_classes or 0,
                             attention_type=item.scheme, drop_path_rate=0.0)  # fmt: skip
        load_checkpoint(model, obj, kind=item.kind, replace_head=False)
    except (CheckpointError, FileNotFoundError) as err:
        raise ZooError(f"{path} does not load into {item.name}'s model: {err}") from err


def _hf_key(item: ZooEntry) -> str:
    return f"hf:{item.hf}/{HF_FILE}"


def _hf_cache() -> str | None:
    """The HF hub cache, read from the environment now (``huggingface_hub`` reads it once, at
    import): ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, else the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _present(item: ZooEntry, folder: Path) -> list[tuple[str, str, Path]]:
    """``(lock key, kind, path)`` of the local copies of ``item``: the zoo file in ``folder``,
    then the HF copy in the HF hub cache. No network."""
    found = []
    if (folder / item.file).is_file():
        found.append((item.file, item.kind, folder / item.file))
    if item.hf:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(item.hf, HF_FILE, cache_dir=_hf_cache())
        if isinstance(hit, str):
            found.append((_hf_key(item), "hf", Path(hit)))
    return found


def cached(item: ZooEntry | str, directory: str | Path | None = None) -> Fetched | None:
    """The local copy of ``item`` whose sha256 matches its record, or None; no network."""
    item = entry(item) if isinstance(item, str) else item
    folder = Path(directory) if directory is not None else cache_dir()
    for key, kind, path in _present(item, folder):
        if recorded(folder, key, path):
            return Fetched(path, kind, "cache")
    return None


def _say(message: str) -> None:
    print(f"zoo: {message}", file=sys.stderr, flush=True)


def fetch(item: ZooEntry | str, directory: str | Path | None = None, *, download: bool = True,
          mirror: str | None = None, progress: bool = True, retries: int = 3,
          timeout: float = 60.0, lock_timeout: float = LOCK_TIMEOUT) -> Fetched:  # fmt: skip
    """The verified local file of ``item`` in ``directory`` (default :func:`cache_dir`).

    A copy whose sha256 matches its record is used as it is. Else, under the folder's download
    lock (waiting for another process's download first): a copy never verified is verified
    and recorded; a missing one is downloaded from :func:`sources` in order (the source named
    on stderr) unless ``download`` is False, which raises a :class:`ZooError` instead.
    """
    item = entry(item) if isinstance(item, str) else item
    folder = Path(directory) if directory is not None else cache_dir()
    hit = cached(item, folder)
    if hit is not None:
        return hit
    with download_lock(folder, lock_timeout):
        hit = cached(item, folder)  # another process finished it while this one waited
        if hit is not None:
            return hit
        for key, kind, path in _present(item, folder):  # copied in by hand: verify once
            verify(replace(item, kind=kind), path)
            record(folder, key, path, "found in the cache")
            return Fetched(path, kind, "cache")
        if not download:
            raise ZooError(f"{PREFIX}{item.name} is not in {folder}: run `tsf weights "
                           f"download {item.name}` (or set {CACHE_ENV})")  # fmt: skip
        return _download(item, folder, sources(item, mirror), progress, retries, timeout)


def _download(item: ZooEntry, folder: Path, chain: list[Source], progress: bool, retries: int,
              timeout: float) -> Fetched:  # fmt: skip
    errors: list[ZooError] = []
    for i, source in enumerate(chain):
        _say(f"{item.name}: downloading from {source}")
        try:
            if source.name == "hf":
                path, key = _from_hub(item, progress, timeout), _hf_key(item)
            else:
                path = _from_file_source(item, source, folder, progress, retries, timeout)
                key = item.file
        except ZooError as err:
            errors.append(err)
            if i + 1 < len(chain):
                _say(f"{item.name}: {source.name} failed ({err}); trying {chain[i + 1]}")
            continue
        record(folder, key, path, str(source))
        _say(f"{item.name}: {path} from {source.name} (verified; sha256 in {folder / LOCK_JSON})")
        return Fetched(path, source.kind, source.name)
    if len(errors) == 1:
        raise errors[0]
    tried = "; ".join(f"{s.name}: {e}" for s, e in zip(chain, errors))
    raise ZooError(f"could not download {item.name} from any source: {tried}")


def _manual_step(item: ZooEntry, path: Path) -> str:
    return (f"Download it by hand (a browser, curl -L -C -) to {path}, or run `tsf weights "
            f"download {item.name}` where the internet is reachable and copy {cache_dir()} here "
            f"({CACHE_ENV} sets the folder; {MIRROR_ENV} names a mirror).")  # fmt: skip


def _from_file_source(item: ZooEntry, source: Source, folder: Path, progress: bool,
                      retries: int, timeout: float) -> Path:  # fmt: skip
    """Download (URL) or copy (folder) ``item.file`` into ``folder``, verified, renamed in."""
    path = folder / item.file
    part = path.with_name(path.name + ".part")
    where = source.where
    if where.startswith(("http://", "https://")):
        url = where if source.name == "release" else f"{where.rstrip('/')}/{item.file}"
        _fetch_retrying(item, url, part, path, progress, retries, timeout)
    else:
        origin = Path(where).expanduser() / item.file
        if not origin.is_file():
            raise NotInSource(f"{origin} does not exist (a mirror folder holds the zoo's file "
                              "names: `tsf weights list`)")  # fmt: skip
        if origin.resolve() == path.resolve():
            part = path  # the mirror is this folder: verify in place
        else:
            shutil.copyfile(origin, part)
    try:
        verify(item, part)
    except ZooError:
        if part != path:
            part.unlink(missing_ok=True)  # never keep a file that does not load
        raise
    os.replace(part, path)
    return path


def _fetch_retrying(item: ZooEntry, url: str, part: Path, path: Path, progress: bool,
                    retries: int, timeout: float) -> None:  # fmt: skip
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, progress, timeout)
            return
        except OSError as err:  # connection refused or reset, timeouts, HTTP errors
            if isinstance(err, urllib.error.HTTPError) or attempt == retries:
                kind = NotInSource if getattr(err, "code", None) == 404 else ZooError
                raise kind(f"could not download {item.name} from {url} ({type(err).__name__}: "
                           f"{err}). {_manual_step(item, path)}") from err  # fmt: skip


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its current size)."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # the server ignored Range: start again
            have = 0
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        with part.open(mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                        desc=part.name.removesuffix(".part"),
                                        disable=not progress) as bar:  # fmt: skip
            for block in iter(lambda: response.read(1 << 16), b""):
                f.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")


def _from_hub(item: ZooEntry, progress: bool, timeout: float) -> Path:
    """``item.hf``'s weights through ``hf_hub_download`` (its cache, ``HF_ENDPOINT``,
    ``HF_HUB_OFFLINE``), verified in HF layout and against the sha256 the hub published (the
    LFS ETag that names the cached blob)."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        path = Path(hf_hub_download(item.hf, HF_FILE, cache_dir=_hf_cache(),
                                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                                    local_files_only=offline, etag_timeout=timeout))  # fmt: skip
    except Exception as err:  # huggingface_hub's errors: offline, 404, HTTP, connection
        first = str(err).splitlines()[0] if str(err) else ""
        raise ZooError(f"could not download {item.name} from the HF hub ({item.hf}/{HF_FILE}: "
                       f"{type(err).__name__}: {first})") from err  # fmt: skip
    published = Path(os.path.realpath(path)).name
    if len(published) == 64 and all(c in "0123456789abcdef" for c in published):
        if sha256(path) != published:
            raise ZooError(f"{path}: sha256 differs from the hub's {published}; delete it from "
                           "the HF cache and download it again")  # fmt: skip
    verify(replace(item, kind="hf"), path)
    return path


def download(item: ZooEntry | str, directory: str | Path | None = None, *, progress: bool = True,
             retries: int = 3, timeout: float = 60.0,
             mirror: str | None = None) -> Path:  # fmt: skip
    """The verified file of ``item`` (see :func:`fetch`), downloaded first if absent."""
    return fetch(item, directory, progress=progress, retries=retries, timeout=timeout,
                 mirror=mirror).path  # fmt: skip


def resolve(spec: str, download_missing: bool = True) -> Path:
    """``zoo:NAME`` -> the verified cached file, downloaded on first use unless
    ``download_missing`` is False, which raises a :class:`ZooError` with the command."""
    return fetch(spec.removeprefix(PREFIX), download=download_missing).path
