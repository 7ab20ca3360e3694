"""Heatmap overlays of rollout maps on video frames, written as one PNG grid.

Layout of a grid: one row pair per clip, frames left to right; the upper row is the frames, the
lower row the same frames with the heatmap (``jet`` colour map: blue = little influence, red =
most) blended in. Each clip's map is min-max scaled over all its frames, so frames can be
compared with each other. The PNG is composed pixel for pixel (no matplotlib figure), so its size
is exactly ``(2·H·clips, W·T)`` plus nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD
from lightning_tsf.models.timesformer import TimeSformer
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
    """One clip's frames above their overlays, frames left to right: ``(2H, T·W, 3)`` uint8."""
    over = overlay(frames, maps, alpha)
    top = np.concatenate(list(frames), axis=1)
    bottom = np.concatenate(list(over), axis=1)
    return np.concatenate((top, bottom), axis=0)


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
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    alpha: float = 0.5,
) -> tuple[np.ndarray, Tensor]:
    """Rollout heatmap grid of clips ``video`` ``(B, C, T, H, W)`` or ``(C, T, H, W)``.

    ``frames``: the clips' ``(B, T, H, W, 3)`` (or ``(T, H, W, 3)``) uint8 frames as the model
    saw them; None denormalises ``video`` with ``mean``/``std``. Returns the stacked grid image
    ``(2·H·B, T·W, 3)`` and the raw rollout maps ``(B, T, H/P, W/P)``.
    """
    if video.ndim == 4:
        video = video[None]
    maps, _ = attention_rollout(model, video)
    if frames is None:
        frames = np.stack([denormalise(v, mean, std) for v in video])
    elif frames.ndim == 4:
        frames = frames[None]
    grids = [heatmap_grid(f, m, alpha) for f, m in zip(frames, maps.cpu())]
    return np.concatenate(grids, axis=0), maps


def save_heatmap_grid(
    model: TimeSformer,
    video: Tensor,
    frames: np.ndarray | None,
    path: str | Path,
    **kwargs,
) -> Tensor:
    """Write the rollout heatmap grid of ``video`` to ``path`` (PNG); returns the raw maps.

    Arguments as :func:`render_heatmaps` (``frames`` may be None); ``kwargs``: ``mean``,
    ``std``, ``alpha``.
    """
    image, maps = render_heatmaps(model, video, frames, **kwargs)
    save_png(image, path)
    return maps
