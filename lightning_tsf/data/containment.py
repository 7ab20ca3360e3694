"""Whether a path stays inside a dataset's root, ``..`` and symlinks followed: annotation files
shared on a cluster must not make a run read, train on or copy files elsewhere. Used by
:func:`~.annotations.check_inside` (which names file and line) for every annotated video and
class folder, and by ``tsf prepare``/``shard``/``check-videos``."""

from __future__ import annotations

import os
from pathlib import Path

OUTSIDE_HINT = (
    "fix the entry, or set data.annotations.allow_outside_root=true (--allow-outside-root for tsf "
    "check-videos/prepare/shard) if files outside the dataset are meant"
)


def outside_root(path: str | Path, root: str | Path, seen: dict[str, str]) -> str | None:
    """Why ``path`` lies outside ``root`` (both resolved; a root reached through a symlink is
    fine), or None when it is inside. ``seen``: folders resolved so far (a split's videos share
    a few folders: one ``lstat`` per video)."""
    real, base = _realpath(os.fspath(path), seen), _real_dir(os.fspath(root), seen)
    if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
        return None
    shown = f"{path} -> {real}" if os.path.abspath(path) != real else real
    return f"{shown} lies outside the dataset root {base}; {OUTSIDE_HINT}"


def _real_dir(folder: str, seen: dict[str, str]) -> str:
    if folder not in seen:
        seen[folder] = os.path.realpath(folder)
    return seen[folder]


def _realpath(path: str, seen: dict[str, str]) -> str:
    """``os.path.realpath(path)``: the folder's resolved once per ``seen``, then the name
    joined to it unless the name is itself a link (or ``.``/``..``)."""
    head, tail = os.path.split(path)
    if tail in ("", ".", "..") or os.path.islink(path):
        return os.path.realpath(path)
    return os.path.join(_real_dir(head or os.curdir, seen), tail)
