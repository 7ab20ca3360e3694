"""Pictures of TimeSformer models: attention rollout heatmaps, t-SNE and confusion plots, and the
dashboard callbacks that log them during training.

Names are imported lazily (matplotlib, scikit-learn and wandb load only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "attention_rollout": "rollout",
    "rollout_from_maps": "rollout",
    "render_heatmaps": "heatmap",
    "save_heatmap_grid": "heatmap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightning_tsf.viz.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightning_tsf.viz' has no attribute {name!r}")
