"""Pretrained weights a user can get in one command: the official TimeSformer checkpoints and
the ImageNet-21K ViT-B/16 the paper initialises from.

``tsf weights list`` prints :data:`ZOO`; ``tsf weights download NAME`` (or
``model.pretrained: zoo:NAME`` in an experiment) fetches a file into the cache
(``$LIGHTNING_TSF_CACHE``, default ``~/.cache/lightning_tsf``): with a progress bar, resuming
an interrupted download (HTTP ``Range``), into a temporary file that is checked (size and
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

import hashlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from lightning_tsf.data.inputs import InputConfig, official_input_config
from lightning_tsf.models.checkpoint import (
    CheckpointError,
    checkpoint_state,
    head_classes,
    load_checkpoint,
    read_checkpoint,
)
from lightning_tsf.models.names import CACHE_ENV, MIRROR_ENV, cache_dir
from lightning_tsf.models.presets import PRESETS, create_model

PREFIX = "zoo:"
LOCK_JSON = "zoo.lock.json"  # sha256 of every file that verified, per cache folder
LOCK_TIMEOUT = 6 * 3600.0  # seconds a process waits for another one's download
HF_FILE = "pytorch_model.bin"  # the weights file of the HF hub copies
_DROPBOX = "https://www.dropbox.com/s/{id}/{file}?dl=1"


@dataclass(frozen=True)
class ZooEntry:
    """A downloadable checkpoint and the model it fits."""

    name: str
    file: str
    url: str
    dataset: str
    preset: str  # presets.PRESETS name: sizes of the matching model
    num_frames: int
    num_classes: int | None  # None: as the file's head says
    kind: str  # load_checkpoint kind: "official" or "timm"
    scheme: str = "divided_space_time"
    top1: float | None = None  # reported by the official README (3 views x 1 clip)
    top5: float | None = None
    hf: str | None = None  # the HF hub copy, converted names (load with kind="hf")
    sha256: str | None = None
    size: int | None = None  # bytes

    @property
    def frames_x_size(self) -> str:
        return f"{self.num_frames}x{PRESETS[self.preset]['img_size']}"

    @property
    def input_config(self) -> InputConfig:
        """The official test record of this checkpoint (Kinetics: dense clips from frame 0,
        3 crops at short side = crop; SSv2: segments, 3 crops)."""
        return official_input_config(self.dataset, self.num_frames,
                                     PRESETS[self.preset]["img_size"], scheme=self.scheme,
                                     preset=self.preset)  # fmt: skip


def _official(name: str, file_id: str, file: str, dataset: str, preset: str, frames: int,
              classes: int | None, top1: float, top5: float | None,
              hf: str | None = None) -> ZooEntry:  # fmt: skip
    return ZooEntry(name, file, _DROPBOX.format(id=file_id, file=file), dataset, preset, frames,
                    classes, "official", top1=top1, top5=top5, hf=hf)  # fmt: skip


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        _official("timesformer_k400", "g5t24we9gl5yk88", "TimeSformer_divST_8x32_224_K400.pyth",
                  "K400", "timesformer", 8, 400, 77.9, 93.2,
                  "facebook/timesformer-base-finetuned-k400"),
        _official("timesformer_hr_k400", "6f0x172lpqy3oxt",
                  "TimeSformer_divST_16x16_448_K400.pyth", "K400", "timesformer_hr", 16, 400,
                  79.6, 94.0, "facebook/timesformer-hr-finetuned-k400"),
        _official("timesformer_l_k400", "r1iuxahif3sgimo", "TimeSformer_divST_96x4_224_K400.pyth",
                  "K400", "timesformer_l", 96, 400, 80.6, 94.7),
        _official("timesformer_k600", "4h2qt41m2z3aqrb", "TimeSformer_divST_8x32_224_K600.pyth",
                  "K600", "timesformer", 8, 600, 79.1, 94.4,
                  "facebook/timesformer-base-finetuned-k600"),
        _official("timesformer_hr_k600", "ft1e92g2vhvxecv",
                  "TimeSformer_divST_16x16_448_K600.pyth", "K600", "timesformer_hr", 16, 600,
                  81.8, 95.8, "facebook/timesformer-hr-finetuned-k600"),
        _official("timesformer_l_k600", "857rx6xeclxfhdg", "TimeSformer_divST_96x4_224_K600.pyth",
                  "K600", "timesformer_l", 96, 600, 82.2, 95.6),
        _official("timesformer_ssv2", "tybhuml57y24wpm", "TimeSformer_divST_8_224_SSv2.pyth",
                  "SSv2", "timesformer", 8, 174, 59.1, 85.6,
                  "facebook/timesformer-base-finetuned-ssv2"),
        _official("timesformer_hr_ssv2", "9t68uzk8w2fpfnv", "TimeSformer_divST_16_448_SSv2.pyth",
                  "SSv2", "timesformer_hr", 16, 174, 61.8, 86.9,
                  "facebook/timesformer-hr-finetuned-ssv2"),
        _official("timesformer_l_ssv2", "3f1rm2al8mhprwa", "TimeSformer_divST_64_224_SSv2.pyth",
                  "SSv2", "timesformer_l", 64, 174, 62.0, 87.5),
        _official("timesformer_howto100m", "9v8hcm88b9tc6ff",
                  "TimeSformer_divST_8x32_224_HowTo100M.pyth", "HowTo100M", "timesformer", 8,
                  None, 56.8, None),
        ZooEntry("vit_base_in21k", "jx_vit_base_p16_224-80ecf9dd.pth",
                 "https://github.com/rwightman/pytorch-image-models/releases/download/"
                 "v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth", "ImageNet-21K (+1K)",
                 "timesformer", 8, None, "timm"),
    ]
}  # fmt: skip


class ZooError(RuntimeError):
    """A download that cannot be completed; the message names the URL and the manual step."""


class NotInSource(ZooError):
    """The source answered, but has no such file (HTTP 404, not in the mirror folder)."""


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


def entry(name: str) -> ZooEntry:
    """The zoo entry ``name``, or a ``KeyError`` listing the known names."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo checkpoint {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]


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


