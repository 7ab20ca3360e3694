"""Using a trained model from Python: :class:`Predictor`.

One object holds a model, its input record and the device; its methods take videos (a file, a
folder searched recursively, an annotation file, or a list of these) and return small result
objects that also turn into rows for JSON/CSV. The ``tsf predict-files``, ``features-files``,
``heatmap-files`` and ``timeline`` commands are thin wrappers over it.

Videos go the dataset path's way: their evaluation views are the items of the evaluation
dataset ``tsf test`` reads (:func:`eval_items`), decoded by DataLoader worker processes
(``num_workers``, by default every core this process may use:
:func:`~lightning_tsf.data.loader.inference_workers`) in
batches of ``batch_size`` views (views of consecutive videos share a forward pass, pinned and
run on the GPU when there is one), and each video's view scores are averaged once, by the
:class:`~lightning_tsf.data.scores.ViewAccumulator` that ``tsf test`` uses. Results come out in
the order of the inputs. A video that cannot be decoded is not dropped silently: it is listed
in the result's ``errors`` with a one-line reason (:meth:`Predictor.iter_predict` yields it in
its place). ``timeline`` decodes a long video in one pass, each frame once
(:mod:`lightning_tsf.timeline`). Result types and their writers: :mod:`lightning_tsf.results`.

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

import logging
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.clips import ViewSpec, clip_frame_indices
from lightning_tsf.data.dataset import VideoDataset
from lightning_tsf.data.inputs import VIEW_OPTIONS, InputConfig
from lightning_tsf.data.items import VideoBatch, VideoItem, collate_views, log_failure, view_of
from lightning_tsf.data.loader import inference_workers
from lightning_tsf.data.scores import ViewAccumulator
from lightning_tsf.data.transforms import normalize_video
from lightning_tsf.inference import Prediction, clip_frame_tokens, collect_videos, load_model
from lightning_tsf.inference import top_k as top_k_of
from lightning_tsf.models import TimeSformer
from lightning_tsf.results import (
    Features,
    Heatmap,
    Heatmaps,
    Predictions,
    VideoError,
    numbered_name,
)
from lightning_tsf.timeline import Timeline, video_timeline

VideoInput = str | Path | Sequence[str | Path]
Item = TypeVar("Item")
HANDFUL = 5  # more videos (or windows) than this get a progress bar on a terminal
Forward = str | Callable[[Tensor], Tensor]  # a model method's name, or a function of clips


def eval_items(videos: Sequence[tuple[str, int]], spec: ViewSpec) -> VideoDataset:
    """The evaluation items of ``(path, label)`` videos, as ``tsf test`` reads them: item ``i``
    is every view of video ``i`` (uint8 ``(V, C, T, S, S)`` with ``video_index``, ``label``,
    ``path``, ``valid`` and ``error``; :func:`~lightning_tsf.data.items.collate_views` makes
    view rows of them). The one place where the Predictor meets the data layer's items."""
    return VideoDataset([VideoRecord(p, label) for p, label in videos], spec, train=False)


