"""Training-data throughput per core: raw, plain and prepared H.264, decord and PyAV.

One process, interleaved rounds (round-robin, so drift hits every method alike), medians:

1. K400 training clips (8 frames x rate 32 over 10 s at 30 fps, scale jitter 256-320, crop
   224, flip) through ``VideoDataset`` on one core, for three encodings of the same content:
   (a) a raw-like 640x360 H.264 source (x264 defaults), (b) plain 340x256 x264 with default
   settings (how Kinetics is often shipped), (c) the prepared format that ``tsf prepare``
   writes from (a) at short side 256 (456x256) — each with decord and with PyAV.
2. The evaluation path, 3 spatial crops of one clip: one decode for the three crops (what the
   dataset does) against one decode per crop.
3. The training DataLoader on prepared files with 1 and 2 workers (clips/s in total).

Goal (issue "data at GPU speed"): prepared >= 5x plain x264 in clips/s per core, storage of the
prepared files <= 3x plain x264. Run: ``python benchmarks/bench_data.py [--rounds N]``.

Shards (``tsf shard``) against the same prepared files: ``benchmarks/bench_shards.py``
(training clips/s per core, time to the first batch over a 100k-video index, data-file opens
per epoch, shards from a loopback S3 server); raw chunk reads, local against loopback S3:
``benchmarks/bench_storage.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.clips import ViewSpec, read_views, spatial_view, temporal_view
from lightning_tsf.data.dataset import VideoDataset
from lightning_tsf.data.encode import VideoWriter
from lightning_tsf.data.loader import loader_throughput
from lightning_tsf.data.prepare import Encoding, reencode_video
from lightning_tsf.data.transforms import TrainTransform

K400 = ViewSpec(sampler="dense", num_frames=8, sampling_rate=32, crop_size=224)


def content_frames(seconds: int = 10, fps: int = 30, w: int = 640, h: int = 360, seed: int = 0):
    """Camera-like frames: a panning, zooming smooth-noise texture, moving discs, sensor noise
    (so P-frames cost what they cost on real footage)."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((3 * h // 16 + 2, 3 * w // 16 + 2, 3)).astype(np.float32)
    tex = torch.nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None],
                                          size=(3 * h, 3 * w), mode="bicubic")[0]  # fmt: skip
    tex = (128 + 45 * tex / tex.std()).clamp(0, 255).permute(1, 2, 0).numpy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    discs = [(rng.uniform(0, 255, 3), rng.uniform(15, 45), rng.uniform([0, 0], [w, h]),
              rng.uniform(-6, 6, 2)) for _ in range(6)]  # fmt: skip
    for t in range(seconds * fps):
        zoom = 1.0 + 0.25 * (0.5 - 0.5 * np.cos(t / 60.0))
        sx = ((xx - w / 2) / zoom + w * 1.5 + 3.0 * t % w).astype(np.int32) % tex.shape[1]
        sy = ((yy - h / 2) / zoom + h * 1.5 + 90 * np.sin(t / 25.0)).astype(np.int32) % tex.shape[0]
        img = tex[sy, sx]
        for colour, r, p0, v in discs:
            p = np.abs(np.mod(p0 + v * t, 2 * np.array([w, h])) - np.array([w, h]))
            img[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 < r**2] = colour
        img = img + rng.normal(0, 3.0, img.shape)
        yield np.clip(img, 0, 255).astype(np.uint8)


def write(path: Path, frames, w: int, h: int, fps: int = 30) -> Path:
    """x264 with default settings (crf 23, keyframes every 250, B-frames)."""
    with VideoWriter(path, w, h, fps, options={"crf": "23"}) as writer:
        for frame in frames:
            if frame.shape[:2] != (h, w):
                t = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
                t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear")
                frame = t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
            writer.write(frame)
    return path


def make_sources(root: Path) -> dict[str, Path]:
    raw = write(root / "raw_640x360.mp4", content_frames(), 640, 360)
    plain = write(root / "plain_340x256.mp4", content_frames(), 340, 256)
    prepared = root / "prepared_456x256.mp4"
    reencode_video(str(raw), str(prepared), 256, Encoding())
    return {"raw 640x360": raw, "plain 340x256": plain, "prepared 456x256": prepared}


def train_dataset(path: Path, backend: str, copies: int = 1) -> VideoDataset:
    spec = ViewSpec(**{**K400.__dict__, "backend": backend})
    records = [VideoRecord(str(path), 0)] * copies
    return VideoDataset(records, spec, train=True, transform=TrainTransform(224, (256, 320)))


def interleave(methods: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict:
    """Median seconds per call of each method, calls interleaved round-robin."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(-1, rounds):  # one warm-up round
        for name, fn in methods.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                if r >= 0:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=3, help="clips per method and round")
    parser.add_argument("--loader-seconds", type=float, default=15.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(Path(tmp))
        sizes = {name: path.stat().st_size for name, path in sources.items()}
        torch.manual_seed(0)  # the datasets draw their clip positions from torch
        methods = {}
        for name, path in sources.items():
            for backend in ("decord", "pyav"):
                ds = train_dataset(path, backend)
                methods[(name, backend)] = lambda ds=ds: ds[0]
        per_clip = interleave(methods, args.rounds, args.per_round)

        prepared = sources["prepared 456x256"]
        eval_spec = ViewSpec(**{**K400.__dict__, "num_spatial_crops": 3})
        eval_methods = {
            "3 crops, one decode": lambda: read_views(str(prepared), eval_spec),
            "3 crops, a decode each": lambda: [
                spatial_view(temporal_view(str(prepared), eval_spec, 0), eval_spec, s)
                for s in range(3)
            ],
        }
        per_eval = interleave(eval_methods, args.rounds, args.per_round)

        loader_rates = {}
        for workers in (1, 2):
            ds = train_dataset(prepared, "pyav", copies=256)
            loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers,
                                                 shuffle=True, prefetch_factor=4)  # fmt: skip
            loader_rates[workers] = loader_throughput(loader, args.loader_seconds, progress=False)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_name()}, {cores} cores, torch {torch.__version__}; one process, "
          f"torch threads 1; {args.rounds} rounds x {args.per_round} clips, medians\n")  # fmt: skip
    base = per_clip[("plain 340x256", "decord")]
    plain_size = sizes["plain 340x256"]
    print("| file | size | vs plain | reader | ms / clip | clips / s / core | vs plain (decord) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for (name, backend), sec in per_clip.items():
        size = sizes[name]
        print(f"| {name} | {size / 2**20:.2f} MB | {size / plain_size:.2f}x | {backend} | "
              f"{1000 * sec:.1f} | {1 / sec:.1f} | {base / sec:.2f}x |")  # fmt: skip
    print("\n| evaluation, prepared file (K400 test view) | ms / 3 views |")
    print("|---|---:|")
    for name, sec in per_eval.items():
        print(f"| {name} | {1000 * sec:.1f} |")
    print("\n| training DataLoader, prepared file, PyAV | clips / s | per worker |")
    print("|---|---:|---:|")
    for workers, rate in loader_rates.items():
        print(f"| {workers} worker{'s' if workers > 1 else ''} | {rate.clips_per_second:.1f} | "
              f"{rate.per_worker:.1f} |")  # fmt: skip
    best = min(per_clip[("prepared 456x256", b)] for b in ("decord", "pyav"))
    print(f"\ngoal: prepared >= 5x plain per core: {base / best:.2f}x (best reader); "
          f"decord {base / per_clip[('prepared 456x256', 'decord')]:.2f}x; storage <= 3x plain: "
          f"{sizes['prepared 456x256'] / plain_size:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
