"""Quiet by default: the lines a run prints that a user cannot act on, silenced where they come
from, each by a filter scoped to the library (and message) that emits it, or fixed at the
source; ``--verbose`` or ``TSF_VERBOSE=1`` shows them all again.

What is silenced and why (the demo's and ``tsf fit``'s output, Lightning 2.6, W&B 0.2x):

* Lightning's tip to install ``litlogger`` (every Trainer), and its note "Loading
  `train_dataloader` to estimate number of stepping batches" (the schedule asks for the count):
  ``rank_zero_info`` log records of ``pytorch_lightning.utilities.rank_zero``.
* Lightning's ``isinstance(treespec, LeafSpec)`` deprecation (its own ``_pytree`` module against
  torch >= 2.10) and "Your `IterableDataset` has `__len__` defined" (the shard stream gives each
  worker its own part of the data, which is what the warning asks for): Python warnings whose
  message and emitting module are Lightning's.
* W&B's "The anonymous setting has no effect": Lightning's ``WandbLogger`` passes
  ``anonymous=None`` to ``wandb.init``; dropped from the logger's init arguments (a fix, not a
  filter). W&B's "git root ... does not exist": W&B looks for a git repository from the run
  folder before it is created; the folder is created first (a fix too).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

VERBOSE_ENV = "TSF_VERBOSE"
LIGHTNING_LOGGER = "pytorch_lightning.utilities.rank_zero"
LIGHTNING_INFO = (
    "💡 Tip: For seamless cloud logging",
    "to estimate number of stepping batches",
)
LIGHTNING_WARNINGS = (  # (message regex, emitting module regex)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    (r"Your `IterableDataset` has `__len__` defined", r"pytorch_lightning\."),
)


def verbose() -> bool:
    """``TSF_VERBOSE`` is set (not empty, not 0): show every line."""
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


class DropMessages(logging.Filter):
    """Drops the records of one logger whose message contains one of ``parts``."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.parts)


def quiet_libraries() -> None:
    """Install the filters above (once; none when :func:`verbose`)."""
    if verbose():
        return
    logger = logging.getLogger(LIGHTNING_LOGGER)
    if not any(isinstance(f, DropMessages) for f in logger.filters):
        logger.addFilter(DropMessages(LIGHTNING_INFO))
    for message, module in LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


def quiet_loggers(loggers: list[Any]) -> None:
    """The W&B fixes above, on a Trainer's loggers before their run starts."""
    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)  # Lightning's WandbLogger: wandb.init kwargs
        if not isinstance(init, dict):
            continue
        if init.get("anonymous") is None:
            init.pop("anonymous", None)
        if init.get("dir"):
            Path(init["dir"]).mkdir(parents=True, exist_ok=True)
