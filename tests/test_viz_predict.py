"""``tsf predict-videos`` / ``heatmap`` / ``extract-features`` on real videos written here with
PyAV in several containers, codecs, sizes and frame rates, plus a broken file."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, TINY_NET, write_tiny_checkpoint
from PIL import Image

from lightning_tsf.cli import main as tsf

NET, CLASSES = TINY_NET, TINY_CLASSES

# (name, codec, pix_fmt, width, height, fps, frames)
VIDEOS = [
    ("a_h264.mp4", "libx264", "yuv444p", 131, 97, 24, 20),  # odd size
    ("b_vp9.webm", "libvpx-vp9", "yuv420p", 96, 64, 30, 16),
    ("c_mpeg4.avi", "mpeg4", "yuv420p", 320, 240, 15, 12),
    ("d_mjpeg.avi", "mjpeg", "yuvj420p", 64, 120, 10, 9),  # portrait
    ("e_vp8.webm", "libvpx", "yuv420p", 640, 360, 60, 40),  # "large", high frame rate
]


def write_with(path: Path, codec: str, pix_fmt: str, w: int, h: int, fps: int, n: int) -> Path:
    """A moving-square video written with PyAV in the given codec/container."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for i in range(n):
            img = np.full((h, w, 3), 40, np.uint8)
            y, x = (i * 7) % max(1, h - 16), (i * 11) % max(1, w - 16)
            img[y : y + 16, x : x + 16] = (230, 200, 30)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name, *spec in VIDEOS:
        write_with(root / name, *spec)
    (root / "z_broken.mp4").write_text("not a video\n")
    return root


def test_predict_videos_all_containers(videos, tmp_path, capsys):
    ckpt = write_tiny_checkpoint(tmp_path / "m.ckpt", with_config=True)
    out, heat = tmp_path / "preds.json", tmp_path / "heat"
    rc = tsf(["predict-files", str(videos), "--checkpoint", str(ckpt), "--out", str(out),
              "--num-spatial-crops", "3", "--num-temporal-views", "2", "--topk", "2",
              "--save-heatmap", str(heat)])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1  # one video failed, the others ran
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("cannot decode ")
    assert "z_broken.mp4" in errors[0]
    rows = json.loads(out.read_text())
    good = [r for r in rows if "error" not in r]
    assert sorted(Path(r["path"]).name for r in good) == sorted(v[0] for v in VIDEOS)
    for r in good:
        assert len(r["classes"]) == 2 and set(r["classes"]) <= set(CLASSES)
        assert r["probs"][0] >= r["probs"][1] > 0 and sum(r["probs"]) <= 1 + 1e-6
        assert f"{r['path']}: {r['classes'][0]} (" in captured.out
        width, height = Image.open(r["heatmap"]).size  # T frames wide, frames + overlay rows
        assert width >= 4 * 112 and height >= 2 * 112  # 32 px frames drawn at 112 px or more
    assert [Path(r["path"]).name for r in rows if "error" in r] == ["z_broken.mp4"]


def test_predict_csv_annotation_file_and_preset(videos, tmp_path, capsys):
    """A checkpoint without a stored config needs --model-config; CSV output with labels."""
    ckpt = write_tiny_checkpoint(tmp_path / "m.ckpt", with_config=False)
    assert tsf(["predict-files", str(videos / "a_h264.mp4"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsf predict-files: error: ") and "--preset NAME or --model-config" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    cfg = tmp_path / "net.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in NET.items()))
    ann = videos / "list.csv"
    ann.write_text("a_h264.mp4 0\nc_mpeg4.avi 2\n")
    names = tmp_path / "names.txt"
    names.write_text("A\nB\nC\n")
    out = tmp_path / "preds.csv"
    rc = tsf(["predict-files", str(ann), "--checkpoint", str(ckpt), "--model-config", str(cfg),
              "--class-names", str(names), "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == ["0", "2"]
    assert all(r["top1"] in "ABC" and 0 < float(r["prob1"]) <= 1 for r in rows)
    assert list(rows[0])[-2:] == ["top3", "prob3"]  # --topk 5 capped at the 3 classes


def test_extract_features_shapes(videos, tmp_path, capsys):
    ckpt = write_tiny_checkpoint(tmp_path / "m.ckpt", with_config=True)
    out = tmp_path / "feats"
    rc = tsf(["features-files", str(videos), "--checkpoint", str(ckpt), "--out-dir", str(out),
              "--frame-tokens", "--num-spatial-crops", "3"])  # fmt: skip
    assert rc == 1 and "z_broken.mp4" in capsys.readouterr().err
    feats = np.load(out / "features.npy")
    tokens = torch.load(out / "frame_tokens.pt", weights_only=True)
    index = list(csv.DictReader((out / "index.csv").open()))
    assert feats.shape == (len(VIDEOS), NET["embed_dim"]) and feats.dtype == np.float32
    assert tokens.shape == (len(VIDEOS), NET["num_frames"], NET["embed_dim"])
    assert [int(r["row"]) for r in index] == list(range(len(VIDEOS)))
    assert np.isfinite(feats).all() and np.abs(feats).sum(1).min() > 0


def test_heatmap_command(videos, tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "m.ckpt", with_config=True)
    out = tmp_path / "h"
    rc = tsf(["heatmap-files", str(videos / "b_vp9.webm"), str(videos / "d_mjpeg.avi"),
              "--checkpoint", str(ckpt), "--out-dir", str(out)])  # fmt: skip
    assert rc == 0
    assert len(list(out.glob("*.png"))) == 2
    maps = torch.load(out / "maps.pt", weights_only=True)
    assert all(m.shape == (4, 4, 4) for m in maps.values())
