"""CPU inference latency of an exported ONNX file (onnxruntime) against torch eager.

For each model (random weights, divided space-time, batch 1): export with ``tsf export``'s
library function, check the two agree, then time one forward each, alternating (so drift hits
both alike) after warm-up calls; medians and their ratio, one markdown row per model. Both use
the same number of threads (``--threads``; on a machine shared with other jobs, 1 thread gives
steadier numbers: two threads on two busy cores wait on each other at every parallel region).
Run: ``python benchmarks/bench_export.py [--rounds N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_tsf.export import example_input, export_model, onnx_max_difference
from lightning_tsf.models import create_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import cpu_name  # noqa: E402  (the CPU's model name, as lscpu prints it)

MODELS = {"small": "timesformer_small", "base": "timesformer"}  # ViT-S-like 8x112, ViT-B 8x224


def median_ms(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median wall time (ms) of each function, calls interleaved round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(preset: str, rounds: int, threads: int, folder: Path) -> tuple[float, float, float]:
    """(torch ms, onnxruntime ms, max |difference|) for one preset at batch 1."""
    import onnxruntime as ort

    model = create_model(preset, num_classes=400, drop_path_rate=0.0).eval()
    path = export_model(model, folder / f"{preset}.onnx")
    diff = onnx_max_difference(path, model, batch_sizes=(1,))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = example_input(model, 1)
    feed = {"video": x.numpy()}

    def eager() -> object:
        with torch.inference_mode():
            return model(x)

    ms = median_ms({"torch": eager, "onnx": lambda: session.run(None, feed)}, rounds)
    return ms["torch"], ms["onnx"], diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=10, help="timed calls of each, per model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"CPU: {cpu_name()}, {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}; batch 1, median of {args.rounds} calls each\n")  # fmt: skip
    print("| model | clip | torch eager (ms) | onnxruntime (ms) | torch / onnxruntime | "
          "max abs diff |\n|---|---|---|---|---|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            preset = MODELS[name]
            eager, onnx, diff = bench(preset, args.rounds, args.threads, Path(tmp))
            model = create_model(preset)
            clip = f"{model.num_frames}x{model.img_size}"
            print(f"| {preset} (divided) | {clip} | {eager:.1f} | {onnx:.1f} | "
                  f"{eager / onnx:.2f}x | {diff:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
