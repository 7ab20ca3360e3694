"""What a trained model says about videos, and the files it is written to.

The result types of :class:`~lightning_tsf.predictor.Predictor` (per-video predictions,
features, heatmaps and the videos that could not be decoded) and their writers: predictions as
JSON, CSV or JSON lines (one per video, appended and flushed as each is done, so an interrupted
run resumes where it stopped). The timeline's result is in :mod:`lightning_tsf.timeline`; PNG
pictures are written by :func:`lightning_tsf.viz.heatmap.save_png`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import numpy as np
from torch import Tensor

from lightning_tsf.inference import Prediction

R = TypeVar("R")


@dataclass
class VideoError:
    """A video that could not be decoded, with the one-line reason."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """The row of a failed video: ``{"path", "error": "cannot decode PATH: reason"}``."""
        return {"path": self.path, "error": self.message}


@dataclass
class PerVideo(Generic[R]):
    """Results of decoded videos in input order (iterable, indexable) and the failed ones."""

    videos: list[R] = field(default_factory=list)
    errors: list[VideoError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[R]:
        return iter(self.videos)

    def __getitem__(self, i: int) -> R:
        return self.videos[i]


@dataclass
class Predictions(PerVideo[Prediction]):
    """:meth:`Predictor.predict`'s result: one :class:`Prediction` per decoded video."""

    def rows(self) -> list[dict[str, Any]]:
        """One dict per video; failed videos last, as ``{"path", "error": "cannot decode
        PATH: reason"}``."""
        return [p.to_dict() for p in self.videos] + [e.to_dict() for e in self.errors]

    def save(self, path: str | Path) -> Path:
        """:meth:`rows` as JSON, or as CSV when ``path`` ends in ``.csv``."""
        return write_predictions(self.rows(), path)


@dataclass
class Features:
    """:meth:`Predictor.features`' result: ``array`` ``(N, D)`` float32, one row per decoded
    video (``paths``/``labels`` in the same order); ``np.asarray(features)`` gives ``array``."""

    array: np.ndarray
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    errors: list[VideoError] = field(default_factory=list)
    frame_tokens: np.ndarray | None = None  # (N, T, D) when asked for

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)

    def __len__(self) -> int:
        return len(self.array)


@dataclass
class Heatmap:
    """Attention rollout of one video's centre view: raw ``maps`` ``(T, h, w)``, the ``image``
    grid (frames above overlays) and the PNG it was written to, if any."""

    path: str
    label: int
    maps: Tensor
    image: np.ndarray
    png: str | None = None


@dataclass
class Heatmaps(PerVideo[Heatmap]):
    """:meth:`Predictor.heatmaps`' result: one :class:`Heatmap` per decoded video."""


# ---------------------------------------------------------------------------- writers
def numbered_name(path: str, index: int, suffix: str = ".png") -> str:
    """Output file name for a video: its stem prefixed by its position, so names are unique."""
    return f"{index:04d}_{Path(path).stem}{suffix}"


def topk_columns(classes: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """Flat CSV columns of a top-k list: ``top1, prob1, top2, prob2, ...``."""
    row: dict[str, Any] = {}
    for k, (c, p) in enumerate(zip(classes, probs), 1):
        row[f"top{k}"], row[f"prob{k}"] = c, p
    return row


def write_predictions(rows: list[Mapping[str, Any]], path: str | Path) -> Path:
    """Predictions as JSON (a list) or CSV (one row per video: ``top{k}``/``prob{k}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(rows, indent=1))
        return path
    k = max((len(r.get("classes", [])) for r in rows), default=0)
    fields = ["path", "label", "error"] + list(topk_columns([""] * k, [0.0] * k))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for r in rows:
            row = {"path": r["path"], "label": r.get("label", ""), "error": r.get("error", "")}
            writer.writerow(row | topk_columns(r.get("classes", []), r.get("probs", [])))
    return path


def read_done(path: Path) -> list[dict]:
    """The complete JSON lines of a ``.jsonl`` predictions file (a line cut short by a kill is
    dropped)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in rows if isinstance(r, dict) and "path" in r]


class JsonLines:
    """A ``.jsonl`` predictions file written one video at a time: :meth:`write` appends a row
    and flushes it, so a killed run loses at most the videos in flight. Opened with
    ``resume=True`` it keeps the complete rows already there (:attr:`done`) and drops a line
    cut short; otherwise it starts empty."""

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        self.path = Path(path)
        self.done: list[dict] = read_done(self.path) if resume else []
        self._file: IO[str] | None = None

    def __enter__(self) -> JsonLines:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")  # kept rows, rewritten whole
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.done))
        os.replace(tmp, self.path)
        self._file = self.path.open("a")
        return self

    def write(self, row: Mapping[str, Any]) -> None:
        assert self._file is not None, "use JsonLines in a with block"
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
