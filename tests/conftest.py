"""Shared fixtures: small real videos written with PyAV under ``tmp_path``.

Frames carry their own index (``frame_pattern``) so a test can tell which frame was decoded.
Videos are lossless H.264 4:4:4; the RGB→YUV→RGB round trip changes values by at most
``DECODE_TOLERANCE``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightning_tsf.data.encode import write_video

DECODE_TOLERANCE = 2  # max |decoded - written| per value for lossless 4:4:4 H.264


def frame_pattern(index: int, height: int, width: int) -> np.ndarray:
    """A smooth, unique (H, W, 3) uint8 frame for ``index``: gradients plus an index colour."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x * 200 // max(1, width - 1)) + 20
    frame[..., 1] = (y * 200 // max(1, height - 1)) + 20
    frame[..., 2] = (index * 5) % 256
    return frame


def video_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) frames of :func:`frame_pattern`."""
    return np.stack([frame_pattern(i, height, width) for i in range(num_frames)])


def frame_ids(frames: np.ndarray) -> list[int]:
    """Recover the frame indices (mod 52) from decoded frames' index colour."""
    return [int(round(float(f[..., 2].mean()) / 5)) for f in frames]


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_video(rel_path, num_frames=30, height=48, width=64, fps=30)``."""

    def make(
        rel: str, num_frames: int = 30, height: int = 48, width: int = 64, fps: int = 30
    ) -> Path:
        return write_video(tmp_path / rel, video_frames(num_frames, height, width), fps)

    return make


def write_broken(path: Path, kind: str) -> Path:
    """Create a broken file: missing, zero-byte, truncated, not-a-video or audio-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return path
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 10)
    elif kind == "truncated":
        write_video(path, video_frames(30, 48, 64))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "audio":
        import av

        with av.open(str(path), "w") as c:
            stream = c.add_stream("aac", rate=16000)
            for i in range(8):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
    else:
        raise ValueError(kind)
    return path


BROKEN_KINDS = ("missing", "zero", "truncated", "text", "audio")

# A TimeSformer small enough for CPU tests on 32 px clips of 4 frames, and its class names.
TINY_NET = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=2,
                num_classes=3)  # fmt: skip
TINY_CLASSES = ["walk", "run", "jump"]


def write_tiny_checkpoint(path: Path, with_config: bool = True, seed: int = 0) -> Path:
    """A Lightning-format checkpoint of a seeded :data:`TINY_NET` (``state_dict`` with ``net.``
    prefix, hyper-parameters with the class names and, as LightningCLI stores an injected net,
    optionally its config)."""
    import torch

    from lightning_tsf.models import TimeSformer

    torch.manual_seed(seed)
    net = TimeSformer(**TINY_NET)
    hp: dict = {"class_names": TINY_CLASSES, "lr": 0.1}
    if with_config:
        hp["net"] = {"class_path": "lightning_tsf.models.TimeSformer", "init_args": TINY_NET}
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 0}, path)
    return path


@pytest.fixture
def kinetics_root(tmp_path: Path, make_video) -> Path:
    """Kinetics-style root: 4 good train videos (2 classes), 3 val, 2 test, class names."""
    root = tmp_path
    lines = {"train": [], "val": [], "test": []}
    for split, n in (("train", 4), ("val", 3), ("test", 2)):
        for i in range(n):
            rel = f"videos/{split}/v{i}.mp4"
            make_video(rel, num_frames=20 + 5 * i)
            lines[split].append(f"{rel} {i % 2}\n")
        (root / f"{split}.csv").write_text("".join(lines[split]))
    (root / "classnames.txt").write_text("left\nright\n")
    return root


