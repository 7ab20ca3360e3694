"""Long videos: top-k classes of sliding windows, the video decoded in one pass.

:func:`video_timeline` cuts windows of ``window_s`` seconds every ``stride_s`` seconds
(:func:`~lightning_tsf.data.sampling.sliding_windows`), reads the video once front to back
(:func:`~lightning_tsf.data.windows.window_clips`: each frame decoded once), cuts each window's
spatial crops as evaluation views are cut (:func:`~lightning_tsf.data.clips.clip_views`),
scores ``windows_per_pass`` windows per forward pass and averages each window's crops with
:func:`~lightning_tsf.data.scores.average_views`, the one per-video average. The result,
:class:`Timeline`, writes CSV, JSON and the PNG strip (:mod:`lightning_tsf.viz.timeline`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_tsf.data.clips import ViewSpec, clip_views
from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.sampling import sliding_windows
from lightning_tsf.data.scores import average_views
from lightning_tsf.data.windows import window_clips
from lightning_tsf.inference import top_k
from lightning_tsf.results import topk_columns

Span = tuple[float, float, Any]  # (start_s, end_s, frame indices)


@dataclass
class Window:
    """One timeline window: seconds, the source frames its clip decodes, its top-k."""

    start_s: float
    end_s: float
    frames: list[int]
    indices: list[int]
    classes: list[str]
    probs: list[float]


@dataclass
class Timeline:
    """A timeline of one video. ``note`` says when the video was shorter than one window (then
    there is one window over the whole video)."""

    path: str
    fps: float
    num_frames: int
    window_s: float
    stride_s: float
    windows: list[Window]
    class_names: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def duration_s(self) -> float:
        """Length of the video in seconds (frames / fps)."""
        return self.num_frames / self.fps

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per window: ``window, start_s, end_s, top1, prob1, top2, ...``."""
        rows = []
        for i, w in enumerate(self.windows):
            row = {"window": i, "start_s": w.start_s, "end_s": w.end_s}
            rows.append(row | topk_columns(w.classes, w.probs))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: the video's facts and the windows."""
        out = asdict(self)
        out["duration_s"] = self.duration_s
        return out

    def save(self, out_dir: str | Path, name: str | None = None) -> list[Path]:
        """Write ``<name>.csv`` (:meth:`rows`), ``<name>.json`` (:meth:`to_dict`) and
        ``<name>.png`` (the strip) into ``out_dir``; ``name`` defaults to the video's stem."""
        from lightning_tsf.viz.timeline import plot_timeline

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = name or Path(self.path).stem
        rows = self.rows()
        csv_path, json_path, png = (out / f"{stem}{s}" for s in (".csv", ".json", ".png"))
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        w = self.windows
        title = f"{Path(self.path).name}: top-1 class per {self.window_s:g} s window"
        plot_timeline([x.start_s for x in w], [x.end_s for x in w], [x.indices[0] for x in w],
                      [x.probs[0] for x in w], self.class_names, png, stride_s=self.stride_s,
                      title=title)  # fmt: skip
        return [csv_path, json_path, png]


def score_windows(
    clips: Iterable[tuple[Span, Tensor]], probs: Callable[[Tensor], Tensor], per_pass: int
) -> Iterator[tuple[Span, Tensor]]:
    """``(window, mean probabilities (K,))`` of each ``(window, views (V, T, C, S, S) uint8)``
    in order: ``per_pass`` windows' views share one call of ``probs`` (uint8 views → ``(N,
    K)``), each window's views averaged with :func:`average_views`."""
    clips = iter(clips)
    while group := list(islice(clips, max(1, per_pass))):
        owner = torch.cat([torch.full((len(v),), i) for i, (_, v) in enumerate(group)])
        _, means = average_views(owner, probs(torch.cat([v for _, v in group])))
        yield from zip([w for w, _ in group], means)


def video_timeline(
    video: str | Path,
    spec: ViewSpec,
    probs: Callable[[Tensor], Tensor],
    class_names: Sequence[str],
    *,
    window_s: float = 2.0,
    stride_s: float = 1.0,
    k: int = 3,
    per_pass: int = 1,
    progress: Callable[[Iterable, int], Iterable] = lambda items, total: items,
) -> Timeline:
    """The :class:`Timeline` of ``video``: top-``k`` classes (of ``probs``, uint8 views →
    probabilities) of each window. Raises :class:`~lightning_tsf.data.decode.VideoDecodeError`
    for an unreadable video and ``ValueError`` for a non-positive window or stride."""
    reader = make_reader(str(video), spec.backend, spec.decode_short_side)
    try:
        length, fps = len(reader), reader.fps
        spans = sliding_windows(length, fps, window_s, stride_s, spec.num_frames)
        clips = ((w, clip_views(frames, spec)) for w, frames in window_clips(reader, spans))
        scores = list(score_windows(progress(clips, len(spans)), probs, per_pass))
    finally:
        reader.close()
    names = list(class_names)
    windows = [Window(start, end, frames.tolist(), *top_k(p, k, names))
               for (start, end, frames), p in scores]  # fmt: skip
    note = ""
    if length / fps <= window_s:
        note = f"video ({length / fps:.3g} s) not longer than the window: one window"
    return Timeline(str(video), fps, length, window_s, stride_s, windows, names, note)
