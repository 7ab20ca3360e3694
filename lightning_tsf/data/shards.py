"""``tsf shard``: a dataset's splits as LitData-optimised chunks of prepared-format video bytes.

Training from millions of small files costs a file open (and, on network storage, a round trip)
per clip; shards hold many videos per chunk file, read sequentially or streamed from object
storage by LitData. Each sample is one video of a split (the shard sample schema)::

    {"index": int,   # the video's position in its split's annotation (the file path's index)
     "id": str,      # the annotation's path relative to the dataset root: stable, unique
     "label": int,   # class index, -1 when unlabelled
     "fps": float,   # average frame rate (the dense sampler's clip span uses it)
     "frames": int,  # frame count
     "sha256": str,  # hex SHA-256 of "video", verified when read (:mod:`.shard_format`)
     "video": bytes} # the video in the prepared format (see :mod:`.prepare`), read by PyAV

Per split the chunks go to ``OUT/<split>/`` (LitData's ``index.json`` beside them), unreadable
sources are listed in ``OUT/<split>.failed.txt`` (``id<TAB>reason``, written only when some
failed) and left out;
``OUT/shards.json`` (format, class names, per-split counts) and ``OUT/classnames.txt`` let the
DataModule read shards without the original annotations. A split is written into
``OUT/.<split>.partial/`` and renamed when complete, so an interrupted run restarts without
cleanup (videos already encoded there are kept) and a rerun into a finished output does nothing.

Reading shards (``shards.json``, split locations, checksums) lives in :mod:`.shard_format`, so
training does not import this writer. Every annotated path must lie inside the dataset root
(:mod:`.annotations`); ids are always relative to it.
"""

from __future__ import annotations

import hashlib
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
from lightning_tsf.data.shard_format import (  # noqa: F401 - re-exported for the writer's users
    CHECKSUM_KEY,
    SHARD_META,
    SHARD_VERSION,
    SPLITS,
    ShardError,
    is_shard_folder,
    read_metadata,
    remote_read,
    sample_checksum,
    split_dir,
)
from lightning_tsf.data.shard_format import join as _join
from lightning_tsf.data.shard_format import output_dir as _output_dir
from lightning_tsf.data.storage import (
    check_remote,
    default_cache_dir,
    is_remote,
    keep_start_method,
    s3_client,
    storage_options,
)


def _remote_exists(url: str, options: dict | None) -> bool:
    client, bucket, key = s3_client(url, options)
    return bool(client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount"))


def _upload(local: Path, url: str, options: dict | None) -> None:
    """A local file or every file below a local folder, to ``url`` (same relative names)."""
    client, bucket, key = s3_client(url, options)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        rel = "" if path == local else "/" + path.relative_to(local).as_posix()
        client.upload_file(str(path), bucket, key.rstrip("/") + rel if rel else key)


@dataclass
class ShardReport:
    """Outcome of :func:`write_shards`: per split the videos written and the failures."""

    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    done_before: list[str] = field(default_factory=list)  # splits already complete
    uploaded: list[str] = field(default_factory=list)  # staged earlier, uploaded now
    missing: list[str] = field(default_factory=list)  # splits with no annotation

    def summary(self) -> str:
        """One line: per split written/failed, and what was already done or absent."""
        parts = [f"{s}: {n} videos, {len(self.failed.get(s, []))} unreadable"
                 for s, n in self.written.items()]  # fmt: skip
        if self.uploaded:
            parts.append("uploaded from the staging folder: " + ", ".join(self.uploaded))
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
            CHECKSUM_KEY: sample_checksum(data), "video": data}  # fmt: skip


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
    storage_options: dict | None = None,
    staging: str | Path | None = None,
    only: set[str] | None = None,
    allow_outside: bool = False,
) -> ShardReport:
    """Write the train/val/test splits of the dataset under ``src_root`` as shards in ``out``.

    ``splits`` maps split names to annotation files (folders for ``"folder"``); None = the
    format's defaults (:data:`DEFAULT_SPLITS`). A split whose annotation file is absent is
    skipped and reported; a complete split is never rewritten. ``out`` may be an object-storage
    URL (``s3://bucket/prefix``): see :func:`_write_remote`. ``only``: these splits alone.
    ``allow_outside``: accept annotated paths outside ``src_root`` (ids then start ``../``)."""
    if is_remote(out):
        return _write_remote(src_root, str(out), storage_options, staging,
                             dict(format=format, splits=splits,
                                  class_names_file=class_names_file, video_dir=video_dir,
                                  video_ext=video_ext, short_side=short_side, encoding=encoding,
                                  chunk_bytes=chunk_bytes, num_workers=num_workers,
                                  progress=progress, allow_outside=allow_outside))  # fmt: skip
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
        if only is not None and split not in only:
            continue
        final = dst / split
        if (final / "index.json").is_file():
            report.done_before.append(split)
            continue
        if format != "folder" and not (src / name).exists():
            report.missing.append(split)
            continue
        records = load_split(format, src, name, class_names, class_file, video_dir, video_ext,
                             labelled=True, allow_outside=allow_outside)  # fmt: skip
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
            with keep_start_method():
                optimize(fn=partial(_sample, work=str(work)), inputs=good,
                         output_dir=str(chunks), chunk_bytes=chunk_bytes, num_workers=1,
                         reorder_files=False, keep_data_ordered=True, mode="overwrite",
                         verbose=False, start_method="fork")  # fmt: skip
        else:
            chunks.mkdir()
            (chunks / "index.json").write_text(json.dumps({"chunks": [], "config": None}))
        failed_file = dst / f"{split}.failed.txt"
        if failed:  # no empty lists: the file's presence means something failed
            failed_file.write_text("".join(f"{p}\t{w}\n" for p, w in failed))
        else:
            failed_file.unlink(missing_ok=True)
        os.replace(chunks, final)  # the split's completion marker: final/index.json
        shutil.rmtree(partial_dir, ignore_errors=True)
        meta["splits"][split] = {"videos": len(good), "records": len(records),
                                 "failed": len(failed)}  # fmt: skip
        report.written[split] = len(good)
        report.failed[split] = failed
        meta.update(format=format, class_names=class_names, short_side=short_side,
                    keyint=encoding.keyint)  # fmt: skip
        _write_meta(dst, meta)
    if not meta["splits"].get("train") and (only is None or "train" in only):
        raise ShardError(f"{dst}: no training split written")
    (dst / "classnames.txt").write_text("".join(n + "\n" for n in class_names))
    return report