@pytest.fixture
def ssv2_root(tmp_path: Path, make_video) -> Path:
    """SSv2-style root: labels.json, train.json, validation.json, ``<id>.webm`` videos."""
    labels = {"Pushing something from left to right": "0", "Putting something on a surface": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    templates = ["Pushing [something] from left to right", "Putting [something] on [a surface]"]
    for name, ids in (("train.json", [1, 2, 3]), ("validation.json", [4, 5])):
        entries = [{"id": str(i), "template": templates[i % 2]} for i in ids]
        (tmp_path / name).write_text(json.dumps(entries))
        for i in ids:
            make_video(f"{i}.webm", num_frames=24)
    return tmp_path


# ---------------------------------------------------------------- training tests (train agent)
@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (4 classes, 16/8/7 videos of 16 frames at 32 px) for training
    tests; 7 test videos so that two DDP ranks split a video's views."""
    from lightning_tsf.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_synthetic")
    return make_synthetic_dataset(root, num_train=16, num_val=8, num_test=7, size=32, num_workers=1)


@pytest.fixture(scope="session")
def tiny_shards(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_synthetic` written by ``tsf shard`` (32 px, one chunk per split)."""
    from lightning_tsf.data.shards import write_shards

    out = tmp_path_factory.mktemp("tiny_shards") / "shards"
    write_shards(tiny_synthetic, out, short_side=32, num_workers=1, progress=False)
    return out


@pytest.fixture
def tiny_overrides(tiny_synthetic: Path) -> Callable[[Path], list[str]]:
    """``f(run_dir)``: LightningCLI overrides that shrink any experiment file to a CPU-sized
    model on :func:`tiny_synthetic` with its run folder in ``run_dir``."""
    return lambda run_dir: _tiny_overrides(tiny_synthetic, run_dir)


def _tiny_overrides(root: Path, run_dir: Path) -> list[str]:
    """:func:`run_overrides` plus a CPU-sized network and Kinetics-format data without
    ``zoo:`` weights: for tests of the training machinery, not of the shipped files."""
    net = "--model.net.init_args."
    return [
        *run_overrides(root, run_dir),
        "--data.format=kinetics",
        "--data.annotations.video_dir=",
        "--data.clips.num_frames=4",
        "--data.clips.sampling_rate=4",
        "--data.num_workers=0",
        "--data.loader.pin_memory=false",
        f"{net}patch_size=8",
        f"{net}embed_dim=16",
        f"{net}depth=1",
        f"{net}num_heads=2",
        "--model.pretrained=null",
    ]


def run_overrides(
    root: Path, run_dir: Path, frames: int | None = None, batches: int | None = None
) -> list[str]:
    """THE overrides a shipped experiment file gets in tests, and the only ones
    (tests/test_train_cli.py runs every file with these alone): its data path, its run
    folder and sizes (clip size, ``frames``, batch; one epoch of ``batches`` batches), the
    accelerator pinned to the CPU. Nothing that switches a feature off: the data format, video
    folder, sampler, flip, network, ``zoo:`` weights, logger and callbacks stay as shipped."""
    sizes = [] if frames is None else [f"--data.clips.num_frames={frames}"]
    if batches is not None:
        sizes += ["--trainer.max_epochs=1", f"--trainer.limit_train_batches={batches}",
                  f"--trainer.limit_val_batches={batches}"]  # fmt: skip
    return [
        f"--data.data_root={root}",
        "--data.clips.crop_size=32",
        "--data.clips.train_scale=[32, 36]",
        "--data.batch_size=2",
        *sizes,
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.default_root_dir={run_dir}",
    ]


def tiny_hf_model(num_labels: int):
    """HF transformers' ``TimesformerForVideoClassification`` at the ``timesformer_tiny`` preset,
    eval mode, its temporal parts randomised (at zero they would hide a wrong temporal path)."""
    import torch
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    from lightning_tsf.models import PRESETS

    p = PRESETS["timesformer_tiny"]
    config = TimesformerConfig(
        image_size=p["img_size"], patch_size=p["patch_size"], num_frames=p["num_frames"],
        hidden_size=p["embed_dim"], num_hidden_layers=p["depth"],
        num_attention_heads=p["num_heads"], intermediate_size=4 * p["embed_dim"],
        num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        drop_path_rate=0,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = TimesformerForVideoClassification(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "time_embeddings" in name or "temporal_dense" in name:
                param.normal_(0, 0.3)
    return hf


def data_module(data_root: str | Path, **options: Any):
    """A ``VideoDataModule`` with its options given by name (``num_frames=4``), put in their
    groups by the DataModule's own table (:func:`lightning_tsf.data.options.upgrade`)."""
    from lightning_tsf.data.datamodule import VideoDataModule
    from lightning_tsf.data.options import upgrade

    grouped, _ = upgrade({"data_root": str(data_root), **options})
    return VideoDataModule(**grouped)


# ---------------------------------------------------------------- shipped experiment files
@pytest.fixture(scope="session")
def ssv2_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic motion videos in Something-Something v2's layout, as SSv2 ships it:
    ``labels.json`` (template -> id), ``train.json`` / ``validation.json`` entries whose
    templates carry bracketed placeholders, ``videos/<id>.webm`` (32 px, 16 frames)."""
    from lightning_tsf.data.synthetic import render_video

    root = tmp_path_factory.mktemp("ssv2_synthetic")
    templates = ["Moving [something] from left to right", "Moving [something] from right to left",
                 "Moving [something] down", "Moving [something] up"]  # fmt: skip
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}
    (root / "labels.json").write_text(json.dumps(labels))
    rng = np.random.default_rng(0)
    for name, ids in (("train.json", range(100, 108)), ("validation.json", range(200, 204))):
        entries = []
        for i in ids:
            label = i % 4
            write_video(root / "videos" / f"{i}.webm", render_video(label, rng, 32, 16, 4), 8)
            entries.append({"id": str(i), "label": "something", "template": templates[label],
                            "placeholders": ["something"]})  # fmt: skip
        (root / name).write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="session")
def folder_synthetic(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_synthetic` as a folder dataset, ``<split>/<class>/<video>.mp4`` (copies:
    links out of the dataset root are refused)."""
    root = tmp_path_factory.mktemp("folder_synthetic")
    names = (tiny_synthetic / "classnames.txt").read_text().split()
    for split in ("train", "val", "test"):
        for line in (tiny_synthetic / f"{split}.csv").read_text().splitlines():
            rel, label = line.rsplit(" ", 1)
            copy = root / split / names[int(label)] / Path(rel).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tiny_synthetic / rel, copy)
    return root


def _random_state(model, scale: float = 0.02, seed: int = 0) -> dict:
    """``model``'s state-dict shapes (a model built on the meta device) filled with N(0, scale)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * scale for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def zoo_mirror(tmp_path_factory: pytest.TempPathFactory):
    """A loopback HTTP mirror (``$LIGHTNING_TSF_ZOO_URL``) of the two zoo files the shipped
    experiments start from, at their real sizes: ``vit_base_in21k`` (timm layout, ViT-B/16 at
    224, 1000-class head) and ``timesformer_k400`` (official layout: ``model_state`` with the
    ``model.`` prefix, divided 8x224, 400 classes), random weights. Yields ``(url, cache,
    states)``: the cache folder to use (downloads happen once per session) and the tensors
    of each file by zoo name."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import torch

    from lightning_tsf.models import create_model, zoo

    folder = tmp_path_factory.mktemp("zoo_mirror")
    with torch.device("meta"):
        vit = create_model("timesformer", attention_type="space_only", num_classes=1000)
        k400 = create_model("timesformer", num_frames=8, num_classes=400)
    states = {"vit_base_in21k": _random_state(vit, seed=1),
              "timesformer_k400": _random_state(k400, seed=2)}  # fmt: skip
    torch.save(states["vit_base_in21k"], folder / zoo.ZOO["vit_base_in21k"].file)
    official = {f"model.{k}": v for k, v in states["timesformer_k400"].items()}
    torch.save({"model_state": official, "epoch": 15}, folder / zoo.ZOO["timesformer_k400"].file)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cache = tmp_path_factory.mktemp("zoo_cache")
    yield f"http://127.0.0.1:{httpd.server_address[1]}", cache, states
    httpd.shutdown()
    httpd.server_close()
