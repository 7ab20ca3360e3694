"""Throughput of the training data path for 8×224 clips, on one core.

For each source, interleaved in one run (round-robin, so drift hits every method alike):

- ``decord decode``: opening the file and ``get_batch`` on the sampled indices only;
- ``PyAV decode (official)``: the official TimeSformer way, seek to the keyframe before the
  clip and decode the sampled span sequentially;
- ``pipeline (decord)`` / ``pipeline (PyAV)``: ``VideoDataset.__getitem__`` (sampling, decode,
  scale jitter, crop, flip, normalisation) plus its share of collating a batch of 8.

Sources: a Kinetics-like 10 s, 30 fps, 340×256 H.264 video (8 frames at sampling rate 32) and a
synthetic 16-frame 64×64 clip (8 frames at rate 2). Run: ``python benchmarks/bench_data.py``.
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
from torch.utils.data import default_collate

from lightning_tsf.data.annotations import VideoRecord
from lightning_tsf.data.dataset import VideoDataset
from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.encode import write_video
from lightning_tsf.data.sampling import dense_indices
from lightning_tsf.data.synthetic import make_synthetic_dataset
from lightning_tsf.data.transforms import TrainTransform


def kinetics_like_video(path: Path, seconds: int = 10, fps: int = 30) -> Path:
    """340×256 H.264 (x264 defaults, yuv420p) with moving textured content."""
    rng = np.random.default_rng(0)
    h, w = 256, 340
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, h // 8, w // 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(h, 2 * w), mode="bicubic")
    fine = rng.normal(0, 6, (h, 2 * w, 3))  # film-grain-like detail, static in the scene
    texture = np.clip(smooth[0].permute(1, 2, 0).numpy() + fine, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]

    def frames():
        for t in range(seconds * fps):
            frame = texture[:, (3 * t) % w : (3 * t) % w + w].copy()
            cy, cx = 128 + 80 * np.sin(t / 15), 170 + 120 * np.cos(t / 20)
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 < 900] = (250, 40, 40)
            yield frame

    return write_video(path, frames(), fps, lossless=False)


def measure(methods: dict[str, Callable[[int], object]], rounds: int) -> dict[str, list[float]]:
    """Time each method once per round, interleaved; return seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(-2, rounds):  # two warm-up rounds
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(r)
            if r >= 0:
                times[name].append(time.perf_counter() - start)
    return times


def source_methods(
    path: str, num_frames: int, rate: int, batch: int = 8
) -> dict[str, Callable[[int], object]]:
    """The four measured methods for one source video."""
    length = len(make_reader(path))

    def indices(r: int) -> np.ndarray:
        return dense_indices(length, num_frames, rate, train=True, rng=np.random.default_rng(r + 2))

    def dataset(backend: str) -> VideoDataset:
        transform = TrainTransform(224, (256, 320), horizontal_flip=True)
        kwargs = dict(sampler="dense", num_frames=num_frames, sampling_rate=rate)
        return VideoDataset(
            [VideoRecord(path, 0)], train=True, transform=transform, backend=backend, **kwargs
        )

    def pipeline(ds: VideoDataset) -> Callable[[int], object]:
        def run(r: int) -> object:
            samples = [ds[0] for _ in range(batch)]
            return default_collate(samples)

        return run

    return {
        "decord decode": lambda r: make_reader(path, "decord").get_frames(indices(r)),
        "PyAV decode (official)": lambda r: make_reader(path, "pyav").get_frames(indices(r)),
        "pipeline (decord)": pipeline(dataset("decord")),
        "pipeline (PyAV)": pipeline(dataset("pyav")),
    }


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    batch = 8
    with tempfile.TemporaryDirectory() as tmp:
        kinetics = str(kinetics_like_video(Path(tmp) / "kinetics.mp4"))
        synthetic_root = make_synthetic_dataset(
            Path(tmp) / "syn", num_train=1, num_val=0, num_test=0, num_workers=0
        )
        synthetic = str(synthetic_root / "videos/train/00000.mp4")
        sources = {
            "Kinetics-like 10 s 340×256, 8×32": source_methods(kinetics, 8, 32, batch),
            "synthetic 16×64×64, 8×2": source_methods(synthetic, 8, 2, batch),
        }
        rows = []
        for source, methods in sources.items():
            times = measure(methods, args.rounds)
            per_clip = {
                name: statistics.median(t) / (batch if name.startswith("pipeline") else 1)
                for name, t in times.items()
            }
            bases = {
                "PyAV decode (official)": "decord decode",
                "pipeline (decord)": "decord decode",
                "pipeline (PyAV)": "PyAV decode (official)",
            }
            for name, sec in per_clip.items():
                base = bases.get(name)
                extra = f"{100 * (sec / per_clip[base] - 1):+.0f}% vs {base}" if base else ""
                rows.append((source, name, 1000 * sec, 1 / sec, extra))
    print(f"machine: {platform.processor() or platform.machine()}, 1 core, torch threads 1")
    print("| source | method | ms / clip | clips / s / core | difference |")
    print("|---|---|---:|---:|---:|")
    for source, name, ms, cps, extra in rows:
        print(f"| {source} | {name} | {ms:.1f} | {cps:.1f} | {extra} |")


if __name__ == "__main__":
    main()
