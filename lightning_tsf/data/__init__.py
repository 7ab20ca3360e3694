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
    "VideoDataset": "dataset",
    "ClipItems": "items",
    "VideoBatch": "items",
    "VideoItem": "items",
    "VideoSample": "items",
    "collate_views": "items",
    "eval_summary": "items",
    "view_of": "items",
    "ClipOptions": "options",
    "FileSource": "sources",
    "ShardSource": "sources",
    "pick_source": "sources",
    "VideoDecodeError": "decode",
    "VideoReader": "decode",
    "make_reader": "decode",
    "dense_indices": "sampling",
    "segment_indices": "sampling",
    "TrainTransform": "transforms",
    "ClipSpec": "clips",
    "ViewSpec": "clips",
    "read_views": "clips",
    "average_views": "scores",
    "make_synthetic_dataset": "synthetic",
}
__all__ = [
    "ClipItems",
    "ClipOptions",
    "ClipSpec",
    "FileSource",
    "ShardSource",
    "VideoItem",
    "collate_views",
    "pick_source",
    "view_of",
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
    from lightning_tsf.data.clips import ClipSpec, ViewSpec, read_views
    from lightning_tsf.data.datamodule import VideoDataModule
    from lightning_tsf.data.dataset import DistributedEvalSampler, VideoDataset
    from lightning_tsf.data.decode import VideoDecodeError, VideoReader, make_reader
    from lightning_tsf.data.items import (
        ClipItems,
        VideoBatch,
        VideoItem,
        VideoSample,
        collate_views,
        eval_summary,
        view_of,
    )
    from lightning_tsf.data.options import ClipOptions
    from lightning_tsf.data.sampling import dense_indices, segment_indices
    from lightning_tsf.data.scores import average_views
    from lightning_tsf.data.sources import FileSource, ShardSource, pick_source
    from lightning_tsf.data.synthetic import make_synthetic_dataset
    from lightning_tsf.data.transforms import TrainTransform


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightning_tsf.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightning_tsf.data' has no attribute {name!r}")
