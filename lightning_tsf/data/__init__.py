"""Video data: decoding, annotation formats, clip sampling, transforms, the DataModule.

Names are imported lazily: a spawned DataLoader worker unpickling a ``VideoDataset`` then imports
only torch, numpy and decord, not pytorch_lightning (seconds per worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "VideoRecord": "annotations",
    "load_class_names": "annotations",
    "load_split": "annotations",
    "VideoDataModule": "datamodule",
    "DistributedEvalSampler": "dataset",
    "VideoBatch": "dataset",
    "VideoDataset": "dataset",
    "VideoSample": "dataset",
    "eval_summary": "dataset",
    "VideoDecodeError": "decode",
    "VideoReader": "decode",
    "make_reader": "decode",
    "dense_indices": "sampling",
    "segment_indices": "sampling",
    "TrainTransform": "transforms",
    "ViewSpec": "views",
    "average_views": "views",
    "read_views": "views",
    "make_synthetic_dataset": "synthetic",
}
__all__ = [
    "DistributedEvalSampler",
    "TrainTransform",
    "VideoBatch",
    "VideoDataModule",
    "VideoDataset",
    "VideoDecodeError",
    "VideoReader",
    "VideoRecord",
    "VideoSample",
    "ViewSpec",
    "average_views",
    "dense_indices",
    "eval_summary",
    "load_class_names",
    "load_split",
    "make_reader",
    "make_synthetic_dataset",
    "read_views",
    "segment_indices",
]

if TYPE_CHECKING:
    from lightning_tsf.data.annotations import VideoRecord, load_class_names, load_split
    from lightning_tsf.data.datamodule import VideoDataModule
    from lightning_tsf.data.dataset import (
        DistributedEvalSampler,
        VideoBatch,
        VideoDataset,
        VideoSample,
        eval_summary,
    )
    from lightning_tsf.data.decode import VideoDecodeError, VideoReader, make_reader
    from lightning_tsf.data.sampling import dense_indices, segment_indices
    from lightning_tsf.data.synthetic import make_synthetic_dataset
    from lightning_tsf.data.transforms import TrainTransform
    from lightning_tsf.data.views import ViewSpec, average_views, read_views


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightning_tsf.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightning_tsf.data' has no attribute {name!r}")
