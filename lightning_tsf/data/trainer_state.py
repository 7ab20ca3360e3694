"""What the data side reads of a running Trainer, in one place: Lightning's own state, whose
names change between releases, is touched only here (and tested in tests/test_data_loader.py)."""

from __future__ import annotations

import os
from typing import Any


def global_seed(default: int = 0) -> int:
    """The seed ``seed_everything`` set for this run (``PL_GLOBAL_SEED``), else ``default``."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


def current_epoch(trainer: Any | None) -> int:
    """The training epoch (0-based) a loader iterator created now belongs to: the number
    Lightning gives samplers' ``set_epoch`` (its processed epochs). Unlike
    ``trainer.current_epoch`` it is already the next epoch right after a restore from a
    checkpoint written at an epoch's end (which Lightning restores without the train loader's
    own state)."""
    return 0 if trainer is None else int(trainer.fit_loop.epoch_progress.current.processed)


def batches_done_this_epoch(trainer: Any | None) -> int:
    """Training batches of the current epoch already done: non-zero when a run was restored
    from a mid-epoch checkpoint (SLURM pre-emption); 0 without a Trainer."""
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
