"""A synthetic video dataset whose classes are defined by motion and the direction of time only.

Every video shows one bright disc orbiting a point on a dark, lightly noised background. Over
its ``num_frames`` frames the disc visits the ``num_frames`` equally spaced positions of its
circle exactly once each, in the order ``position(t) = phase + step · t (mod num_frames)``.
The class is the step:

====================  ====  =============================================
class                 step  meaning
====================  ====  =============================================
``orbit_cw_slow``     +1    clockwise (on screen), 1/num_frames turn/frame
``orbit_ccw_slow``    -1    its exact time reversal
``orbit_cw_fast``     +3    clockwise, 3/num_frames turn per frame
``orbit_ccw_fast``    -3    its exact time reversal
(``num_classes=6``)   ±5    and so on with odd steps coprime to num_frames
====================  ====  =============================================

Centre, radius, phase, disc size, disc colour, background and noise are drawn from the same
distribution for every class. Because every step is coprime to ``num_frames``, every class
visits the *same* set of positions: the unordered set of frames of a video has the same
distribution whatever its class, and the two classes of a pair differ only in the direction of
time. **A model blind to frame order is therefore capped at chance, 1/K (25% for the default
K=4)**, not merely at 50%, while a model that uses frame order can reach 100%.

The ceiling holds for clips that keep the structure: all frames (``num_frames=16,
sampling_rate=1``), every other frame (``num_frames=8, sampling_rate=2`` — positions
``step·2j`` cover the same even residues for every odd step), or segment sampling at test. Short
clips of consecutive frames (e.g. 4 of 16) would let an order-blind model see the arc length.

Defaults: 4 classes, 512/128/128 train/val/test videos of 16 frames at 64×64, lossless H.264
(4:4:4, qp 0), written in a few seconds on 2 cores. Recommended data settings: ``crop_size=64,
train_scale=(64, 72), num_frames=8, sampling_rate=2`` (or 16 × 1), ``num_spatial_crops=1``.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np

from lightning_tsf.data.check import parallel_map
from lightning_tsf.data.encode import write_video

SPLITS = ("train", "val", "test")
_STEP_NAMES = {1: "slow", 3: "fast", 5: "faster", 7: "fastest"}


def class_steps(num_classes: int, num_frames: int) -> list[int]:
    """Steps (positions advanced per frame) of the classes: +1, -1, +3, -3, ..."""
    if num_classes < 2 or num_classes % 2 or num_classes > 8:
        raise ValueError("num_classes must be 2, 4, 6 or 8 (time-reversed pairs)")
    steps = []
    for k in (1, 3, 5, 7)[: num_classes // 2]:
        if np.gcd(k, num_frames) != 1 or 2 * k >= num_frames:
            raise ValueError(f"step {k} must be coprime to and < half of num_frames={num_frames}")
        steps += [k, -k]
    return steps


def class_names(num_classes: int = 4) -> list[str]:
    """Names of the classes in label order."""
    return [
        f"orbit_{'cw' if s > 0 else 'ccw'}_{_STEP_NAMES[abs(s)]}"
        for s in class_steps(num_classes, 64)
    ]


def render_video(
    label: int, rng: np.random.Generator, size: int, num_frames: int, num_classes: int
) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 of one video of class ``label``."""
    step = class_steps(num_classes, num_frames)[label]
    disc = rng.uniform(0.08, 0.13) * size
    radius = rng.uniform(0.22, 0.30) * size
    margin = radius + disc + 1
    cy, cx = rng.uniform(margin, size - margin, size=2)
    phase = rng.integers(num_frames)
    colour = rng.uniform(170, 255, size=3)
    background = rng.uniform(0, 50, size=3)
    angles = 2 * np.pi * ((phase + step * np.arange(num_frames)) % num_frames) / num_frames
    # Screen y points down, so increasing angle with y = cy + r sin is clockwise on screen.
    py, px = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist2 = (yy[None] - py[:, None, None]) ** 2 + (xx[None] - px[:, None, None]) ** 2
    alpha = np.clip(disc + 0.5 - np.sqrt(dist2), 0, 1)[..., None]  # anti-aliased edge
    frames = background + alpha * (colour - background)
    frames += rng.normal(0, 4, size=(size, size, 1))  # static texture: no cue to time
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def _write_one(
    item: tuple[str, int, int, str], size: int, num_frames: int, fps: int, seed: int, k: int
) -> None:
    split, index, label, path = item
    if os.path.exists(path):
        return
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    write_video(path, render_video(label, rng, size, num_frames, k), fps)


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_train: int = 512,
    num_val: int = 128,
    num_test: int = 128,
    size: int = 64,
    num_frames: int = 16,
    fps: int = 8,
    seed: int = 0,
    num_classes: int = 4,
    num_workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write ``root/{train,val,test}.csv``, ``classnames.txt`` and ``root/videos/...``.

    Labels are balanced and assigned by a seeded permutation; each video's content depends only
    on ``(seed, split, index)``. Idempotent: a complete dataset with the same parameters is left
    as is, and an interrupted run resumes (finished files are kept). Returns ``root``.
    """
    root = Path(root)
    params = dict(
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        size=size,
        num_frames=num_frames,
        fps=fps,
        seed=seed,
        num_classes=num_classes,
    )
    marker = root / "synthetic.json"
    if marker.exists():
        if json.loads(marker.read_text()) == params:
            return root
        shutil.rmtree(root / "videos", ignore_errors=True)  # other parameters: regenerate
        marker.unlink()
    steps = class_steps(num_classes, num_frames)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for s, (split, count) in enumerate(zip(SPLITS, (num_train, num_val, num_test))):
        labels = np.random.default_rng([seed, s, 2**31]).permutation(np.arange(count) % len(steps))
        lines = []
        for i, label in enumerate(labels):
            rel = f"videos/{split}/{i:05d}.mp4"
            items.append((split, i, int(label), str(root / rel)))
            lines.append(f"{rel} {label}\n")
        (root / f"{split}.csv").write_text("".join(lines))
    (root / "classnames.txt").write_text("".join(f"{n}\n" for n in class_names(num_classes)))
    func = partial(_write_one, size=size, num_frames=num_frames, fps=fps, seed=seed, k=num_classes)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    for _ in parallel_map(func, items, workers, "synthetic", progress):
        pass
    marker.write_text(json.dumps(params))
    return root
