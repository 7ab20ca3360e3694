"""``Predictor`` (``from lightning_tsf import Predictor``) and ``tsf timeline`` on real videos
and real checkpoints written here, checked against the model run directly on the views, hand
computed window bounds and frame indices, and an independent PyAV decode."""

from __future__ import annotations

import csv
import doctest
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import (
    TINY_CLASSES,
    TINY_NET,
    tiny_hf_model,
    video_frames,
    write_broken,
    write_tiny_checkpoint,
)
from PIL import Image

import lightning_tsf.predictor as predictor_module
from lightning_tsf.cli import main as tsf
from lightning_tsf.data.clips import clip_views
from lightning_tsf.data.encode import write_video
from lightning_tsf.data.sampling import sliding_windows
from lightning_tsf.data.synthetic import render_video
from lightning_tsf.data.transforms import normalize_video
from lightning_tsf.inference import load_views


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint, a folder of 3 short videos and a broken one, and a 10 s video whose first
    half is ``move_right`` and second half ``move_up`` of the synthetic set (10 fps, 32 px)."""
    root = tmp_path_factory.mktemp("predictor")
    folder = root / "videos"
    for i, n in enumerate((12, 20, 30)):
        write_video(folder / f"v{i}.mp4", video_frames(n, 48, 64), fps=30)
    write_broken(folder / "broken.mp4", "text")
    rng = np.random.default_rng(0)
    halves = [render_video(label, rng, 32, 50, 4) for label in (0, 3)]
    long = write_video(root / "long.mp4", np.concatenate(halves), fps=10)
    short = write_video(root / "short.mp4", video_frames(15, 32, 32), fps=10)
    four = write_video(root / "four.mp4", video_frames(40, 32, 32), fps=10)
    ckpt = write_tiny_checkpoint(root / "m.ckpt")
    return {"root": root, "folder": folder, "long": long, "short": short, "four": four,
            "ckpt": ckpt}  # fmt: skip


@pytest.fixture(scope="module")
def predictor(files):
    from lightning_tsf import Predictor

    return Predictor.from_checkpoint(files["ckpt"], num_spatial_crops=3, progress=False)


def test_predict_equals_the_model_on_the_views_and_batches_across_videos(files, capsys):
    from lightning_tsf import Predictor

    pred = Predictor.from_checkpoint(files["ckpt"], "cpu", num_spatial_crops=3, progress=True)
    assert pred.device == torch.device("cpu") and pred.class_names == TINY_CLASSES
    sizes: list[int] = []
    embed = pred.model.patch_embed  # called once per forward pass, on the batch's clips
    hook = embed.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    try:
        result = pred.predict(files["folder"], top_k=2)
    finally:
        hook.remove()
    # 4 videos of 3 crops in loader batches of 8 // 3 = 2 whole videos (the DataModule's
    # evaluation batches), one pass each over the decodable views: broken.mp4 (sorted first)
    # and v0 (3), then v1 and v2 (6): views of several videos share a pass
    assert sizes == [3, 6]
    assert "videos" in capsys.readouterr().err  # the progress bar, asked for
    assert [Path(p.path).name for p in result] == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert [Path(e.path).name for e in result.errors] == ["broken.mp4"]
    assert result.errors[0].message.startswith("cannot decode ")
    for p in result:  # independent: the model on load_views' views, one video at a time
        views, _ = load_views(p.path, pred.spec, pred.input_config.mean, pred.input_config.std)
        with torch.no_grad():
            probs = pred.model(views).softmax(-1).mean(0)
        top = probs.topk(2)
        assert p.indices == top.indices.tolist()
        assert p.classes == [TINY_CLASSES[i] for i in p.indices]
        np.testing.assert_allclose(p.probs, top.values.numpy(), atol=2e-6, rtol=0)
    rows = result.rows()
    broken = str(files["folder"] / "broken.mp4")
    assert rows[-1]["path"] == broken and rows[-1]["error"].startswith(f"cannot decode {broken}: ")
    saved = result.save(files["root"] / "p.csv")
    table = list(csv.DictReader(saved.open()))
    assert [r["top1"] for r in table[:3]] == [p.classes[0] for p in result]
    assert table[3]["error"].startswith("cannot decode ")


def test_features_equal_the_model_and_frame_tokens(files, predictor):
    feats = predictor.features([files["folder"] / "v1.mp4", files["folder"] / "v2.mp4"], True)
    assert np.asarray(feats).shape == (2, TINY_NET["embed_dim"]) and not feats.errors
    assert feats.frame_tokens.shape == (2, TINY_NET["num_frames"], TINY_NET["embed_dim"])
    for row, path in zip(feats.array, feats.paths):
        views, _ = load_views(path, predictor.spec, predictor.input_config.mean,
                              predictor.input_config.std)
        with torch.no_grad():
            want = predictor.model.forward_features(views).mean(0)
        np.testing.assert_allclose(row, want.numpy(), atol=1e-5, rtol=0)


def test_heatmaps_with_and_without_files(files, predictor, tmp_path):
    kept = predictor.heatmaps(files["folder"] / "v0.mp4")
    assert kept[0].png is None and kept[0].maps.shape == (4, 4, 4)
    height, width, _ = kept[0].image.shape  # frames and heatmaps upscaled to >= 112 px, titled
    assert height >= 2 * 112 and width >= 4 * 112
    result = predictor.heatmaps(files["folder"], tmp_path / "h")
    assert [Path(h.png).name for h in result] == ["0000_v0.png", "0001_v1.png", "0002_v2.png"]
    assert Image.open(result[0].png).size == (width, height)
    assert len(result.errors) == 1
    maps = torch.load(tmp_path / "h" / "maps.pt", weights_only=True)
    torch.testing.assert_close(maps[result[0].path], kept[0].maps)


def test_sliding_windows_by_hand() -> None:
    # 10 s at 10 fps, 2 s windows every 1 s: starts 0..8 (a window 9-11 s would pass the end).
    windows = sliding_windows(100, 10.0, 2.0, 1.0, 4)
    assert [(w[0], w[1]) for w in windows] == [(float(s), float(s + 2)) for s in range(9)]
    # window k covers frames 10k..10k+19; segments of 19/4 = 4.75 frames: bounds 0, 5, 10
    # (9.5 rounds to even), 14, 19 -> middles 2, 7, 12, 16.
    for k, (_, _, idx) in enumerate(windows):
        assert idx.tolist() == [10 * k + 2, 10 * k + 7, 10 * k + 12, 10 * k + 16]
    # a stride that does not divide: 3 s windows every 2.5 s over 10 s -> 0, 2.5, 5 (7.5 ends
    # at 10.5 s, past the end: dropped)
    assert [w[:2] for w in sliding_windows(100, 10.0, 3.0, 2.5, 4)] == [
        (0.0, 3.0), (2.5, 5.5), (5.0, 8.0)]  # fmt: skip
    # shorter than one window: one window over the whole 1.5 s, segments of 14/4 = 3.5 frames
    (only,) = sliding_windows(15, 10.0, 2.0, 1.0, 4)
    assert only[:2] == (0.0, 1.5) and only[2].tolist() == [2, 5, 8, 12]
    with pytest.raises(ValueError, match="positive"):
        sliding_windows(100, 10.0, 0.0, 1.0, 4)


def test_timeline_windows_scores_and_files(files, tmp_path):
    from lightning_tsf import Predictor

    pred = Predictor.from_checkpoint(files["ckpt"], backend="pyav", num_spatial_crops=3,
                                     batch_size=4, progress=False)  # fmt: skip
    timeline = pred.timeline(files["long"], window_s=2.0, stride_s=1.0, top_k=3)
    assert timeline.fps == 10 and timeline.num_frames == 100 and timeline.duration_s == 10
    assert [w.start_s for w in timeline.windows] == list(range(9)) and timeline.note == ""
    assert timeline.windows[3].frames == [32, 37, 42, 46]
    # independent: PyAV decodes every frame, the windows' frames are cut, cropped and run
    with av.open(str(files["long"])) as c:
        every = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    for w in timeline.windows:
        clips = clip_views(every[w.frames], pred.spec).transpose(1, 2)
        with torch.no_grad():
            config = pred.input_config
            probs = pred.model(normalize_video(clips, config.mean, config.std))
        top = probs.softmax(-1).mean(0).topk(3)
        assert w.indices == top.indices.tolist()
        np.testing.assert_allclose(w.probs, top.values.numpy(), atol=2e-6, rtol=0)
    csv_path, json_path, png = timeline.save(tmp_path, "long")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["window", "start_s", "end_s", "top1", "prob1", "top2", "prob2",
                             "top3", "prob3"]  # fmt: skip
    assert [(float(r["start_s"]), float(r["end_s"])) for r in rows] == [
        (s, s + 2.0) for s in range(9)]  # fmt: skip
    assert [r["top1"] for r in rows] == [w.classes[0] for w in timeline.windows]
    data = json.loads(json_path.read_text())
    assert data["duration_s"] == 10 and data["window_s"] == 2 and data["stride_s"] == 1
    assert data["windows"][8]["frames"] == [82, 87, 92, 96]
    # plot_timeline draws a 10 x 2.6 inch figure (viz/timeline.py) at viz.plots.new_figure's
    # 100 dpi: 1000 x 260 px; and it is drawn on, not blank
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (round(2.6 * 100), 10 * 100, 3) and image.std() > 10
    short = pred.timeline(files["short"], window_s=2.0)
    assert len(short.windows) == 1 and (short.windows[0].start_s, short.windows[0].end_s) == (
        0.0, 1.5) and "one window" in short.note  # fmt: skip


def test_timeline_command(files, tmp_path, capsys):
    ckpt, out = str(files["ckpt"]), tmp_path / "t"
    videos = [str(files["long"]), str(files["short"]), str(files["folder"] / "broken.mp4")]
    rc = tsf(["timeline", *videos, "--checkpoint", ckpt, "--window", "2", "--stride", "1",
              "--out-dir", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1  # the broken video failed, the others were written
    assert captured.err.strip().startswith("cannot decode ") and "broken.mp4" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        f"{i:04d}_{stem}{s}"
        for i, stem in ((0, "long"), (1, "short"))
        for s in (".csv", ".json", ".png")
    ]
    assert "1 window(s) (video (1.5 s) not longer than the window" in captured.out
    assert len(list(csv.DictReader((out / "0000_long.csv").open()))) == 9
    for bad, name in ((["--window", "0"], "--window"), (["--stride", "-1"], "--stride")):
        assert tsf(["timeline", str(files["long"]), "--checkpoint", ckpt, "--out-dir", str(out),
                    *bad]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tsf timeline: error: " + name)
    missing = str(tmp_path / "nope.ckpt")
    assert (
        tsf(["timeline", str(files["long"]), "--checkpoint", missing, "--out-dir", str(out)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.ckpt" in err[0]


def test_docstring_examples(files, tmp_path):
    """The module's ``>>>`` examples, on the files written here."""
    globs = {"CHECKPOINT": files["ckpt"], "VIDEO": files["folder"] / "v0.mp4", "Path": Path,
             "FOLDER": files["folder"], "LONG_VIDEO": files["four"],
             "OUT_DIR": tmp_path}  # fmt: skip
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(predictor_module, globs=globs):
        runner.run(test)
    attempted = runner.summarize(verbose=False)
    assert attempted.attempted >= 10 and attempted.failed == 0