def _write_remote(src_root: str | Path, url: str, options: dict | None,
                  staging: str | Path | None, kwargs: dict) -> ShardReport:  # fmt: skip
    """Shards into object storage: the bucket is checked first (a missing bucket or rejected
    keys stop here, one line), the splits not yet complete there are written into a local
    staging folder (restartable as a local output is: ``staging``, default under the cache,
    one per URL) and uploaded split by split; ``shards.json`` goes up last, so a split is
    complete in the bucket when its ``index.json`` and its entry in ``shards.json`` are there.
    A rerun into a finished prefix writes nothing."""
    check_remote(url, storage_options(url, options))
    try:
        remote_meta = read_metadata(url, options)
    except ShardError:
        remote_meta = {"version": SHARD_VERSION, "splits": {}}
    done = {s for s in remote_meta["splits"]
            if _remote_exists(_join(url, s, "index.json"), options)}  # fmt: skip
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    local = Path(staging) if staging else default_cache_dir().parent / "shard-staging" / digest
    todo = set(SPLITS) - done
    report = ShardReport(done_before=sorted(done, key=SPLITS.index))
    if todo:
        staged = write_shards(src_root, local, only=todo, **kwargs)
        report.written, report.failed = staged.written, staged.failed
        report.missing = staged.missing
    meta = _read_partial_meta(_output_dir(local)) if todo else remote_meta
    for split in SPLITS:
        if split in done or split not in meta["splits"]:
            continue
        _upload(_output_dir(local) / split, _join(url, split), options)
        failed = _output_dir(local) / f"{split}.failed.txt"
        if failed.is_file():
            _upload(failed, _join(url, f"{split}.failed.txt"), options)
        remote_meta["splits"][split] = meta["splits"][split]
        if split not in report.written:  # complete in the staging folder from an earlier run
            report.uploaded.append(split)
            report.written[split] = int(meta["splits"][split]["videos"])
    for key in ("format", "class_names", "short_side", "keyint"):
        remote_meta.setdefault(key, meta.get(key))
    if not remote_meta["splits"].get("train"):
        raise ShardError(f"{url}: no training split written")
    names = "".join(n + "\n" for n in remote_meta["class_names"])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "classnames.txt").write_text(names)
        (Path(tmp) / SHARD_META).write_text(json.dumps(remote_meta, indent=1))
        _upload(Path(tmp) / "classnames.txt", _join(url, "classnames.txt"), options)
        _upload(Path(tmp) / SHARD_META, _join(url, SHARD_META), options)
    return report


def _rel(path: str, root: Path) -> str:
    """A record's id: its path relative to the dataset root, as annotated (lexically: a
    symlink keeps its own name), never an absolute path."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def _read_partial_meta(dst: Path) -> dict:
    """The metadata of earlier (possibly interrupted) runs into ``dst``, or a fresh one."""
    try:
        return json.loads((dst / SHARD_META).read_text())
    except (OSError, ValueError):
        return {"version": SHARD_VERSION, "splits": {}}


def _write_meta(dst: Path, meta: dict) -> None:
    """``shards.json``, atomically, readable by others as the umask allows (a
    ``NamedTemporaryFile`` would leave it 0600 for every reader of a shared folder)."""
    tmp = dst / f".{SHARD_META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, dst / SHARD_META)
