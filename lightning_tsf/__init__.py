"""lightning_tsf: TimeSformer video transformers as a PyTorch Lightning experiment framework.

``from lightning_tsf import Predictor`` runs a trained model on video files
(:mod:`lightning_tsf.predictor`); it is imported on first use, so ``import lightning_tsf``
stays light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor"]

if TYPE_CHECKING:
    from lightning_tsf.predictor import Predictor


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from lightning_tsf.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'lightning_tsf' has no attribute {name!r}")
