"""Inference at the loader's speed: ``Predictor.predict`` with 0, 1 and 2 decoding workers on
prepared files, and ``timeline`` on a 10-minute video before (a window at a time, each window
read on its own: the reference below) and after (one pass, each frame decoded once).

Everything is generated here (no data needed): ``--videos`` clips of 2 s at 320x240 re-encoded
by ``tsf prepare``'s encoder (short side 240, keyframe every 5), and a 10-minute 64x48 video at
25 fps written with libx264 (default GOP, B-frames) plus its prepared copy. A tiny random
TimeSformer (8 frames, 32 px, 3 crops) keeps the forward small, so the numbers are about
decoding. Runs are interleaved round by round (drift on a shared machine hits all alike);
medians and ratios are printed as markdown rows, with the machine's load average.

Worker start-up is timed apart: each predict run reports the seconds to its first video
(process start-up, the first batch) and the rate over the rest (steady state), beside the
whole run; the default run is long enough that start-up is a small part of it (printed).
``--command N``: also the whole ``tsf predict-files`` command (a fresh interpreter: imports,
checkpoint, start-up, decoding) on N of the clips with 0, 1, 2 workers and the default, and
where its time goes (imports, model, start-up, decoding), so the whole command's speed-up can
be read against the decoding's (Amdahl: the serial part does not shrink).
Run: ``python benchmarks/bench_predict.py [--rounds N] [--videos N] [--minutes M]
[--command 48] [--no-timeline]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lightning_tsf.data.clips import clip_views
from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.encode import VideoWriter, write_video
from lightning_tsf.data.prepare import reencode_video
from lightning_tsf.data.sampling import sliding_windows
from lightning_tsf.models import TimeSformer
from lightning_tsf.predictor import Predictor, _softmax
from lightning_tsf.timeline import score_windows

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import cpu_name  # noqa: E402  (the CPU's model name, as lscpu prints it)

NET = dict(img_size=32, patch_size=8, num_frames=8, embed_dim=32, depth=1, num_heads=2,
           num_classes=4)  # fmt: skip


def write_checkpoint(path: Path) -> Path:
    """A Lightning-format checkpoint of a seeded tiny TimeSformer (official K400 record)."""
    torch.manual_seed(0)
    net = TimeSformer(**NET)
    hp = {"net": {"class_path": "lightning_tsf.models.TimeSformer", "init_args": NET}}
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 0}, path)
    return path


def moving_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise texture scrolling one pixel a frame (so frames differ and motion is coded)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (height, width + count, 3), dtype=np.uint8)
    return np.stack([texture[:, i : i + width] for i in range(count)])


def write_long(path: Path, minutes: float, height: int = 48, width: int = 64) -> Path:
    """A long libx264 video (default GOP and B-frames), written frame by frame."""
    texture = np.random.default_rng(1).integers(0, 255, (height, 2 * width, 3), dtype=np.uint8)
    count = int(minutes * 60 * 25)
    fast = {"preset": "ultrafast"}
    with VideoWriter(path, width, height, 25, pix_fmt="yuv420p", options=fast) as w:
        for i in range(count):
            shift = i % width
            w.write(np.ascontiguousarray(texture[:, shift : shift + width]))
    return path


def timeline_reference(pred: Predictor, path: str, window_s: float, stride_s: float) -> int:
    """Today's timeline before this change: each window's frames read on their own
    (``get_frames`` per window: a seek to the keyframe before it, decoding from there)."""
    spec = pred.spec
    reader = make_reader(path, spec.backend, spec.decode_short_side)
    try:
        spans = sliding_windows(len(reader), reader.fps, window_s, stride_s, spec.num_frames)
        clips = ((w, clip_views(reader.get_frames(w[2]), spec)) for w in spans)
        probs = partial(pred._forward, _softmax(pred.model))
        per_pass = max(1, pred.batch_size // spec.num_spatial_crops)
        return len(list(score_windows(clips, lambda v: probs(v.transpose(1, 2)), per_pass)))
    finally:
        reader.close()


def medians(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function, calls interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"  round {r + 1}: {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    return {name: statistics.median(t) for name, t in times.items()}


def timed_predict(pred: Predictor, folder: Path) -> tuple[float, float, int]:
    """(seconds to the first video, seconds for the rest, videos) of one predict run."""
    start = time.perf_counter()
    first, count = 0.0, 0
    for _ in pred.iter_predict(folder):
        count += 1
        if count == 1:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start - first, count


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


TSF = "import sys; from lightning_tsf.cli import main; sys.exit(main(sys.argv[1:]))"
PHASES = """
import sys, time
t0 = time.perf_counter()
from lightning_tsf.predictor import Predictor
t1 = time.perf_counter()
pred = Predictor.from_checkpoint(sys.argv[1], "cpu", progress=False, num_workers=int(sys.argv[3]))
t2 = time.perf_counter()
first = None
for _ in pred.iter_predict(sys.argv[2]):
    first = first or time.perf_counter()
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, first - t2, t3 - first)
"""


def command_section(ckpt: Path, folder: Path, count: int, rounds: int) -> None:
    """The whole ``tsf predict-files`` command on ``count`` clips, and where its time goes."""
    sub = folder.parent / f"command{count}"
    sub.mkdir(exist_ok=True)
    for clip in sorted(folder.iterdir())[:count]:
        (sub / clip.name).symlink_to(clip)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def command(workers: str) -> Callable[[], object]:
        argv = ["predict-files", str(sub), "--checkpoint", str(ckpt), "--no-progress",
                *(["--num-workers", workers] if workers != "default" else [])]  # fmt: skip
        return lambda: subprocess.run([sys.executable, "-c", TSF, *argv], env=env, check=True,
                                      capture_output=True)  # fmt: skip

    before = load()
    got = medians({f"{w} workers": command(w) for w in ("0", "1", "2", "default")}, rounds)
    phases = {w: [] for w in (0, 2)}
    for _ in range(rounds):
        for w in phases:
            out = subprocess.run([sys.executable, "-c", PHASES, str(ckpt), str(sub), str(w)],
                                 env=env, check=True, capture_output=True, text=True)  # fmt: skip
            phases[w].append([float(x) for x in out.stdout.split()])
    print(f"\ntsf predict-files, the whole command on {count} clips (load {before} -> {load()})")
    print("| workers | s (median) | vs serial |\n|---|---|---|")
    for name, sec in got.items():
        print(f"| {name.split()[0]} | {sec:.2f} | {got['0 workers'] / sec:.2f}x |")
    print("\nwhere the time goes (medians, s): imports | model | to the first video | the rest")
    print("| workers | imports | model | first video | rest |\n|---|---|---|---|---|")
    for w, rows in phases.items():
        cols = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"| {w} | " + " | ".join(f"{c:.2f}" for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=192, help="2 s clips for predict")
    parser.add_argument("--minutes", type=float, default=10.0, help="timeline video length")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--command", type=int, default=0, metavar="N",
                        help="also time the whole tsf predict-files command on N clips")
    parser.add_argument("--no-timeline", action="store_true", help="skip the timeline part")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the forward is tiny; workers get the cores
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = write_checkpoint(root / "m.ckpt")
        start = time.perf_counter()
        folder = root / "prepared"
        folder.mkdir()
        for i in range(args.videos):
            src = write_video(root / f"src{i}.mp4", moving_frames(50, 240, 320, i), fps=25,
                              lossless=False)  # fmt: skip
            reencode_video(str(src), str(folder / f"v{i:03d}.mp4"), 240)
        if not args.no_timeline:
            long = write_long(root / "long.mp4", args.minutes)
            long_prepared = root / "long_prepared.mp4"
            reencode_video(str(long), str(long_prepared), 48)
        print(f"generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        def predictor(workers: int) -> Predictor:
            return Predictor.from_checkpoint(ckpt, "cpu", progress=False, num_workers=workers,
                                             batch_size=16)  # fmt: skip

        preds = {w: predictor(w) for w in (0, 1, 2)}
        before = load()
        runs: dict[int, list[tuple[float, float, int]]] = {w: [] for w in preds}
        for r in range(args.rounds):
            for w, p in preds.items():
                runs[w].append(timed_predict(p, folder))
                print(f"  round {r + 1}: {w} workers: {sum(runs[w][-1][:2]):.2f} s",
                      file=sys.stderr)  # fmt: skip
        print(f"\nmachine: {cpu_name()}, {len(os.sched_getaffinity(0))} usable cores (shared "
              f"with other jobs; load average {before} -> {load()})")  # fmt: skip
        print(f"\npredict, {args.videos} prepared 320x240 clips of 2 s, 3 views each")
        print("| workers | whole s | vs serial | start-up s (share) | steady videos/s | "
              "vs serial |\n|---|---|---|---|---|---|")  # fmt: skip
        med = {w: [statistics.median(x[i] for x in rows) for i in range(2)]
               for w, rows in runs.items()}  # fmt: skip
        whole = {w: statistics.median(x[0] + x[1] for x in rows) for w, rows in runs.items()}
        steady = {w: (args.videos - 1) / m[1] for w, m in med.items()}
        for w in preds:
            print(f"| {w} | {whole[w]:.2f} | {whole[0] / whole[w]:.2f}x | {med[w][0]:.2f} "
                  f"({100 * med[w][0] / whole[w]:.0f}%) | {steady[w]:.1f} | "
                  f"{steady[w] / steady[0]:.2f}x |")  # fmt: skip
        if args.command:
            command_section(ckpt, folder, args.command, args.rounds)
        if args.no_timeline:
            return

        pred = preds[0]
        stride = args.window / 4
        fns: dict[str, Callable[[], object]] = {}
        for kind, path in (("plain", long), ("prepared", long_prepared)):
            fns[f"{kind} before"] = lambda p=str(path): timeline_reference(pred, p, args.window,
                                                                          stride)  # fmt: skip
            fns[f"{kind} after"] = lambda p=str(path): pred.timeline(p, args.window, stride)
        windows = len(pred.timeline(str(long_prepared), args.window, stride).windows)
        assert timeline_reference(pred, str(long_prepared), args.window, stride) == windows
        got = medians(fns, args.rounds)
        print(f"\ntimeline, {args.minutes:g}-minute 64x48 video at 25 fps, window "
              f"{args.window:g} s, stride {stride:g} s ({windows} windows)")  # fmt: skip
        print("| file | before (s) | after (s) | speed-up |\n|---|---|---|---|")
        for kind in ("plain", "prepared"):
            before, after = got[f"{kind} before"], got[f"{kind} after"]
            print(f"| {kind} | {before:.2f} | {after:.2f} | {before / after:.1f}x |")


if __name__ == "__main__":
    main()
