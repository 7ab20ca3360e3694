"""Inference through a DataLoader: the same numbers with and without worker processes, outputs
in input order with failed videos in their place, a killed ``predict-files --out X.jsonl`` run
resumed to exactly the uninterrupted result, and timeline windows read in one pass equal to
reading each window on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import video_frames, write_broken, write_tiny_checkpoint

from lightning_tsf.cli import main as tsf
from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.encode import write_video
from lightning_tsf.data.prepare import reencode_video
from lightning_tsf.data.sampling import sliding_windows
from lightning_tsf.data.windows import window_clips


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint and a folder of 7 short videos with a broken one in the middle."""
    root = tmp_path_factory.mktemp("loader")
    folder = root / "videos"
    for i in range(7):
        write_video(folder / f"v{i}.mp4", video_frames(10 + 3 * i, 40, 48), fps=25)
    write_broken(folder / "v3b.mp4", "text")  # sorts between v3 and v4
    return {"root": root, "folder": folder, "ckpt": write_tiny_checkpoint(root / "m.ckpt")}


def test_workers_give_the_same_numbers_in_input_order(files) -> None:
    from lightning_tsf import Predictor

    def run(workers: int) -> list:
        pred = Predictor.from_checkpoint(files["ckpt"], "cpu", num_spatial_crops=3, batch_size=4,
                                         progress=False, num_workers=workers)  # fmt: skip
        return list(pred.iter_predict(files["folder"], top_k=3))

    serial, parallel = run(0), run(2)
    names = [Path(x.path).name for x in serial]
    assert names == sorted(names) and names[4] == "v3b.mp4"  # the failure in its place
    assert [Path(x.path).name for x in parallel] == names
    assert parallel[4].message.startswith(f"cannot decode {parallel[4].path}: ")
    for a, b in zip(serial, parallel):
        if hasattr(a, "probs"):
            assert a.indices == b.indices
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-6, rtol=0)
    pred = Predictor.from_checkpoint(files["ckpt"], "cpu", progress=False, num_workers=2)
    feats = [pred.features(files["folder"]).array for pred.num_workers in (0, 2)]
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="num_workers"):
        Predictor(pred.model, pred.input_config, num_workers=-1)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_run_resumes_to_every_video_once(files, tmp_path) -> None:
    folder = tmp_path / "many"
    for i in range(24):
        write_video(folder / f"m{i:02d}.mp4", video_frames(12, 32, 32), fps=25)
    write_broken(folder / "m10x.mp4", "text")
    common = [str(folder), "--checkpoint", str(files["ckpt"]), "--device", "cpu",
              "--batch-size", "1", "--num-workers", "0", "--no-progress"]  # fmt: skip
    whole = tmp_path / "whole.jsonl"
    assert tsf(["predict-files", *common, "--out", str(whole)]) == 1  # one broken video
    want = _lines(whole)
    assert len(want) == 25 and want[11]["error"].startswith("cannot decode ")

    out = tmp_path / "preds.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "lightning_tsf.cli", "predict-files", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and len(out.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    kept = len(out.read_text().splitlines())
    assert 3 <= kept < 25, "the run was not killed mid-way"
    with out.open("a") as f:
        f.write('{"path": "cut short by the kil')  # a line the kill may leave half written
    assert tsf(["predict-files", *common, "--out", str(out), "--resume"]) == 1
    got = _lines(out)
    assert [r["path"] for r in got] == [r["path"] for r in want]  # each once, in input order
    for a, b in zip(got, want):
        assert a.get("indices") == b.get("indices") and a.get("error") == b.get("error")
        np.testing.assert_allclose(a.get("probs", []), b.get("probs", []), atol=1e-6, rtol=0)
    assert tsf(["predict-files", *common, "--out", str(tmp_path / "p.json"), "--resume"]) == 2


@pytest.mark.parametrize("kind", ["plain", "prepared"])
def test_window_clips_read_once_equal_per_window_reads(tmp_path, kind) -> None:
    frames = video_frames(150, 48, 64)
    src = write_video(tmp_path / "long.mp4", frames, fps=25, lossless=False)
    path = str(src)
    if kind == "prepared":
        path = str(tmp_path / "prepared.mp4")
        reencode_video(str(src), path, 48)
    reader = make_reader(path)
    windows = sliding_windows(len(reader), reader.fps, 1.0, 0.25, 8)
    seen: list[int] = []
    original = reader.iter_frames

    def counted(indices, chunk=64):
        for index, frame in original(indices, chunk):
            seen.append(index)
            yield index, frame

    reader.iter_frames = counted
    got = list(window_clips(reader, windows))
    assert [w for w, _ in got] == windows
    assert seen == sorted(set(seen))  # every frame once, front to back
    for window, clip in got:
        fresh = make_reader(path)
        np.testing.assert_array_equal(clip, fresh.get_frames(window[2]))
        fresh.close()
    reader.close()
