"""Using a trained model from Python: :class:`Predictor`.

One object holds a model, its input record and the device; its methods take videos (a file, a
folder searched recursively, an annotation file, or a list of these) and return small result
objects that also turn into rows for JSON/CSV. The ``tsf predict-files``, ``features-files``,
``heatmap-files`` and ``timeline`` commands are thin wrappers over it.

Videos are decoded in DataLoader worker processes (``num_workers``, by default the cores this
process may use less one, as training does), views of consecutive videos share forward passes
(``batch_size`` views per pass, pinned and run on the GPU when there is one), and results come
out in the order of the inputs. A video that cannot be decoded is not dropped silently: it is
listed in the result's ``errors`` with a one-line reason (:meth:`Predictor.iter_predict` yields
it in its place). ``timeline`` decodes a long video in one pass, each frame once.

Example (``CHECKPOINT``, ``VIDEO`` and ``FOLDER`` stand for your files)::

    >>> from lightning_tsf import Predictor
    >>> predictor = Predictor.from_checkpoint(CHECKPOINT, device="cpu")
    >>> result = predictor.predict(VIDEO, top_k=2)
    >>> top = result[0]
    >>> len(top.classes), top.classes[0] in predictor.class_names, top.probs[0] >= top.probs[1]
    (2, True, True)
    >>> sorted(result.rows()[0])
    ['classes', 'indices', 'label', 'path', 'probs']
    >>> features = predictor.features(FOLDER)
    >>> features.array.shape == (len(features.paths), predictor.model.embed_dim)
    True
    >>> [Path(e.path).name for e in features.errors]
    ['broken.mp4']
    >>> timeline = predictor.timeline(LONG_VIDEO, window_s=2.0, stride_s=1.0, top_k=3)
    >>> [w.start_s for w in timeline.windows]
    [0.0, 1.0, 2.0]
    >>> sorted(p.suffix for p in timeline.save(OUT_DIR))
    ['.csv', '.json', '.png']
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.inputs import VIEW_OPTIONS, InputConfig
from lightning_tsf.data.loader import default_num_workers
from lightning_tsf.data.sampling import sliding_windows
from lightning_tsf.data.transforms import normalize_video
from lightning_tsf.data.views import ViewAccumulator, clip_frame_indices, clip_views, window_clips
from lightning_tsf.inference import (
    Prediction,
    VideoViews,
    clip_frame_tokens,
    collate_videos,
    collect_videos,
    load_model,
)
from lightning_tsf.inference import top_k as top_k_of
from lightning_tsf.models import TimeSformer

VideoInput = str | Path | Sequence[str | Path]
Item = TypeVar("Item")
R = TypeVar("R")
VIDEOS_PER_LOAD = 4  # videos a worker decodes and hands over at once (fewer, larger transfers)
HANDFUL = 5  # more videos (or windows) than this get a progress bar on a terminal


# ---------------------------------------------------------------------------- results
@dataclass
class VideoError:
    """A video that could not be decoded, with the one-line reason."""

    path: str
    message: str


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
        return [p.to_dict() for p in self.videos] + [
            {"path": e.path, "error": e.message} for e in self.errors
        ]

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
    """:meth:`Predictor.timeline`'s result for one video. ``note`` says when the video was
    shorter than one window (then there is one window over the whole video)."""

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


# ---------------------------------------------------------------------------- the predictor
class Predictor:
    """A trained TimeSformer ready to run on video files.

    ``input_config``: what the model expects (:class:`~lightning_tsf.data.inputs.InputConfig`,
    read from the checkpoint by :meth:`from_checkpoint`); ``backend``: the video reader
    (``auto`` picks per file). ``device``: None picks ``cuda`` when available, else ``cpu``.
    ``batch_size``: views per forward pass (views of several videos share one). ``progress``:
    a tqdm bar over videos; None shows it on a terminal for more than a handful, False never.
    ``num_workers``: decoding processes (None: :func:`~lightning_tsf.data.loader.
    default_num_workers`; 0 decodes in this process). Any number gives the same results.
    """

    def __init__(
        self,
        model: TimeSformer,
        input_config: InputConfig,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        progress: bool | None = None,
        backend: str = "auto",
        num_workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be at least 0, got {num_workers}")
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.input_config = input_config
        self.spec = input_config.view_spec(backend)
        self.batch_size = batch_size
        self.progress = progress

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        *,
        preset: str | None = None,
        model_config: str | None = None,
        attention_type: str | None = None,
        num_frames: int | None = None,
        img_size: int | None = None,
        tokens: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 8,
        progress: bool | None = None,
        backend: str = "auto",
        num_workers: int | None = None,
        **views: Any,
    ) -> Predictor:
        """Load a Lightning ``.ckpt``, an official ``.pyth``, an HF checkpoint or ``zoo:NAME``
        (:func:`~lightning_tsf.inference.load_model`) with the input record saved in it.
        ``views``: ``num_spatial_crops``, ``num_temporal_views``, ``test_short_side`` over
        the checkpoint's (None: as it says); so do ``tokens``, the token switches (model.md)."""
        if unknown := set(views) - set(VIEW_OPTIONS):
            raise TypeError(f"unknown view option(s): {', '.join(sorted(unknown))}")
        overrides = {"attention_type": attention_type, "num_frames": num_frames,
                     "img_size": img_size, "tokens": tokens}  # fmt: skip
        model, config = load_model(str(path), preset, model_config, overrides)
        config = config.with_views(**views)
        if class_names is not None:
            config = replace(config, class_names=tuple(class_names))
        return cls(model, config, device, batch_size, progress, backend, num_workers)

    @property
    def class_names(self) -> list[str]:
        """Class names (the checkpoint's, or the class indices as text)."""
        names = self.input_config.class_names
        return list(names) or [str(i) for i in range(self.model.num_classes)]

    # ------------------------------------------------------------------ public methods
    def predict(self, videos: VideoInput, top_k: int = 5) -> Predictions:
        """Top-``top_k`` classes of each video (the mean softmax of its views)."""
        result = Predictions()
        for item in self.iter_predict(videos, top_k):
            (result.errors if isinstance(item, VideoError) else result.videos).append(item)
        return result

    def iter_predict(
        self, videos: VideoInput, top_k: int = 5, skip: Collection[str] = ()
    ) -> Iterator[Prediction | VideoError]:
        """:meth:`predict` one video at a time, in input order, each as soon as it is done (a
        :class:`VideoError` in the place of a video that cannot be decoded); videos whose path
        is in ``skip`` are left out (resuming a run)."""
        names = self.class_names
        for (path, label, error), probs in self._per_video(videos, _softmax(self.model), skip):
            if probs is None:
                yield VideoError(path, error)
            else:
                yield Prediction(path, label, *top_k_of(probs, top_k, names))

    def features(self, videos: VideoInput, frame_tokens: bool = False) -> Features:
        """One cls feature per video (averaged over its views), ``(N, D)``; ``frame_tokens``
        also gives each frame's patch tokens averaged over patches and views, ``(N, T, D)``."""
        errors: list[VideoError] = []
        fn: str | Callable[[Tensor], Tensor] = "forward_features"
        if frame_tokens:
            fn = partial(_features_and_tokens, self.model)
        rows, paths, labels = [], [], []
        for (path, label, error), out in self._per_video(videos, fn):
            if out is None:
                errors.append(VideoError(path, error))
                continue
            rows.append(out)
            paths.append(path)
            labels.append(label)
        dim = self.model.embed_dim
        stacked = torch.stack(rows).numpy() if rows else np.zeros((0, dim), np.float32)
        tokens = None
        if frame_tokens:
            tokens = stacked[:, dim:].reshape(len(stacked), -1, dim)
        return Features(stacked[:, :dim].copy(), paths, labels, errors, tokens)

    def heatmaps(self, videos: VideoInput, out_dir: str | Path | None = None) -> Heatmaps:
        """Attention-rollout heatmaps of each video's centre view, titled with the file name,
        true and predicted class, frames labelled with their source index. With ``out_dir``: one PNG
        grid per video (``0000_<stem>.png``, numbered in order) and ``maps.pt``, a dict
        path → raw maps ``(T, h, w)``."""
        from lightning_tsf.viz.heatmap import render_heatmaps, save_png

        result = Heatmaps()
        spec = self.spec
        temporal = spec.split(spec.centre_view)[0]
        for path, label, raw, error in self._decoded(videos):
            if raw is None:
                result.errors.append(VideoError(path, error))
                continue
            frames = raw[spec.centre_view].permute(0, 2, 3, 1).contiguous().numpy()
            clip = self._normalise(raw[spec.centre_view : spec.centre_view + 1].to(self.device))[0]
            image, maps = render_heatmaps(
                self.model, clip, frames, names=[Path(path).name], labels=[label],
                class_names=self.class_names, frame_indices=[clip_frame_indices(path, spec,
                                                                                temporal)],
            )  # fmt: skip (the frames are given: mean/std would only denormalise the clip)
            png = None
            if out_dir is not None:
                png = str(save_png(image, Path(out_dir) / numbered_name(path, len(result))))
            result.videos.append(Heatmap(path, label, maps[0].cpu(), image, png))
        if out_dir is not None and result.videos:
            torch.save({h.path: h.maps for h in result.videos}, Path(out_dir) / "maps.pt")
        return result

    def timeline(
        self, video: str | Path, window_s: float = 2.0, stride_s: float = 1.0, top_k: int = 3
    ) -> Timeline:
        """Top-``top_k`` classes of windows of ``window_s`` seconds every ``stride_s`` seconds.

        Each window is one clip with the model's frames spread over the window
        (:func:`~lightning_tsf.data.sampling.sliding_windows`: whole windows only, the last one
        ending at or before the end of the video; a video shorter than a window gives one
        window, and :attr:`Timeline.note` says so), scored over the spatial crops of the
        input record. Raises :class:`~lightning_tsf.data.decode.VideoDecodeError` for an
        unreadable video and ``ValueError`` for a non-positive window or stride.
        """
        spec = self.spec
        reader = make_reader(str(video), spec.backend, spec.decode_short_side)
        try:
            length, fps = len(reader), reader.fps
            spans = sliding_windows(length, fps, window_s, stride_s, spec.num_frames)
            clips = ((w, clip_views(frames, spec)) for w, frames in window_clips(reader, spans))
            scores = list(self._stream(self._bar(clips, len(spans), "windows"),
                                       _softmax(self.model)))  # fmt: skip
        finally:
            reader.close()
        names, windows = self.class_names, []
        for (start, end, frames), probs in scores:
            windows.append(Window(start, end, frames.tolist(), *top_k_of(probs, top_k, names)))
        note = ""
        if length / fps <= window_s:
            note = f"video ({length / fps:.3g} s) not longer than the window: one window"
        return Timeline(str(video), fps, length, window_s, stride_s, windows, names, note)

    # ------------------------------------------------------------------ the machinery
    def _bar(self, items: Iterable[Item], total: int, unit: str) -> Iterable[Item]:
        show = self.progress
        if show is None:
            show = total > HANDFUL and sys.stderr.isatty()
        if not show:
            return items
        from tqdm import tqdm

        return tqdm(items, total=total, unit=unit.rstrip("s"), desc=unit)

    def _normalise(self, views: Tensor) -> Tensor:
        """uint8 ``(V, T, C, S, S)`` → the model's normalised ``(V, C, T, S, S)``, where the
        views are (on the GPU after a uint8 transfer, when there is one)."""
        return normalize_video(views.transpose(1, 2), self.input_config.mean,
                               self.input_config.std)  # fmt: skip

    def _items(self, videos: VideoInput, skip: Collection[str] = ()) -> list[tuple[str, int]]:
        """``(path, label)`` of the inputs, less the paths in ``skip``."""
        inputs = [videos] if isinstance(videos, str | Path) else list(videos)
        return [item for item in collect_videos([str(v) for v in inputs]) if item[0] not in skip]

    def _decoded(
        self, videos: VideoInput, skip: Collection[str] = ()
    ) -> Iterator[tuple[str, int, Tensor | None, str]]:
        """``(path, label, views, error)`` of each input in order: uint8 ``(V, T, C, S, S)``
        views decoded by DataLoader workers (:class:`~lightning_tsf.inference.VideoViews`), or
        None and the one-line reason of a video that cannot be decoded."""
        items = self._items(videos, skip)
        if not items:
            return
        workers = 0 if len(items) < 2 else min(self.num_workers, len(items))
        per_batch = max(1, min(VIDEOS_PER_LOAD, len(items) // max(1, 2 * workers)))
        loader = torch.utils.data.DataLoader(
            VideoViews([path for path, _ in items], self.spec), batch_size=per_batch,
            collate_fn=collate_videos, num_workers=workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
        )  # fmt: skip (views of consecutive videos share forward passes in _stream)
        bar = self._bar(range(len(items)), len(items), "videos")
        ticks = iter(bar)
        for got in loader:
            for index, error, views in zip(got["index"], got["error"],
                                           got["views"].split(got["count"])):  # fmt: skip
                next(ticks, None)
                path, label = items[index]
                yield path, label, (None if error else views), error
        if hasattr(bar, "close"):
            bar.close()

    def _per_video(
        self, videos: VideoInput, fn: str | Callable[[Tensor], Tensor], skip: Collection[str] = ()
    ) -> Iterator[tuple[tuple[str, int, str], Tensor | None]]:
        """``fn``'s outputs averaged over each video's views, in input order: ``((path, label,
        error), mean)``, mean None for a video that cannot be decoded."""
        decoded = self._decoded(videos, skip)
        items = (((path, label, error), views) for path, label, views, error in decoded)
        return self._stream(items, fn)

    def _forward(self, fn: str | Callable[[Tensor], Tensor], views: Tensor) -> Tensor:
        """``fn`` over uint8 views, ``batch_size`` per pass on the model's device (pinned and
        copied asynchronously to a GPU, normalised there); float32 results on the CPU."""
        call = getattr(self.model, fn) if isinstance(fn, str) else fn
        cuda = self.device.type == "cuda"
        if cuda:
            views = views.pin_memory()
        outs = []
        with torch.no_grad():
            for chunk in views.split(self.batch_size):
                x = self._normalise(chunk.to(self.device, non_blocking=cuda))
                outs.append(call(x).float().cpu())
        return torch.cat(outs)

    def _stream(
        self, items: Iterable[tuple[Item, Tensor | None]], fn: str | Callable[[Tensor], Tensor]
    ) -> Iterator[tuple[Item, Tensor | None]]:
        """Run ``fn`` over the uint8 views of consecutive items, ``batch_size`` views per
        forward (an item's views may share a pass with the next item's), average each item's
        views with the one :class:`~lightning_tsf.data.views.ViewAccumulator`, and yield
        ``(item, mean output)`` in order as soon as all of an item's views are done; an item
        without views (None) is yielded in its place as ``(item, None)``."""
        size = self.batch_size
        accumulator = ViewAccumulator()
        waiting: dict[int, Item] = {}  # items not yielded yet, by number (ascending)
        queued: list[tuple[int, Tensor]] = []  # (item number, views) not run yet
        for number, (item, views) in enumerate(_with_end(items)):
            end = item is _END
            if not end:
                waiting[number] = item
                if views is not None and len(views):
                    queued.append((number, views))
            count = sum(len(v) for _, v in queued)
            if count and (end or count >= size):
                owner = torch.cat([torch.full((len(v),), n, dtype=torch.long) for n, v in queued])
                x = torch.cat([v for _, v in queued])
                cut = len(x) if end else count // size * size
                out = self._forward(fn, x[:cut])
                accumulator.add(owner[:cut], torch.full((cut,), -1), [""] * cut, out=out)
                rest = owner[cut:]
                queued = [(int(n), x[cut:][rest == n]) for n in torch.unique(rest)]
            first_open = queued[0][0] if queued else None  # its views are not all run
            ready = [n for n in waiting if first_open is None or n < first_open]
            if not ready:
                continue
            scores = accumulator.pop([n for n in ready if n in accumulator.state()])
            means = dict(zip(scores.video_index.tolist(), scores.rows.get("out", [])))
            for n in ready:
                yield waiting.pop(n), means.get(n)


def _softmax(model: TimeSformer) -> Callable[[Tensor], Tensor]:
    """Class probabilities of a batch of views: what is averaged per video, as in ``tsf test``."""
    return lambda clips: model(clips).float().softmax(-1)


_END = object()  # marks the end of a stream's items


def _with_end(items: Iterable[tuple[Item, Tensor | None]]) -> Iterator[tuple[Any, Tensor | None]]:
    """The items, then ``(_END, None)`` to flush the last batch."""
    yield from items
    yield _END, None


def _features_and_tokens(model: TimeSformer, clips: Tensor) -> Tensor:
    """cls features and flattened per-frame tokens side by side: ``(B, D + T·D)``."""
    return torch.cat([model.forward_features(clips), clip_frame_tokens(model, clips).flatten(1)], 1)


# ---------------------------------------------------------------------------- files
def numbered_name(path: str, index: int, suffix: str = ".png") -> str:
    """Output file name for a video: its stem prefixed by its position, so names are unique."""
    return f"{index:04d}_{Path(path).stem}{suffix}"


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


def topk_columns(classes: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """Flat CSV columns of a top-k list: ``top1, prob1, top2, prob2, ...``."""
    row: dict[str, Any] = {}
    for k, (c, p) in enumerate(zip(classes, probs), 1):
        row[f"top{k}"], row[f"prob{k}"] = c, p
    return row
