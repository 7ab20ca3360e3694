"""Heatmap overlays of rollout maps on video frames, drawn as one titled PNG figure.

Layout: one panel per clip. Its title names the video, its true class (when known) and the
model's prediction for the shown clip; below it a row of frames (left to right) above the same
frames with the heatmap (``jet`` colour map: blue = little influence, red = most) blended in, and
each frame's index under it (the source frame number when known, else the position in the clip).
Frames are upscaled (nearest neighbour) to at least ``MIN_FRAME_PX`` pixels a side so small
clips (the demo's 32 px) stay readable; the heatmap is blended at that size (bilinear). Each
clip's map is min-max scaled over all its frames, so frames can be compared with each other.
The figure is laid out in pixels on a bare matplotlib ``Figure`` (Agg canvas, no pyplot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD
from lightning_tsf.models.timesformer import TimeSformer
from lightning_tsf.viz.plots import new_figure, render_figure
from lightning_tsf.viz.rollout import attention_rollout


def denormalise(
    video: Tensor, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> np.ndarray:
    """Normalised ``(C, T, H, W)`` clip -> ``(T, H, W, 3)`` uint8 frames, for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
    x = (video.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return x.round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def upsample_maps(maps: Tensor, height: int, width: int) -> np.ndarray:
    """``(T, h, w)`` patch maps -> ``(T, height, width)`` in [0, 1], min-max scaled over the clip.

    Rollout maps sit on a large near-uniform baseline (identity + diffuse attention), so the
    clip's minimum is subtracted before scaling: the colours show where influence differs.
    """
    m = maps.detach().float().cpu()
    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
    up = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[:, 0].clamp(0, 1).numpy()


def overlay(frames: np.ndarray, maps: Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend ``jet``-coloured ``maps`` ``(T, h, w)`` over ``frames`` ``(T, H, W, 3)`` uint8."""
    from matplotlib import colormaps

    heat = upsample_maps(maps, frames.shape[1], frames.shape[2])
    colour = colormaps["jet"](heat)[..., :3] * 255  # (T, H, W, 3)
    out = (1 - alpha) * frames.astype(np.float32) + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)


def heatmap_grid(frames: np.ndarray, maps: Tensor, alpha: float = 0.5) -> np.ndarray:
    """One clip's frames above their overlays, frames left to right: ``(2H, T·W, 3)`` uint8,
    pixel for pixel (no upscaling, no text)."""
    over = overlay(frames, maps, alpha)
    top = np.concatenate(list(frames), axis=1)
    bottom = np.concatenate(list(over), axis=1)
    return np.concatenate((top, bottom), axis=0)


MIN_FRAME_PX = 112  # smallest side of a frame in the figure
_PAD, _GAP, _TITLE, _LABEL, _SIDE, _BETWEEN = 10, 6, 26, 18, 18, 12  # layout, in pixels


def upscale(frames: np.ndarray, min_px: int = MIN_FRAME_PX) -> np.ndarray:
    """``(T, H, W, 3)`` frames repeated (nearest neighbour) by the smallest integer factor that
    makes both sides at least ``min_px``."""
    k = max(1, math.ceil(min_px / min(frames.shape[1], frames.shape[2])))
    return frames.repeat(k, axis=1).repeat(k, axis=2)


def clip_title(
    name: str | None = None,
    label: int | None = None,
    pred: int | None = None,
    prob: float | None = None,
    class_names: Sequence[str] | None = None,
) -> str:
    """``"<name> | true: <class> | predicted: <class> (<prob>)"``, leaving out what is unknown
    (``label`` None or negative: unlabelled)."""

    def cls(i: int) -> str:
        return class_names[i] if class_names and 0 <= i < len(class_names) else str(i)

    parts = [name] if name else []
    if label is not None and label >= 0:
        parts.append(f"true: {cls(label)}")
    if pred is not None:
        parts.append(f"predicted: {cls(pred)}" + (f" ({prob:.0%})" if prob is not None else ""))
    return " | ".join(parts)


def heatmap_figure(
    frames: np.ndarray,
    maps: Tensor,
    titles: Sequence[str] | None = None,
    frame_indices: Sequence[Sequence[int] | None] | None = None,
    alpha: float = 0.5,
    min_frame_px: int = MIN_FRAME_PX,
) -> Any:
    """The heatmap figure (module docstring) of clips ``frames`` ``(B, T, H, W, 3)`` uint8 with
    rollout ``maps`` ``(B, T, h, w)``: a matplotlib ``Figure`` whose frame axes are exactly the
    upscaled frame size in pixels. ``titles``: one per clip; ``frame_indices``: each clip's
    source frame numbers (None: positions ``t=0..T-1``)."""
    b, t = frames.shape[:2]
    big = [upscale(f, min_frame_px) for f in frames]
    fh, fw = big[0].shape[1:3]
    width = max(2 * _PAD + _SIDE + t * fw + (t - 1) * _GAP, 360)
    clip_h = _TITLE + 2 * fh + _GAP + _LABEL
    height = 2 * _PAD + b * clip_h + (b - 1) * _BETWEEN
    fig = new_figure((width / 100, height / 100))
    left = (width - (t * fw + (t - 1) * _GAP)) / 2 + _SIDE / 2

    def axes(x: float, y: float, image: np.ndarray) -> None:  # (x, y): top-left, in pixels
        ax = fig.add_axes((x / width, 1 - (y + fh) / height, fw / width, fh / height))
        ax.imshow(image, interpolation="nearest", aspect="auto")
        ax.set_axis_off()

    def text(x: float, y: float, s: str, **kw: Any) -> None:
        fig.text(x / width, 1 - y / height, s, ha="center", va="center", **kw)

    for i in range(b):
        top = _PAD + i * (clip_h + _BETWEEN)
        if titles is not None and titles[i]:
            text(width / 2, top + _TITLE / 2, titles[i], fontsize=10, fontweight="bold")
        over = overlay(big[i], maps[i], alpha)
        rows = (top + _TITLE, top + _TITLE + fh + _GAP)
        for y, name in zip(rows, ("frames", "rollout")):
            text(left - _SIDE / 2 - 2, y + fh / 2, name, fontsize=8, rotation=90)
        indices = frame_indices[i] if frame_indices is not None else None
        for j in range(t):
            x = left + j * (fw + _GAP)
            axes(x, rows[0], big[i][j])
            axes(x, rows[1], over[j])
            label = f"frame {indices[j]}" if indices is not None else f"t={j}"
            text(x + fw / 2, rows[1] + fh + _LABEL / 2, label, fontsize=8)
    return fig


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG (parent folders created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def render_heatmaps(
    model: TimeSformer,
    video: Tensor,
    frames: np.ndarray | None = None,
    *,
    names: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    frame_indices: Sequence[Sequence[int] | None] | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    alpha: float = 0.5,
) -> tuple[np.ndarray, Tensor]:
    """Rollout heatmap figure of clips ``video`` ``(B, C, T, H, W)`` or ``(C, T, H, W)``.

    ``frames``: the clips' ``(B, T, H, W, 3)`` (or ``(T, H, W, 3)``) uint8 frames as the model
    saw them; None denormalises ``video`` with ``mean``/``std``. Each clip is titled with its
    entry of ``names`` and ``labels`` (true class; -1 unknown) and the model's prediction for
    the clip, named by ``class_names``; ``frame_indices`` label the frames
    (:func:`heatmap_figure`). Returns the RGB image and the raw rollout maps ``(B, T, H/P, W/P)``.
    """
    if video.ndim == 4:
        video = video[None]
    maps, logits = attention_rollout(model, video)
    if frames is None:
        frames = np.stack([denormalise(v, mean, std) for v in video])
    elif frames.ndim == 4:
        frames = frames[None]
    probs = logits.float().softmax(-1).cpu()
    titles = [
        clip_title(
            names[i] if names is not None else None,
            int(labels[i]) if labels is not None else None,
            int(probs[i].argmax()),
            float(probs[i].max()),
            class_names,
        )
        for i in range(len(probs))
    ]
    fig = heatmap_figure(frames, maps.cpu(), titles, frame_indices, alpha)
    return render_figure(fig, None, tight=False), maps


def save_heatmap_grid(
    model: TimeSformer,
    video: Tensor,
    frames: np.ndarray | None,
    path: str | Path,
    **kwargs,
) -> Tensor:
    """Write the rollout heatmap figure of ``video`` to ``path`` (PNG); returns the raw maps.

    Arguments as :func:`render_heatmaps` (``frames`` may be None); ``kwargs``: its keyword
    arguments (``names``, ``labels``, ``class_names``, ``frame_indices``, ``mean``, ``std``,
    ``alpha``).
    """
    image, maps = render_heatmaps(model, video, frames, **kwargs)
    save_png(image, path)
    return maps
