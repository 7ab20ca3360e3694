"""The prepared format (``tsf prepare``): frames come back at the sampled indices, for 25, 30
and 60 fps sources, with both readers; the keyframe interval is what the tag says."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from lightning_tsf.cli import main as tsf
from lightning_tsf.data.decode import keyframe_interval, make_reader
from lightning_tsf.data.encode import write_video
from lightning_tsf.data.prepare import Encoding

BITS, BLOCK = 10, 16  # frame index as a 10-bit barcode of 16-px black/white blocks


def barcode_frames(num_frames: int, height: int = 96, width: int = 160) -> np.ndarray:
    """(T, H, W, 3) frames: a grey gradient with the frame index as a barcode in the top row."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 3 + y) % 200 + 20, (y * 2) % 200 + 20, np.full_like(x, 90)], -1)
    frames = np.repeat(base[None].astype(np.uint8), num_frames, 0)
    for i in range(num_frames):
        for bit in range(BITS):
            frames[i, :BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0
    return frames


def read_barcode(frame: np.ndarray, width: int) -> int:
    """Index written by :func:`barcode_frames`, read at the block centres of a scaled frame."""
    scale = frame.shape[1] / width
    row = int(BLOCK * scale / 2)
    centres = [int((bit + 0.5) * BLOCK * scale) for bit in range(BITS)]
    return sum(1 << bit for bit, x in enumerate(centres) if frame[row, x].mean() > 128)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, int]]:
    """4-second sources at 25, 30 and 60 fps (ordinary x264: long GOP, B-frames), prepared at
    short side 64. Returns fps -> (prepared path, frame count)."""
    root = tmp_path_factory.mktemp("prepared")
    out: dict[int, tuple[Path, int]] = {}
    for fps in (25, 30, 60):
        n = 4 * fps
        write_video(root / "src" / f"v{fps}.mp4", barcode_frames(n), fps, lossless=False,
                    options={"crf": "18", "preset": "veryfast"})  # fmt: skip
        out[fps] = (root / "dst" / f"v{fps}.mp4", n)
    assert tsf(["prepare", str(root / "src"), str(root / "dst"), "--short-side", "64",
                "--workers", "2", "--no-progress"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("fps", [25, 30, 60])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_prepared_frames_are_the_sampled_ones(prepared, fps: int, backend: str) -> None:
    path, n = prepared[fps]
    rng = np.random.default_rng(fps)
    index_sets = [
        np.linspace(0, n - 1, 8).astype(int),  # a clip over the whole video
        np.sort(rng.choice(n, 8, replace=False)),  # random, gaps above and below the interval
        np.array([0, 1, 2, 9, 17, n - 2, n - 1]),  # neighbours, ends
        np.array([5, 5, 40, 3]),  # repeats and any order
    ]
    reader = make_reader(str(path), backend)
    assert len(reader) == n
    for indices in index_sets:
        frames = reader.get_frames(indices)
        assert frames.shape == (len(indices), 64, 106, 3)  # 160x96 -> even short side 64
        assert [read_barcode(f, 160) for f in frames] == indices.tolist(), (backend, indices)


def test_prepared_format_keyframes(prepared) -> None:
    """Each prepared file says its keyframe interval in its tag, and it holds: no B-frames
    (decode order is presentation order) and a keyframe at least that often (packets)."""
    keyint = Encoding().keyint
    for path, n in prepared.values():
        with av.open(str(path)) as container:
            assert keyframe_interval(container.metadata) == keyint
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
        pts = [p.pts for p in packets]
        assert pts == sorted(pts) and len(pts) == n
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        assert keys[0] == 0 and max(np.diff(keys + [n])) <= keyint


def test_plain_files_have_no_tag(tmp_path: Path) -> None:
    path = write_video(tmp_path / "plain.mp4", barcode_frames(10), 30, lossless=False)
    with av.open(str(path)) as container:
        assert keyframe_interval(container.metadata) is None
    reader = make_reader(str(path), "pyav")
    assert [read_barcode(f, 160) for f in reader.get_frames([0, 7, 3])] == [0, 7, 3]
