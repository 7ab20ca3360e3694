"""``tsf shard``: a dataset's splits as LitData-optimised chunks of prepared-format video bytes.

Training from millions of small files costs a file open (and, on network storage, a round trip)
per clip; shards hold many videos per chunk file, read sequentially or streamed from object
storage by LitData. Each sample is one video of a split (the shard sample schema)::

    {"index": int,   # the video's position in its split's annotation (the file path's index)
     "id": str,      # the annotation's path relative to the dataset root: stable, unique
     "label": int,   # class index, -1 when unlabelled
     "fps": float,   # average frame rate (the dense sampler's clip span uses it)
     "frames": int,  # frame count
     "video": bytes} # the video in the prepared format (see :mod:`.prepare`), read by PyAV

Per split the chunks go to ``OUT/<split>/`` (LitData's ``index.json`` beside them), unreadable
sources are listed in ``OUT/<split>.failed.txt`` (``id<TAB>reason``) and left out;
``OUT/shards.json`` (format, class names, per-split counts) and ``OUT/classnames.txt`` let the
DataModule read shards without the original annotations. A split is written into
``OUT/.<split>.partial/`` and renamed when complete, so an interrupted run restarts without
cleanup (videos already encoded there are kept) and a rerun into a finished output does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lightning_tsf.data.annotations import (
    DEFAULT_CLASS_FILES,
    DEFAULT_SPLITS,
    AnnotationError,
    load_class_names,
    load_split,
)
from lightning_tsf.data.decode import VideoDecodeError, keyframe_interval, make_reader
from lightning_tsf.data.parallel import parallel_map
from lightning_tsf.data.prepare import Encoding, reencode_video

SHARD_META = "shards.json"  # its presence marks a shard folder (the DataModule detects it)
SHARD_VERSION = 1
SPLITS = ("train", "val", "test")


class ShardError(ValueError):
    """A shard folder cannot be written or read (names the folder or URL and why)."""


def is_remote(url: str | Path) -> bool:
    """True for object-storage URLs (``s3://...`` and other ``scheme://`` forms)."""
    return "://" in str(url)


def _output_dir(url: str | Path) -> Path:
    """The one place that turns ``OUT`` into where chunks are written (and read back from).

    Local folders only for now; object storage (``s3://bucket/prefix``) is refused with a
    clear message until it is supported here."""
    if is_remote(url):
        raise ShardError(f"{url}: object storage output is not supported yet; "
                         "write to a local folder")  # fmt: skip
    return Path(url).expanduser().resolve()


def read_metadata(url: str | Path) -> dict:
    """``shards.json`` of a shard folder: ``format``, ``class_names``, ``splits`` (per split:
    ``videos`` written, ``records`` annotated, ``failed``)."""
    path = _output_dir(url) / SHARD_META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: not found; is {url} a `tsf shard` output?") from None
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: unreadable ({err})") from None
    if meta.get("version") != SHARD_VERSION:
        raise ShardError(f"{path}: shard format version {meta.get('version')!r}, this "
                         f"lightning_tsf reads version {SHARD_VERSION}")  # fmt: skip
    return meta


def is_shard_folder(url: str | Path) -> bool:
    """True where ``url`` holds a ``tsf shard`` output (its ``shards.json``)."""
    try:
        return (_output_dir(url) / SHARD_META).is_file()
    except ShardError:
        return False


def split_dir(url: str | Path, split: str) -> str:
    """Where the chunks of ``split`` are (what ``StreamingDataset`` reads)."""
    return str(_output_dir(url) / split)


@dataclass
class ShardReport:
    """Outcome of :func:`write_shards`: per split the videos written and the failures."""

    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    done_before: list[str] = field(default_factory=list)  # splits already complete
    missing: list[str] = field(default_factory=list)  # splits with no annotation

    def summary(self) -> str:
        """One line: per split written/failed, and what was already done or absent."""
        parts = [f"{s}: {n} videos, {len(self.failed.get(s, []))} unreadable"
                 for s, n in self.written.items()]  # fmt: skip
        if self.done_before:
            parts.append("already complete: " + ", ".join(self.done_before))
        if self.missing:
            parts.append("no annotation for: " + ", ".join(self.missing))
        return "; ".join(parts) or "nothing to do"


def _encode_one(
    item: tuple[int, str], work: str, short_side: int, encoding: Encoding
) -> tuple[int, str]:
    """Re-encode source ``item = (index, path)`` into ``work/<index>.mp4`` (kept if present,
    so a restart skips it); a source already in the prepared format at ``short_side`` is
    copied as is. Returns ``(index, "")`` or ``(index, reason)``."""
    index, src = item
    dst = os.path.join(work, f"{index}.mp4")
    try:
        if os.path.exists(dst):
            return index, ""
        if _already_prepared(src, short_side, encoding):
            tmp = f"{dst}.{os.getpid()}.part"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        else:
            reencode_video(src, dst, short_side, encoding)
        reader = make_reader(dst, "pyav")
        try:
            if len(reader) < 1:
                raise ValueError("no frames")
        finally:
            reader.close()
        return index, ""
    except Exception as exc:  # report and go on: one bad file must not stop the job
        if os.path.exists(dst):
            os.unlink(dst)
        reason = exc.reason if isinstance(exc, VideoDecodeError) else f"{type(exc).__name__}: {exc}"
        return index, reason.splitlines()[0] if reason else "unknown reason"


def _already_prepared(src: str, short_side: int, encoding: Encoding) -> bool:
    """A ``tsf prepare`` mp4 with this keyframe interval and short side: its bytes are the
    shard's (a prepared root and shards of it then read identically)."""
    if not src.lower().endswith(".mp4"):
        return False
    import av

    try:
        with av.open(src) as container:
            if keyframe_interval(container.metadata) != encoding.keyint:
                return False
            stream = container.streams.video[0]
            return min(stream.width, stream.height) == short_side
    except Exception:
        return False


def _sample(item: tuple[int, str, int, str], work: str) -> dict:
    """The shard sample of one encoded video (runs in LitData's writer workers)."""
    index, rel, label, _ = item
    path = os.path.join(work, f"{index}.mp4")
    reader = make_reader(path, "pyav")
    try:
        frames, fps = len(reader), float(reader.fps)
    finally:
        reader.close()
    with open(path, "rb") as f:
        data = f.read()
    return {"index": index, "id": rel, "label": label, "fps": fps, "frames": frames,
            "video": data}  # fmt: skip


def write_shards(
    src_root: str | Path,
    out: str | Path,
    *,
    format: str = "kinetics",
    splits: dict[str, str] | None = None,
    class_names_file: str | None = None,
    video_dir: str = "",
    video_ext: str = ".webm",
    short_side: int = 256,
    encoding: Encoding | None = None,
    chunk_bytes: str = "64MB",
    num_workers: int = os.cpu_count() or 1,
    progress: bool = True,
) -> ShardReport:
    """Write the train/val/test splits of the dataset under ``src_root`` as shards in ``out``.

    ``splits`` maps split names to annotation files (folders for ``"folder"``); None = the
    format's defaults (:data:`DEFAULT_SPLITS`). A split whose annotation file is absent is
    skipped and reported; a complete split is never rewritten."""
    from litdata import optimize

    encoding = encoding or Encoding()
    src = Path(src_root).resolve()
    dst = _output_dir(out)
    if not src.is_dir():
        raise ShardError(f"source root not found: {src}")
    if src == dst or src in dst.parents:
        raise ShardError(f"the output {dst} must lie outside the source {src}")
    names = dict(zip(SPLITS, DEFAULT_SPLITS[format], strict=True))
    names.update(splits or {})
    class_file = class_names_file or DEFAULT_CLASS_FILES[format]
    class_names = load_class_names(format, src, class_file, names["train"])
    report = ShardReport()
    meta = _read_partial_meta(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for split, name in names.items():
        final = dst / split
        if (final / "index.json").is_file():
            report.done_before.append(split)
            continue
        if format != "folder" and not (src / name).exists():
            report.missing.append(split)
            continue
        records = load_split(format, src, name, class_names, class_file, video_dir, video_ext,
                             labelled=True)  # fmt: skip
        if not records:
            raise AnnotationError(f"{split} split {src / name} lists no videos")
        partial_dir = dst / f".{split}.partial"
        work = partial_dir / "encoded"
        work.mkdir(parents=True, exist_ok=True)
        encode = partial(_encode_one, work=str(work), short_side=short_side, encoding=encoding)
        items = [(i, r.path) for i, r in enumerate(records)]
        failures = dict(parallel_map(encode, items, num_workers, f"shard {split}", progress))
        failed = [(_rel(records[i].path, src), why) for i, why in failures.items() if why]
        good = [(i, _rel(r.path, src), r.label, r.path) for i, r in enumerate(records)
                if not failures[i]]  # fmt: skip
        chunks = partial_dir / "chunks"
        shutil.rmtree(chunks, ignore_errors=True)  # an interrupted optimize starts over
        if good:
            optimize(fn=partial(_sample, work=str(work)), inputs=good, output_dir=str(chunks),
                     chunk_bytes=chunk_bytes, num_workers=1, reorder_files=False,
                     keep_data_ordered=True, mode="overwrite", verbose=False,
                     start_method="fork")  # fmt: skip
        else:
            chunks.mkdir()
            (chunks / "index.json").write_text(json.dumps({"chunks": [], "config": None}))
        (dst / f"{split}.failed.txt").write_text("".join(f"{p}\t{w}\n" for p, w in failed))
        os.replace(chunks, final)  # the split's completion marker: final/index.json
        shutil.rmtree(partial_dir, ignore_errors=True)
        meta["splits"][split] = {"videos": len(good), "records": len(records),
                                 "failed": len(failed)}  # fmt: skip
        report.written[split] = len(good)
        report.failed[split] = failed
        meta.update(format=format, class_names=class_names, short_side=short_side,
                    keyint=encoding.keyint)  # fmt: skip
        _write_meta(dst, meta)
    if not meta["splits"].get("train"):
        raise ShardError(f"{dst}: no training split written")
    (dst / "classnames.txt").write_text("".join(n + "\n" for n in class_names))
    return report


def _rel(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def _read_partial_meta(dst: Path) -> dict:
    """The metadata of earlier (possibly interrupted) runs into ``dst``, or a fresh one."""
    try:
        return json.loads((dst / SHARD_META).read_text())
    except (OSError, ValueError):
        return {"version": SHARD_VERSION, "splits": {}}


def _write_meta(dst: Path, meta: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=dst, delete=False, suffix=".tmp") as f:
        json.dump(meta, f, indent=1)
    os.replace(f.name, dst / SHARD_META)