class Predictor:
    """A trained TimeSformer ready to run on video files.

    ``input_config``: what the model expects (:class:`~lightning_tsf.data.inputs.InputConfig`,
    read from the checkpoint by :meth:`from_checkpoint`); ``backend``: the video reader
    (``auto``: PyAV; see :mod:`lightning_tsf.data.decode`). ``device``: None picks ``cuda``
    when available, else ``cpu``. ``batch_size``: views per forward pass (views of several
    videos share one). ``progress``: a tqdm bar over videos; None shows it on a terminal for
    more than a handful, False never. ``num_workers``: decoding processes (None:
    :func:`~lightning_tsf.data.loader.inference_workers`; 0 decodes in this process). Any
    number gives the same results.
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
        self.num_workers = inference_workers() if num_workers is None else num_workers
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
        the checkpoint's (None: as the checkpoint says)."""
        unknown = set(views) - set(VIEW_OPTIONS)
        if unknown:
            raise TypeError(f"unknown view option(s): {', '.join(sorted(unknown))}")
        overrides = {"attention_type": attention_type, "num_frames": num_frames,
                     "img_size": img_size}  # fmt: skip
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
        fn: Forward = partial(_features_and_tokens, self.model) if frame_tokens else (
            "forward_features")  # fmt: skip
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
        tokens = stacked[:, dim:].reshape(len(stacked), -1, dim) if frame_tokens else None
        return Features(stacked[:, :dim].copy(), paths, labels, errors, tokens)

    def heatmaps(self, videos: VideoInput, out_dir: str | Path | None = None) -> Heatmaps:
        """Attention-rollout heatmaps of each video's centre view, titled with the file name,
        true and predicted class, frames labelled with their source index. With ``out_dir``: one
        PNG grid per video (``0000_<stem>.png``, numbered in order) and ``maps.pt``, a dict
        path → raw maps ``(T, h, w)``."""
        from lightning_tsf.viz.heatmap import save_png

        result = Heatmaps()
        items = video_items(videos)
        centre = partial(_collate_view, view=self.spec.centre_view)
        for batch in self._batches(eval_items(items, self.spec), len(items), centre):
            for i, (path, label) in enumerate(zip(batch["path"], batch["label"].tolist())):
                if not batch["valid"][i]:
                    result.errors.append(VideoError(path, batch["error"][i]))
                    continue
                heat = _centre_heatmap(self, batch["video"][i], path, label)
                if out_dir is not None:
                    png = save_png(heat.image, Path(out_dir) / numbered_name(path, len(result)))
                    heat.png = str(png)
                result.videos.append(heat)
        if out_dir is not None and result.videos:
            torch.save({h.path: h.maps for h in result.videos}, Path(out_dir) / "maps.pt")
        return result

    def timeline(
        self, video: str | Path, window_s: float = 2.0, stride_s: float = 1.0, top_k: int = 3
    ) -> Timeline:
        """Top-``top_k`` classes of windows of ``window_s`` seconds every ``stride_s`` seconds
        (:func:`~lightning_tsf.timeline.video_timeline`): each window one clip with the model's
        frames spread over it, scored over the spatial crops of the input record; whole
        windows only, a video shorter than a window gives one (:attr:`Timeline.note` says
        so). Raises :class:`~lightning_tsf.data.decode.VideoDecodeError` for an unreadable
        video and ``ValueError`` for a non-positive window or stride."""
        probs = partial(self._forward, _softmax(self.model))
        per_pass = max(1, self.batch_size // self.spec.num_spatial_crops)
        return video_timeline(
            video, self.spec, lambda views: probs(views.transpose(1, 2)), self.class_names,
            window_s=window_s, stride_s=stride_s, k=top_k, per_pass=per_pass,
            progress=lambda items, total: progress_bar(items, total, "windows", self.progress),
        )  # fmt: skip

    # ------------------------------------------------------------------ the machinery
    def _batches(self, dataset: VideoDataset, n: int, collate: Callable = collate_views):
        """Batches of ``batch_size // views`` whole videos (at least one), as the DataModule's."""
        workers = 0 if n < 2 else min(self.num_workers, n)
        bar = progress_bar(range(n), n, "videos", self.progress)
        videos = max(1, self.batch_size // dataset.num_views)
        return view_batches(dataset, videos, workers, self.device.type == "cuda", bar, collate)

    def _normalise(self, clips: Tensor) -> Tensor:
        """uint8 ``(B, C, T, S, S)`` → the model's normalised float clips, where the clips are
        (on the GPU after a uint8 transfer, when there is one)."""
        return normalize_video(clips, self.input_config.mean, self.input_config.std)

    def _per_video(
        self, videos: VideoInput, fn: Forward, skip: Collection[str] = ()
    ) -> Iterator[tuple[tuple[str, int, str], Tensor | None]]:
        """``fn``'s outputs averaged over each video's views, in input order: ``((path, label,
        error), mean)``, mean None for a video that cannot be decoded."""
        items = video_items(videos, skip)
        if not items:
            return
        dataset = eval_items(items, self.spec)
        accumulator = ViewAccumulator()
        for batch in self._batches(dataset, len(items)):
            valid = batch["valid"]
            rows = {"out": self._forward(fn, batch["video"][valid])} if valid.any() else {}
            accumulator.add(batch["video_index"], batch["label"], batch["path"], valid,
                            batch["error"], **rows)  # fmt: skip
            yield from _finished(accumulator, dataset.num_views, items)
        yield from _finished(accumulator, 0, items)

    def _forward(self, fn: Forward, clips: Tensor) -> Tensor:
        """``fn`` over uint8 clips ``(B, C, T, S, S)``, ``batch_size`` per pass on the model's
        device (pinned and copied asynchronously to a GPU, normalised there); float32 results
        on the CPU."""
        call = getattr(self.model, fn) if isinstance(fn, str) else fn
        cuda = self.device.type == "cuda"
        if cuda and not clips.is_pinned():
            clips = clips.pin_memory()
        outs = []
        with torch.no_grad():
            for chunk in clips.split(self.batch_size):
                x = self._normalise(chunk.to(self.device, non_blocking=cuda))
                outs.append(call(x).float().cpu())
        return torch.cat(outs)


def video_items(videos: VideoInput, skip: Collection[str] = ()) -> list[tuple[str, int]]:
    """``(path, label)`` of the inputs (:func:`~lightning_tsf.inference.collect_videos`),
    less the paths in ``skip``."""
    inputs = [videos] if isinstance(videos, str | Path) else list(videos)
    return [item for item in collect_videos([str(v) for v in inputs]) if item[0] not in skip]


def _centre_heatmap(pred: Predictor, clip: Tensor, path: str, label: int) -> Heatmap:
    """The rollout heatmap of one uint8 centre view ``(C, T, S, S)``."""
    from lightning_tsf.viz.heatmap import render_heatmaps

    temporal = pred.spec.split(pred.spec.centre_view)[0]
    image, maps = render_heatmaps(
        pred.model, pred._normalise(clip[None].to(pred.device)),
        clip.permute(1, 2, 3, 0).numpy(), names=[Path(path).name], labels=[label],
        class_names=pred.class_names,
        frame_indices=[clip_frame_indices(path, pred.spec, temporal)],
    )  # fmt: skip (the frames are given: mean/std would only denormalise the clip)
    return Heatmap(path, label, maps[0].cpu(), image)


def view_batches(
    dataset: VideoDataset, videos: int, workers: int, pin: bool, bar: Iterable[int],
    collate: Callable[[list[VideoItem]], VideoBatch] = collate_views,
) -> Iterator[VideoBatch]:  # fmt: skip
    """Batches of ``videos`` evaluation items (whole videos) of ``dataset``, in order, decoded
    by ``workers`` processes (``pin``: page-locked, for a GPU), put together by ``collate`` in
    the worker; ``bar`` ticks once per video."""
    loader = DataLoader(dataset, batch_size=videos, num_workers=workers, pin_memory=pin,
                        collate_fn=collate, prefetch_factor=4 if workers else None)  # fmt: skip
    ticks, seen = iter(bar), -1
    # the dataset logs each broken video (for training); here the result reports it, once
    dataset_log = logging.getLogger(log_failure.__module__)
    level = dataset_log.level
    dataset_log.setLevel(logging.ERROR)  # before the workers fork
    try:
        for batch in loader:
            last = int(batch["video_index"].max())
            for _ in range(last - seen):
                next(ticks, None)
            seen = max(seen, last)
            yield batch
    finally:
        dataset_log.setLevel(level)
        if hasattr(bar, "close"):
            bar.close()


def progress_bar(items: Iterable[Item], total: int, unit: str, show: bool | None) -> Iterable[Item]:
    """A tqdm bar over ``items`` when ``show`` (None: on a terminal, for more than a handful)."""
    if show is None:
        show = total > HANDFUL and sys.stderr.isatty()
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, unit=unit.rstrip("s"), desc=unit)


def _collate_view(items: list[VideoItem], view: int) -> VideoBatch:
    """View ``view`` of each item, as one batch (the heatmaps' centre views)."""
    return default_collate([view_of(item, view) for item in items])


def _finished(
    accumulator: ViewAccumulator, num_views: int, items: Sequence[tuple[str, int]]
) -> Iterator[tuple[tuple[str, int, str], Tensor | None]]:
    """Pop the videos of which ``num_views`` views are in (0: all) in ascending order:
    ``((path, label, error), mean output or None)``. Items come in video order, so these are
    the next videos of the input."""
    state = accumulator.state()
    done = sorted(v for v, e in state.items() if e["seen"] >= num_views)
    errors = {v: state[v]["error"] for v in done if not state[v]["rows"]}
    scores = accumulator.pop(done)
    means = dict(zip(scores.video_index.tolist(), scores.rows.get("out", [])))
    for v in done:
        path, label = items[v]
        yield (path, label, errors.get(v, "")), means.get(v)


def _softmax(model: TimeSformer) -> Callable[[Tensor], Tensor]:
    """Class probabilities of a batch of views: what is averaged per video, as in ``tsf test``."""
    return lambda clips: model(clips).float().softmax(-1)


def _features_and_tokens(model: TimeSformer, clips: Tensor) -> Tensor:
    """cls features and flattened per-frame tokens side by side: ``(B, D + T·D)``."""
    return torch.cat([model.forward_features(clips), clip_frame_tokens(model, clips).flatten(1)], 1)