_HASHES: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime) -> sha256, per process


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def verify(item: ZooEntry, path: Path) -> None:
    """Size and sha256 where known, then a strict load into the matching model (its class
    count read from the file's head, and checked against the entry's where it has one)."""
    if item.size is not None and path.stat().st_size != item.size:
        raise ZooError(f"{path}: {path.stat().st_size} bytes, expected {item.size}")
    if item.sha256 is not None and _sha256(path) != item.sha256:
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


def _record(folder: Path, key: str, path: Path, source: str) -> None:
    """Add ``path``'s sha256 to the lock file (caller holds the download lock)."""
    files = read_lock(folder)
    files[key] = {"sha256": _sha256(path), "size": path.stat().st_size, "source": source,
                  "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    tmp = folder / f".{LOCK_JSON}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / LOCK_JSON)


def _recorded(folder: Path, key: str, path: Path) -> bool:
    """True when ``path`` has the sha256 recorded for ``key``, False when none is recorded; a
    :class:`ZooError` when it differs (the file changed after it verified)."""
    record = read_lock(folder).get(key)
    if record is None:
        return False
    digest = _sha256(path)
    if digest != record["sha256"]:
        raise ZooError(
            f"{path} changed since it verified ({record['verified']}, from {record['source']}): "
            f"sha256 {digest[:16]}... is not the {record['sha256'][:16]}... recorded in "
            f"{folder / LOCK_JSON}; delete the file to download it again (or its entry in "
            f"{LOCK_JSON} if you replaced it on purpose)"
        )
    return True


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
        if _recorded(folder, key, path):
            return Fetched(path, kind, "cache")
    return None


@contextmanager
def _download_lock(folder: Path, timeout: float) -> Iterator[None]:
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
    with _download_lock(folder, lock_timeout):
        hit = cached(item, folder)  # another process finished it while this one waited
        if hit is not None:
            return hit
        for key, kind, path in _present(item, folder):  # copied in by hand: verify once
            verify(replace(item, kind=kind), path)
            _record(folder, key, path, "found in the cache")
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
        _record(folder, key, path, str(source))
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
        if _sha256(path) != published:
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
