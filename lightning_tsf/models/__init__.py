"""TimeSformer backbone, presets and checkpoint loading."""

from lightning_tsf.models.timesformer import BLOCKS, TimeSformer

__all__ = ["BLOCKS", "TimeSformer"]
