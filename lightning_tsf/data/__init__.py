"""Video data: decoding, annotation formats, clip sampling, transforms, the DataModule.

Heavy modules (decord, PyAV) are imported only when a video is opened.
"""

from lightning_tsf.data.annotations import VideoRecord, load_class_names, load_split
from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.dataset import (
    DistributedEvalSampler,
    VideoBatch,
    VideoDataset,
    eval_summary,
)
from lightning_tsf.data.decode import VideoDecodeError, VideoReader, make_reader
from lightning_tsf.data.sampling import dense_indices, segment_indices
from lightning_tsf.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "DistributedEvalSampler",
    "EvalTransform",
    "TrainTransform",
    "VideoBatch",
    "VideoDataModule",
    "VideoDataset",
    "VideoDecodeError",
    "VideoReader",
    "VideoRecord",
    "dense_indices",
    "eval_summary",
    "load_class_names",
    "load_split",
    "make_reader",
    "segment_indices",
]
