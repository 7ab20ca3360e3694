"""Earlier home of clip cutting, timeline windows and view-score aggregation, kept so that old
imports work: the code lives in :mod:`.clips` (clip cutting, :class:`ViewSpec`),
:mod:`.windows` (timeline windows) and :mod:`.scores` (per-video averages)."""

from __future__ import annotations

from lightning_tsf.data.clips import (
    ClipSpec,
    ViewSpec,
    clip_frame_indices,
    clip_views,
    decode_clip,
    open_source,
    read_views,
    resize_clip,
    spatial_view,
    temporal_view,
)
from lightning_tsf.data.scores import VideoScores, ViewAccumulator, average_views
from lightning_tsf.data.windows import window_clips

__all__ = [
    "ClipSpec",
    "VideoScores",
    "ViewAccumulator",
    "ViewSpec",
    "average_views",
    "clip_frame_indices",
    "clip_views",
    "decode_clip",
    "open_source",
    "read_views",
    "resize_clip",
    "spatial_view",
    "temporal_view",
    "window_clips",
]
