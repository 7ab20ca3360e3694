"""Pretrained weights a user can get in one command: the official TimeSformer checkpoints and
the ImageNet-21K ViT-B/16 the paper initialises from.

``tsf weights list`` prints :data:`ZOO`; ``tsf weights download NAME`` (or
``model.pretrained: zoo:NAME`` in an experiment) fetches a file into the cache
(``$LIGHTNING_TSF_CACHE``, default ``~/.cache/lightning_tsf``): with a progress bar, resuming
an interrupted download (HTTP ``Range``), into a temporary file that is checked (size and
sha256 where known, and a strict load into the matching model) before it is renamed into
place. Nothing is ever loaded from a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lightning_tsf.data.inputs import InputConfig, official_input_config
from lightning_tsf.models.checkpoint import (
    CheckpointError,
    checkpoint_state,
    head_classes,
    load_checkpoint,
    read_checkpoint,
)
from lightning_tsf.models.presets import PRESETS, create_model

CACHE_ENV = "LIGHTNING_TSF_CACHE"
PREFIX = "zoo:"
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


def cache_dir() -> Path:
    """Where downloads go: ``$LIGHTNING_TSF_CACHE`` or ``~/.cache/lightning_tsf``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_tsf")


def entry(name: str) -> ZooEntry:
    """The zoo entry ``name``, or a ``KeyError`` listing the known names."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo checkpoint {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def download(item: ZooEntry | str, directory: str | Path | None = None, *, progress: bool = True,
             retries: int = 3, timeout: float = 60.0) -> Path:  # fmt: skip
    """The checkpoint's path in ``directory`` (default: :func:`cache_dir`), downloaded first if
    absent: resumed after cut connections (``retries`` times), verified, renamed into place."""
    item = entry(item) if isinstance(item, str) else item
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / item.file
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(item.url, part, progress, timeout)
            break
        except OSError as err:  # connection refused or reset, timeouts, HTTP errors
            if isinstance(err, urllib.error.HTTPError) or attempt == retries:
                raise ZooError(
                    f"could not download {item.name} from {item.url} ({type(err).__name__}: "
                    f"{err}). Download it by hand (a browser, curl -L -C -) to {path}, or run "
                    f"`tsf weights download {item.name}` where the internet is reachable and "
                    f"copy {cache_dir()} here ({CACHE_ENV} sets the folder)."
                ) from err
    try:
        verify(item, part)
    except ZooError:
        part.unlink(missing_ok=True)  # never keep a file that does not load
        raise
    os.replace(part, path)
    return path


def resolve(spec: str, download_missing: bool = True) -> Path:
    """``zoo:NAME`` -> the cached file, downloaded on first use (with a message) unless
    ``download_missing`` is False, which raises a :class:`ZooError` with the command."""
    item = entry(spec.removeprefix(PREFIX))
    path = cache_dir() / item.file
    if path.is_file():
        return path
    if not download_missing:
        raise ZooError(f"{spec} is not downloaded yet: run `tsf weights download {item.name}`")
    print(f"downloading {item.name} ({item.url}) to {cache_dir()}", flush=True)
    return download(item)
