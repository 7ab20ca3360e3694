"""Re-encoding a dataset into the prepared format (``tsf prepare``): fast random access.

The official Kinetics instructions resize every video to a short side of 256 before training
(320 keeps full resolution for the [256, 320] scale jitter). A training clip samples 8 frames
over a 256-frame span; with the long keyframe interval of ordinary H.264 (250 frames) a decoder
works through the whole span to reach them. The prepared format is H.264 with a keyframe every
``keyint`` frames (default 5), no B-frames and x264's ``fastdecode`` tuning, and the interval
written into the container's comment tag, so that the PyAV reader seeks to each sampled frame
(see ``benchmarks/bench_data.py`` and docs/results.md for the measured choice).

Videos are re-encoded with PyAV in worker processes into a new root with the same relative
paths, frame count and frame rate (frame ``i`` at pts ``i``: the source's ``i``-th frame in
presentation order, so a variable-frame-rate source keeps its frame indices), upright (a
source's display rotation is applied, as every reader applies it), and annotation files
(csv/json/txt) are copied, so the same annotation files work against the new root. Originals
are never written; finished files are skipped, so an interrupted run resumes; unreadable files
are skipped and reported by path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lightning_tsf.data.annotations import VIDEO_EXTENSIONS, check_inside
from lightning_tsf.data.names import PREPARED_TAG
from lightning_tsf.data.parallel import parallel_map

ANNOTATION_EXTENSIONS = (".csv", ".json", ".txt")


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_dataset`: relative paths by status."""

    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present in the new root
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    copied: list[str] = field(default_factory=list)  # annotation files
    source_bytes: int = 0  # of the videos now present in the new root
    prepared_bytes: int = 0

    def summary(self) -> str:
        """One line with the counts and the size of the prepared videos against their sources."""
        line = (
            f"converted {len(self.converted)}, already done {len(self.skipped)}, "
            f"unreadable {len(self.failed)}, annotation files copied {len(self.copied)}"
        )
        if self.source_bytes:
            ratio = self.prepared_bytes / self.source_bytes
            line += (
                f"; size {self.source_bytes / 2**20:.1f} MiB -> "
                f"{self.prepared_bytes / 2**20:.1f} MiB ({ratio:.2f}x the sources)"
            )
        return line


def even_short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side`` and even dimensions (for 4:2:0)."""
    scale = short_side / min(width, height)
    w, h = (round(width * scale / 2) * 2, round(height * scale / 2) * 2)
    return max(2, w), max(2, h)


@dataclass(frozen=True)
class Encoding:
    """x264 settings of the prepared format (measured: docs/results.md).

    A keyframe every 5 frames, no B-frames, ``fastdecode``, crf 24: a K400 training clip
    costs about a fifth of one from ordinary H.264 for under 3x its size (at 1.34x its
    pixels); ``keyint=1`` (all-intra) is faster still and about 5x larger.
    """

    keyint: int = 5
    crf: int = 24
    preset: str = "veryfast"

    def options(self) -> dict[str, str]:
        """libx264 options (``stream.options``)."""
        return {"g": str(self.keyint), "bf": "0", "tune": "fastdecode", "crf": str(self.crf),
                "preset": self.preset}  # fmt: skip

    def metadata(self) -> dict[str, str]:
        """The container tag that tells the reader the keyframe interval."""
        return {"comment": f"{PREPARED_TAG}{self.keyint}"}


def reencode_video(
    src: str, dst: str, short_side: int, encoding: Encoding = Encoding()
) -> str:
    """Re-encode one video at ``short_side`` (of the displayed, upright frame) in the prepared
    format; return "converted" or "skipped" (``dst`` exists). Raises any decoding error; a
    partial output is removed."""
    from lightning_tsf.data.decode import display_size, upright_rgb  # numpy: when run
    from lightning_tsf.data.encode import VideoWriter

    if os.path.exists(dst):
        return "skipped"
    import av

    if not os.path.exists(src) or os.path.getsize(src) == 0:
        raise ValueError("missing or zero-byte file")
    with av.open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = stream.average_rate or stream.guessed_rate or 30
        writer = None
        try:
            for frame in container.decode(stream):
                if writer is None:
                    w, h = even_short_side_size(*display_size(frame), short_side)
                    writer = VideoWriter(dst, w, h, fps, options=encoding.options(),
                                         metadata=encoding.metadata())  # fmt: skip
                writer.write(upright_rgb(frame, (w, h)))
        except BaseException:
            if writer is not None:
                writer.close(ok=False)
            raise
    if writer is None:
        raise ValueError("no frames decoded")
    writer.close()
    return "converted"


def _prepare_one(rel: str, src_root: str, dst_root: str, short_side: int, encoding: Encoding):
    try:
        return rel, reencode_video(
            os.path.join(src_root, rel), os.path.join(dst_root, rel), short_side, encoding
        )
    except Exception as exc:  # report and go on: one bad file must not stop the job
        return rel, f"error: {type(exc).__name__}: {exc}"


def prepare_dataset(
    src_root: str | Path,
    dst_root: str | Path,
    short_side: int = 256,
    *,
    encoding: Encoding = Encoding(),
    num_workers: int = os.cpu_count() or 1,
    progress: bool = True,
    allow_outside: bool = False,
) -> PrepareReport:
    """Re-encode every video under ``src_root`` into ``dst_root`` (same relative paths).

    A file under ``src_root`` that resolves outside it (a symlink out) is an
    :class:`~.annotations.AnnotationError` before anything is written, unless
    ``allow_outside``."""
    src, dst = Path(src_root).resolve(), Path(dst_root).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source root not found: {src}")
    if src == dst or src in dst.parents or dst in src.parents:
        raise ValueError(f"the new root {dst} must lie outside the source {src} and vice versa")
    report = PrepareReport()
    videos = []
    paths = sorted(src.rglob("*"))
    for path in paths:  # all checked before anything is written
        if path.suffix.lower() in VIDEO_EXTENSIONS + ANNOTATION_EXTENSIONS:
            check_inside(path, src, f"{src}: {path.relative_to(src)}", allow_outside)
    for path in paths:
        rel = str(path.relative_to(src))
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            videos.append(rel)
        elif suffix in ANNOTATION_EXTENSIONS and path.is_file() and not (dst / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
            report.copied.append(rel)
    func = partial(_prepare_one, src_root=str(src), dst_root=str(dst), short_side=short_side,
                   encoding=encoding)  # fmt: skip
    for rel, status in parallel_map(func, videos, num_workers, "preparing", progress):
        if status == "converted":
            report.converted.append(rel)
        elif status == "skipped":
            report.skipped.append(rel)
        else:
            report.failed.append((rel, status.removeprefix("error: ")))
            continue
        report.source_bytes += (src / rel).stat().st_size
        report.prepared_bytes += (dst / rel).stat().st_size
    return report
