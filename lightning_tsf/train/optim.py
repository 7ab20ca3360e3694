"""Optimisation recipes: the paper's SGD + step schedule, and AdamW + warm-up + cosine.

Schedules are one :class:`LRSchedule` (a plain object, so a ``LambdaLR`` state dict holds only
numbers and checkpoints load with ``weights_only=True``), stepped every optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "constant")


def param_groups(model: nn.Module, weight_decay: float, exclude_from_decay: bool) -> list[dict]:
    """One group with ``weight_decay``; with ``exclude_from_decay`` a second, decay-free group
    holds norms, biases (every parameter with < 2 dims) and ``model.no_weight_decay()`` names."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not exclude_from_decay:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    no_decay = [p for n, p in params if p.ndim < 2 or n in skip]
    decay = [p for n, p in params if not (p.ndim < 2 or n in skip)]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    exclude_from_decay: bool = False,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``sgd`` (momentum, Nesterov: the paper) or ``adamw`` (``momentum`` is beta1).

    ``fused``: AdamW's fused kernel (one launch for all parameters, its step counters on the
    device: nothing read back per step); default: fused when every parameter is on a CUDA
    device, else torch's default (see ``benchmarks/bench_overhead.py`` for the CPU figures)."""
    groups = param_groups(model, weight_decay, exclude_from_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        if fused is None:
            fused = all(p.is_cuda for g in groups for p in g["params"]) or None
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), fused=fused)
    raise ValueError(f"optimizer={name!r}; expected one of {OPTIMIZERS}")


class LRSchedule:
    """Multiplier of the base lr at optimizer step ``step``: linear warm-up, then ``step``
    (× ``gamma`` at each milestone epoch), ``cosine`` (to ``min_lr_ratio`` at the end) or
    ``constant``."""

    def __init__(
        self,
        kind: str,
        steps_per_epoch: int,
        epochs: int,
        milestones: Sequence[int] = (11, 14),
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if kind not in SCHEDULERS:
            raise ValueError(f"scheduler={kind!r}; expected one of {SCHEDULERS}")
        self.kind = kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = max(1, steps_per_epoch * epochs)
        self.milestones = [int(m) for m in milestones]
        self.gamma = gamma
        self.warmup = int(round(warmup_epochs * self.steps_per_epoch))
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "step":
            epoch = step // self.steps_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "cosine":
            t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, kind: str = "step", **kwargs: object
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :class:`LRSchedule` (``kwargs`` are its arguments)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(kind, **kwargs))  # type: ignore[arg-type]
