"""Deliberate faults for the mutation check (tests/test_mutants.py), injected from outside the
code under test: a pytest plugin loaded with ``-p mutants`` that, when ``$TSF_MUTANT`` names
one of :data:`MUTANTS`, monkeypatches the package (and torch) before any test runs. The code
under test is never edited. At the end of the session the plugin prints how often the mutated
code ran (``mutant NAME ran N times``), so a mutant that is never reached cannot pass for killed.

Run one by hand: ``TSF_MUTANT=frames_reversed PYTHONPATH=.:tests pytest -p mutants
tests/test_data_readers.py`` (the tests named in test_mutants.py must fail).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

ENV = "TSF_MUTANT"
calls = 0  # times the mutated code ran in this process


def _count(func: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        return func(*args, **kwargs)

    return wrapper


def optimizer_noop(mp: pytest.MonkeyPatch) -> None:
    """Every optimizer's ``step`` evaluates the closure (the loss and gradients are computed)
    and changes no weight."""
    import torch

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                return closure()
        return None

    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        mp.setattr(cls, "step", _count(step))


def lr_zero(mp: pytest.MonkeyPatch) -> None:
    """The learning-rate schedule stays at zero (every multiplier 0)."""
    from lightning_tsf.train.optim import LRSchedule

    mp.setattr(LRSchedule, "__call__", _count(lambda self, step: 0.0))


_inside = [0]  # collate functions calling each other roll the labels once, at the outermost


def _rolled(collate: Callable) -> Callable:
    import torch

    def rolled(batch):
        _inside[0] += 1
        try:
            out = collate(batch)
        finally:
            _inside[0] -= 1
        if not _inside[0] and isinstance(out, dict) and isinstance(out.get("label"), torch.Tensor):
            out["label"] = out["label"].roll(1, dims=0)
        return out

    return rolled


def labels_rolled(mp: pytest.MonkeyPatch) -> None:
    """The loaders' collation (torch's default for training, the package's ``collate_views``
    for evaluation) pairs each clip with the next clip's label (labels rolled by one within
    the batch)."""
    import torch
    from torch.utils.data import _utils

    counted = _count(_rolled(_utils.collate.default_collate))
    mp.setattr(_utils.collate, "default_collate", counted)
    mp.setattr(torch.utils.data, "default_collate", counted)
    mp.setattr(torch.utils.data.dataloader, "default_collate", counted, raising=False)
    # the evaluation loaders' collation of views (lightning_tsf.data.items), where it is used
    import importlib

    for name in ("lightning_tsf.data.items", "lightning_tsf.data.sources",
                 "lightning_tsf.data.streaming"):  # fmt: skip
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        views = getattr(module, "collate_views", None)
        if views is not None:
            mp.setattr(module, "collate_views", _count(_rolled(views)))


def frames_reversed(mp: pytest.MonkeyPatch) -> None:
    """Every video reader returns the requested frames in reverse order."""
    from lightning_tsf.data.decode import VideoReader

    original = VideoReader.get_frames

    def get_frames(self, indices):
        return original(self, indices)[::-1].copy()

    mp.setattr(VideoReader, "get_frames", _count(get_frames))


def time_attention_skipped(mp: pytest.MonkeyPatch) -> None:
    """The temporal attention step (divided space-time, axial) contributes nothing."""
    import torch

    from lightning_tsf.models.timesformer import Block

    original = Block._attend

    def attend(self, name, x, maps):
        if name == "temporal":
            global calls
            calls += 1
            return torch.zeros_like(x)
        return original(self, name, x, maps)

    mp.setattr(Block, "_attend", attend)


MUTANTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    f.__name__: f
    for f in (optimizer_noop, lr_zero, labels_rolled, frames_reversed, time_attention_skipped)
}
_patch = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get(ENV)
    if name:
        if name not in MUTANTS:
            raise pytest.UsageError(f"{ENV}={name!r}; known: {', '.join(MUTANTS)}")
        MUTANTS[name](_patch)


def pytest_unconfigure(config: pytest.Config) -> None:
    name = os.environ.get(ENV)
    if name:
        print(f"\nmutant {name} ran {calls} times", flush=True)
    _patch.undo()
