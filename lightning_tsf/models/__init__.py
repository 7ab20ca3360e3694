"""TimeSformer backbone, presets and checkpoint loading.

Names are imported lazily: ``tsf X --help`` reads the preset and scheme names without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "LoadReport": "checkpoint",
    "convert_hf_state_dict": "checkpoint",
    "load_checkpoint": "checkpoint",
    "PRESETS": "presets",
    "create_model": "presets",
    "BLOCKS": "timesformer",
    "TimeSformer": "timesformer",
}
__all__ = [
    "BLOCKS",
    "PRESETS",
    "CheckpointError",
    "LoadReport",
    "TimeSformer",
    "convert_hf_state_dict",
    "create_model",
    "load_checkpoint",
]

if TYPE_CHECKING:
    from lightning_tsf.models.checkpoint import (
        CheckpointError,
        LoadReport,
        convert_hf_state_dict,
        load_checkpoint,
    )
    from lightning_tsf.models.presets import PRESETS, create_model
    from lightning_tsf.models.timesformer import BLOCKS, TimeSformer


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightning_tsf.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightning_tsf.models' has no attribute {name!r}")
