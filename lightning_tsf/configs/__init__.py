"""Experiment files that ship inside the package (found with ``importlib.resources``)."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

DEMO = "demo_synthetic.yaml"


def config_path(name: str = DEMO) -> Path:
    """Path of a packaged experiment file (installed or in a checkout)."""
    resource = files(__name__) / name
    if not resource.is_file():
        raise FileNotFoundError(f"no packaged experiment file {name!r}")
    # pip installs the package as a folder: ``as_file`` then gives the file itself. (From a
    # zipped package it would give a temporary copy, deleted when the block ends: unsupported.)
    with as_file(resource) as path:
        return Path(path)
