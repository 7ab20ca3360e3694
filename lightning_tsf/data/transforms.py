"""Spatial transforms from decoded uint8 frames ``(T, H, W, C)`` to a uint8 clip ``(C, T, H, W)``.

Everything in the DataLoader workers stays uint8: resizing (channels-last, one ``interpolate``
call for all frames), crops and flips. Training crops the source region before resizing it, so
only ``crop_size²`` pixels are ever interpolated. The float conversion and normalisation,
:func:`normalize_video`, run on the device after the batch transfer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_MEAN = (0.45, 0.45, 0.45)
DEFAULT_STD = (0.225, 0.225, 0.225)


def _as_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, C) uint8 → a (T, C, H, W) channels-last view (no copy)."""
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected (T, H, W, C) uint8 frames, got {tuple(x.shape)} {x.dtype}")
    return x.permute(0, 3, 1, 2)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) after scaling so the short side is ``short_side`` (official rounding: floor)."""
    if height <= width:
        return short_side, int(math.floor(width * short_side / height))
    return int(math.floor(height * short_side / width)), short_side


def resize_short_side(frames: np.ndarray | torch.Tensor, short_side: int) -> torch.Tensor:
    """(T, H, W, C) uint8 frames -> (T, C, H', W') uint8 with the short side at ``short_side``."""
    x = _as_tchw(frames)
    return _resize(x, short_side_size(*x.shape[-2:], short_side))


def spatial_crop(resized: torch.Tensor, crop: int, index: int, num_crops: int) -> torch.Tensor:
    """Crop ``index`` of ``num_crops`` (see :func:`spatial_crop_offsets`) of ``(T, C, H, W)``."""
    y, x = spatial_crop_offsets(*resized.shape[-2:], crop, index, num_crops)
    return resized[:, :, y : y + crop, x : x + crop]


def spatial_crop_offsets(
    height: int, width: int, crop: int, index: int, num_crops: int
) -> tuple[int, int]:
    """(y, x) of crop ``index`` of ``num_crops`` along the long side (0 = left/top, centre, end).

    One crop is the centre crop; three are left/centre/right for landscape (and square) frames
    and top/centre/bottom for portrait ones, as in the official test protocol, whose centre
    offsets are ``ceil((side - crop) / 2)``.
    """
    y, x = -(-(height - crop) // 2), -(-(width - crop) // 2)  # ceil division
    if num_crops == 1:
        return y, x
    if num_crops != 3:
        raise ValueError("num_crops must be 1 or 3")
    if width >= height:
        x = [0, x, width - crop][index]
    else:
        y = [0, y, height - crop][index]
    return y, x


def to_clip(x: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) uint8 frames -> a contiguous (C, T, H, W) uint8 clip (the model's layout)."""
    return x.permute(1, 0, 2, 3).contiguous()


def normalize_video(
    video: torch.Tensor, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> torch.Tensor:
    """uint8 clips ``(..., C, T, H, W)`` -> float32 ``(x / 255 - mean) / std`` per channel.

    Runs where ``video`` is: on the GPU after the batch transfer (4x less traffic than float
    clips), on the CPU for inference. Computed as ``x * (1 / (255 std)) - mean / std``.
    """
    # the two per-channel factors go to the device without a blocking copy (a blocking
    # host-to-GPU copy waits for the queue: once per training step)
    factors = [[1.0 / (255.0 * s) for s in std], [m / s for m, s in zip(mean, std)]]
    scale, shift = torch.tensor(factors, dtype=torch.float32).to(video.device, non_blocking=True)
    shape = (-1, 1, 1, 1)
    return video.to(torch.float32).mul_(scale.view(shape)).sub_(shift.view(shape))


class TrainTransform:
    """Random short-side scale jitter, random crop, optional horizontal flip (uint8 throughout).

    The short side ``S`` is drawn uniformly from the integers ``min..max`` (with
    ``inverse_uniform``, ``round(1 / uniform(1 / max, 1 / min))``, the official SSv2 draw); the
    crop offset uniformly from ``0..side - crop`` on each axis; a flip with probability 1/2.
    (The official code draws ``round(uniform(min, max))``, half as likely at the two ends, and
    never the last offset, ``randint(0, side - crop)`` being exclusive: small differences in
    the distribution, kept here because the demo's recipe was tuned on these draws.)
    Instead of resizing whole frames and cropping, the crop window is mapped back to source
    pixels and only that window is resized.
    """

    def __init__(
        self,
        crop_size: int = 224,
        scale: tuple[int, int] = (256, 320),
        horizontal_flip: bool = True,
        inverse_uniform: bool = False,
    ) -> None:
        self.crop_size = crop_size
        self.scale = (int(scale[0]), int(scale[1]))
        self.horizontal_flip = horizontal_flip
        self.inverse_uniform = inverse_uniform

    def short_side(self, rng: np.random.Generator) -> int:
        """One draw of the jittered short side (never below the crop size)."""
        low, high = self.scale
        if self.inverse_uniform:
            size = round(1.0 / rng.uniform(1.0 / high, 1.0 / low))
        else:
            size = int(rng.integers(low, high + 1))
        return max(int(size), self.crop_size)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Transform (T, H, W, C) uint8 frames into a uint8 (C, T, crop, crop) clip."""
        x = _as_tchw(frames)
        h, w = x.shape[-2:]
        crop = self.crop_size
        sh, sw = short_side_size(h, w, self.short_side(rng))
        y0, x0 = int(rng.integers(0, sh - crop + 1)), int(rng.integers(0, sw - crop + 1))
        # Source window covering the crop in scaled coordinates.
        fy, fx = h / sh, w / sw
        ys, ye = int(math.floor(y0 * fy)), min(h, int(math.ceil((y0 + crop) * fy)))
        xs, xe = int(math.floor(x0 * fx)), min(w, int(math.ceil((x0 + crop) * fx)))
        x = _resize(x[:, :, ys:ye, xs:xe], (crop, crop))
        if self.horizontal_flip and rng.random() < 0.5:
            x = x.flip(-1)
        return to_clip(x)
