"""Mixup and cutmix of a training batch: a batch mixed with a permutation of itself, both label
sets and the weight of the first, for the loss ``lam * CE(y_a) + (1 - lam) * CE(y_b)``."""

from __future__ import annotations

import random

import torch
from torch import Tensor


def mix_batch(video: Tensor, label: Tensor, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[Tensor, Tensor, Tensor, float]:  # fmt: skip
    """Mixup or cutmix (half each when both are on): returns mixed video, both label sets and
    the weight of the first. The draws are Python numbers (``random``, seeded by
    ``seed_everything``): nothing is read back from a tensor."""
    alphas = [a for a in (mixup_alpha, cutmix_alpha) if a > 0]
    if not alphas or video.shape[0] < 2:
        return video, label, label, 1.0
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or random.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = random.betavariate(alpha, alpha)
    perm = torch.randperm(video.shape[0], device=video.device)
    if not use_cutmix:
        return lam * video + (1 - lam) * video[perm], label, label[perm], lam
    h, w = video.shape[-2:]
    ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    y0, x0 = random.randint(0, h - ch), random.randint(0, w - cw)
    video = video.clone()
    video[..., y0 : y0 + ch, x0 : x0 + cw] = video[perm][..., y0 : y0 + ch, x0 : x0 + cw]
    return video, label, label[perm], 1 - ch * cw / (h * w)
