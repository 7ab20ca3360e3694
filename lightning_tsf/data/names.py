"""Names the CLI shows in ``--help`` and the prepared format's tag, importable without numpy,
PyAV or decord (``tsf X --help`` imports no decoding code). Their modules import them from
here."""

from __future__ import annotations

BACKENDS = ("auto", "decord", "pyav")  # auto: PyAV on every file, see decode.py
# Container comment of a video written by ``tsf prepare`` (its keyframe interval follows).
PREPARED_TAG = "lightning_tsf prepared keyint="
