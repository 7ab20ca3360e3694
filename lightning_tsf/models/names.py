"""Names the CLI shows in ``--help`` (choices, environment variables), importable without torch:
``tsf X --help`` imports no model code. The registries that use them import them from here."""

from __future__ import annotations

import os
from pathlib import Path

# Attention schemes, in the paper's Table 1 order: the keys of ``timesformer.BLOCKS``.
ATTENTION_TYPES = (
    "space_only",
    "joint_space_time",
    "divided_space_time",
    "sparse_local_global",
    "axial",
)
# Where ``zoo:`` checkpoints are cached, and a mirror to fetch them from.
CACHE_ENV = "LIGHTNING_TSF_CACHE"
MIRROR_ENV = "LIGHTNING_TSF_ZOO_URL"  # http(s):// base URL or folder of a mirror (zoo file names)
# What ``tsf export`` writes (``lightning_tsf.export``).
EXPORT_FORMATS = ("onnx", "torch-export")


def cache_dir() -> Path:
    """Where downloads (and the ``tsf fit --help`` text) go: ``$LIGHTNING_TSF_CACHE`` or
    ``~/.cache/lightning_tsf``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_tsf")
