"""TimeSformer backbone, presets and checkpoint loading."""

from lightning_tsf.models.checkpoint import (
    CheckpointError,
    LoadReport,
    convert_hf_state_dict,
    load_checkpoint,
)
from lightning_tsf.models.presets import PRESETS, create_model
from lightning_tsf.models.timesformer import BLOCKS, TimeSformer
from lightning_tsf.models.tokens import TokenConfig

__all__ = [
    "BLOCKS",
    "PRESETS",
    "CheckpointError",
    "LoadReport",
    "TimeSformer",
    "TokenConfig",
    "convert_hf_state_dict",
    "create_model",
    "load_checkpoint",
]