def test_import_is_light_and_exports_predictor() -> None:
    code = ("import sys, lightning_tsf; light = 'torch' not in sys.modules; "
            "from lightning_tsf import Predictor; print(light, Predictor.__module__)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)  # fmt: skip
    assert out.stdout.split() == ["True", "lightning_tsf.predictor"]


def test_official_and_hf_checkpoints_agree_with_transformers(files, tmp_path):
    """``from_checkpoint`` on an HF state dict and on an official ``.pyth`` of the same weights
    (``preset=`` gives the shape): per-video probabilities equal HF transformers' own model
    (an independent implementation) run on the same views, softmax averaged over the views."""
    from lightning_tsf import Predictor
    from lightning_tsf.models import PRESETS, TimeSformer
    from lightning_tsf.models.checkpoint import load_checkpoint

    hf = tiny_hf_model(num_labels=4)
    hf_file = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), hf_file)
    ours = TimeSformer(**PRESETS["timesformer_tiny"], num_classes=4)
    load_checkpoint(ours, hf_file)
    pyth = tmp_path / "TimeSformer_tiny.pyth"
    torch.save({"model_state": {f"model.{k}": v for k, v in ours.state_dict().items()}}, pyth)
    videos = [files["folder"] / "v0.mp4", files["folder"] / "v2.mp4"]
    for path in (hf_file, pyth):
        pred = Predictor.from_checkpoint(path, "cpu", preset="timesformer_tiny",
                                         num_spatial_crops=3, progress=False)  # fmt: skip
        result = pred.predict(videos, top_k=4)
        assert not result.errors
        for p_video, video in zip(result, videos):
            config = pred.input_config  # views (3, C, T, H, W), normalised
            views, _ = load_views(str(video), pred.spec, config.mean, config.std)
            with torch.no_grad():
                probs = hf(pixel_values=views.transpose(1, 2)).logits.softmax(-1).mean(0)
            got = dict(zip(p_video.indices, p_video.probs))
            np.testing.assert_allclose([got[i] for i in range(4)], probs.numpy(), atol=1e-5)
