"""Options shared by every command that loads a checkpoint outside LightningCLI (the file
commands, ``tsf timeline``, ``tsf export``): where the model comes from, and the evaluation
views, which default to what the checkpoint's input record says."""

from __future__ import annotations

import argparse
from typing import Any

from lightning_tsf.data.names import BACKENDS
from lightning_tsf.models.names import ATTENTION_TYPES
from lightning_tsf.models.presets import PRESETS

AS_SAVED = "default: as the checkpoint says"


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--model-config``, ``--attention-type``, ``--num-frames``,
    ``--img-size``: the model's shape where the checkpoint does not carry it (an official or
    HF file, whose tensors tell sizes, frames and scheme when unambiguous), or over it."""
    group = parser.add_argument_group("model source (a Lightning checkpoint carries all of it)")
    group.add_argument("--preset", help=f"model sizes: {', '.join(PRESETS)}")
    group.add_argument("--model-config", help="YAML of TimeSformer arguments (instead)")
    group.add_argument("--attention-type", choices=ATTENTION_TYPES,
                       help="scheme (default: the checkpoint's, or its keys')")  # fmt: skip
    group.add_argument("--num-frames", type=int, help="frames per clip (model's time_embed)")
    group.add_argument("--img-size", type=int, help="frame side in pixels (model's pos_embed)")


def model_source(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`add_model_source` options as keyword arguments of ``load_model``-based
    loaders (``Predictor.from_checkpoint``, ``export_checkpoint``)."""
    return {k: getattr(args, k) for k in ("preset", "model_config", "attention_type",
                                          "num_frames", "img_size")}  # fmt: skip


def add_view_options(parser: argparse.ArgumentParser) -> None:
    """Evaluation views over the checkpoint's input record, and the video reader."""
    group = parser.add_argument_group(f"views ({AS_SAVED})")
    group.add_argument("--num-spatial-crops", type=int, choices=(1, 3),
                       help=f"crops per clip ({AS_SAVED}; 1 crop takes the record's 1-crop "
                       "short side)")  # fmt: skip
    group.add_argument("--num-temporal-views", type=int, help=f"clips per video ({AS_SAVED})")
    group.add_argument("--test-short-side", type=int,
                       help=f"short side before cropping ({AS_SAVED})")  # fmt: skip
    group.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="video reader (default: %(default)s)")  # fmt: skip
