"""One-command GPU benchmark: our TimeSformer eager and compiled against HF's, bf16 training.

    python benchmarks/bench_gpu.py --out runs/bench_gpu     # on a GPU: at most ~5 minutes
    python benchmarks/bench_gpu.py --tiny                    # CPU, tiny shapes (what CI runs)
    python benchmarks/bench_gpu.py --tokens --budget-s 80    # token switches vs off (gpu_tokens)

For each configuration (divided and joint at 8×224 with batch 8 and 32, HR 16×448 and
L 96×224 at one batch size, divided with drop path 0.1): random clips, SGD training steps
under bf16 autocast (fp32 on CPU), timed after warm-up with the device synchronised,
medians. Implementations: ours eager, compiled whole (``compile_timesformer``, what
``compile: true`` does) and compiled per block (``compile_blocks``); HF
``TimesformerForVideoClassification`` eager and ``torch.compile``d (when ``transformers`` is
installed). Reported: clips/s, step ms, TFLOP/s (training FLOPs counted with
``FlopCounterMode`` on the meta device / step time), that as a fraction of a same-run bf16
(CPU: fp32) 8192² (CPU: 1024²) matmul, and peak device memory (CPU: not measured). Once, the
Lightning Trainer path (``VideoClassifier`` + ``Trainer.fit``) for divided 8×224 batch 8.
Writes ``results.json`` and ``table.md`` under ``--out``.
A configuration that fails (out of memory, a compiler error) is reported as such, not fatal;
its traceback goes to ``errors.txt``; so is a compile that fell back (a warning). On a GPU the
rows follow ``GPU_PLAN``, the goal rows first, and ``--budget-s`` skips the rest; the files are
rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_tsf.train.compile import compile_blocks, compile_timesformer

sys.path.insert(0, str(Path(__file__).parent))
import gpu_tokens  # noqa: E402  (--tokens)
from bench_model import build  # noqa: E402  (our model and HF's from one config)

GPU_CONFIGS = {
    "divided 8x224 b8": dict(attn="divided_space_time", frames=8, size=224, batch=8),
    "divided 8x224 b32": dict(attn="divided_space_time", frames=8, size=224, batch=32),
    "joint 8x224 b8": dict(attn="joint_space_time", frames=8, size=224, batch=8),
    "joint 8x224 b32": dict(attn="joint_space_time", frames=8, size=224, batch=32),
    "HR divided 16x448 b2": dict(attn="divided_space_time", frames=16, size=448, batch=2),
    "L divided 96x224 b1": dict(attn="divided_space_time", frames=96, size=224, batch=1),
    "divided 8x224 b8 dp0.1": dict(
        attn="divided_space_time", frames=8, size=224, batch=8, drop_path=0.1
    ),
}
# The GPU plan, most telling rows first: a --budget-s cut skips the tail, never the goals.
GPU_PLAN = [
    ("divided 8x224 b8", "ours eager"), ("divided 8x224 b8", "ours compiled"),
    ("divided 8x224 b8", "hf eager"), ("divided 8x224 b8", "hf compiled"),
    ("divided 8x224 b32", "ours compiled"), ("divided 8x224 b32", "hf compiled"),
    ("divided 8x224 b8 dp0.1", "ours compiled"), ("divided 8x224 b8", "ours compiled blocks"),
    ("divided 8x224 b32", "ours eager"), ("joint 8x224 b8", "ours eager"),
    ("joint 8x224 b8", "hf eager"), ("HR divided 16x448 b2", "ours eager"),
    ("HR divided 16x448 b2", "hf eager"), ("L divided 96x224 b1", "ours eager"),
    ("L divided 96x224 b1", "hf eager"), ("joint 8x224 b8", "ours compiled"),
    ("HR divided 16x448 b2", "ours compiled"), ("L divided 96x224 b1", "ours compiled"),
    ("divided 8x224 b32", "hf eager"), ("joint 8x224 b32", "ours eager"),
    ("joint 8x224 b32", "ours compiled"), ("joint 8x224 b32", "hf eager"),
]  # fmt: skip
TINY_CONFIGS = {
    "divided 4x32 b2": dict(attn="divided_space_time", frames=4, size=32, batch=2),
    "joint 4x32 b2": dict(attn="joint_space_time", frames=4, size=32, batch=2),
}
IMPLS = ("ours eager", "ours compiled", "ours compiled blocks", "hf eager", "hf compiled")
VIT_B = dict(dim=768, depth=12, heads=12)
TINY = dict(dim=64, depth=2, heads=4)


def has_hf() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n×n matmul in ``dtype``: the same run's reference rate."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, device, 3, 10)


def train_flops(cfg: dict, sizes: dict) -> int:
    """Training-step FLOPs (forward + backward) of our model, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build({**cfg, **sizes}, "ours", device="meta")
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["size"], cfg["size"], device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops()


def step(model: torch.nn.Module, impl: str, cfg: dict, device: torch.device,
         dtype: torch.dtype | None) -> Callable[[], None]:  # fmt: skip
    """One SGD training step on random clips (HF takes (B, T, C, H, W))."""
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["size"], cfg["size"], device=device)
    if impl.startswith("hf"):
        x = x.transpose(1, 2).contiguous()
    y = torch.randint(0, 400, (cfg["batch"],), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    call = (lambda v: model(pixel_values=v).logits) if impl.startswith("hf") else model

    def run() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(call(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def make(impl: str, cfg: dict, sizes: dict, device: torch.device) -> torch.nn.Module:
    model = build({**cfg, **sizes}, "hf" if impl.startswith("hf") else "ours").to(device).train()
    if impl == "ours compiled":
        compile_timesformer(model)
    elif impl == "ours compiled blocks":
        compile_blocks(model)
    elif impl == "hf compiled":
        model = torch.compile(model)
    return model


def lightning_clips_per_s(cfg: dict, sizes: dict, device: torch.device, steps: int) -> float:
    """Clips/s of ``Trainer.fit`` with ``VideoClassifier`` (uint8 batches normalised on the
    device, bf16-mixed on GPU) over ``steps`` timed steps after warm-up."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, Dataset

    from lightning_tsf.train.module import VideoClassifier

    # One random clip served for every index: the loader costs nothing, the step is timed.
    video = torch.randint(0, 256, (3, cfg["frames"], cfg["size"], cfg["size"]), dtype=torch.uint8)

    class Clips(Dataset):
        def __len__(self) -> int:
            return cfg["batch"] * (steps + 3)

        def __getitem__(self, i: int) -> dict:
            return {"video": video, "label": i % 400}

    class Timer(pl.Callback):  # steps 3 .. 3 + steps - 1, not the end of fit
        def __init__(self) -> None:
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == 3:
                sync(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if batch_idx == 2 + steps:
                sync(device)
                self.end = time.perf_counter()

    timer = Timer()
    module = VideoClassifier(build({**cfg, **sizes}, "ours"), scheduler="cosine")
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true", max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, DataLoader(Clips(), batch_size=cfg["batch"], num_workers=0))
    return cfg["batch"] * steps / (timer.end - timer.start)


def write(out: Path, result: dict) -> None:
    """``results.json`` and ``table.md``; called after every row, so a cut run keeps its rows."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    lines = [f"{result['device']}, torch {result['torch']}, {result['precision']}; "
             f"same-run matmul {result['matmul_tflops']:.2f} TFLOP/s", "",
             "| config | implementation | clips/s | step ms | TFLOP/s | of matmul | peak GiB |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['impl']} | {r['error']} |  |  |  |  |")
            continue
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "-"
        lines.append(f"| {r['config']} | {r['impl']} | {r['clips_per_s']:.1f} | "
                     f"{r['step_ms']:.1f} | {r['tflops']:.3f} | {r['of_matmul']:.2f} | "
                     f"{peak} |")  # fmt: skip
    if "lightning" in result:
        lit = result["lightning"]
        lines.append(f"\nLightning Trainer ({lit['config']}, ours eager): "
                     + (f"{lit['clips_per_s']:.1f} clips/s" if "clips_per_s" in lit
                        else lit["error"]))  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")


def run_row(
    name: str, cfg: dict, impl: str, sizes: dict, flops: int, reference: float,
    device: torch.device, dtype: torch.dtype | None, args: argparse.Namespace,
) -> dict:  # fmt: skip
    """Time one (configuration, implementation); failures become the row's ``error``."""
    import torch._dynamo.utils as dynamo_utils

    row: dict = {"config": name, "impl": impl}
    torch._dynamo.reset()  # each row compiles from scratch (the on-disk caches may help)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    try:
        torch.manual_seed(0)
        model = make(impl, cfg, sizes, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with warnings.catch_warnings():  # a compile fallback is this row's error, not a pass
            warnings.filterwarnings("error", message="torch.compile of")
            run = step(model, impl, cfg, device, dtype)
            sec = median_time(run, device, args.warmup, args.steps)
        rate = flops / sec
        row.update(step_ms=1000 * sec, clips_per_s=cfg["batch"] / sec, tflops=rate / 1e12,
                   of_matmul=rate / reference)  # fmt: skip
        if "compiled" in impl:
            row["graphs"] = dynamo_utils.counters["stats"]["unique_graphs"] - graphs
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except Exception as err:  # out of memory, compiler errors: a row, not the end
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        if args.out:
            import traceback

            with open(Path(args.out) / "errors.txt", "a") as f:
                f.write(f"== {name} / {impl}\n{traceback.format_exc()[-6000:]}\n")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU, CI)")
    parser.add_argument("--configs", nargs="*", help="subset of the configurations")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    parser.add_argument("--budget-s", type=float, default=270,
                        help="skip the rest of the plan after this many seconds")  # fmt: skip
    parser.add_argument("--out", default="runs/bench_gpu")
    parser.add_argument("--tokens", action="store_true",
                        help="instead: the token switches vs off (gpu_tokens.py)")  # fmt: skip
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tokens:
        return gpu_tokens.main(args, device, began)
    tiny = args.tiny or device.type == "cpu"
    configs, sizes = (TINY_CONFIGS, TINY) if tiny else (GPU_CONFIGS, VIT_B)
    plan = [(c, i) for c in configs for i in IMPLS] if tiny else GPU_PLAN
    plan = [(c, i) for c, i in plan if (not args.configs or c in args.configs)
            and (has_hf() or not i.startswith("hf"))
            and not (args.no_compile and "compiled" in i)]  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else None
    reference = matmul_rate(device, dtype or torch.float32, 1024 if tiny else 8192)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__, "precision": "bf16 autocast" if dtype else "fp32",
        "matmul_tflops": reference / 1e12, "rows": [],
    }  # fmt: skip
    flops: dict[str, int] = {}
    first = plan[0][0] if plan else next(iter(configs))
    for name, impl in plan:
        if time.perf_counter() - began > args.budget_s:
            row = {"config": name, "impl": impl, "error": "skipped: time budget"}
        else:
            if name not in flops:
                flops[name] = train_flops(configs[name], sizes)
            row = run_row(name, configs[name], impl, sizes, flops[name], reference, device,
                          dtype, args)  # fmt: skip
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if impl == "hf compiled" or len(result["rows"]) == len(plan):
            if "lightning" not in result:  # once, early: after the first config's rows
                try:
                    clips = lightning_clips_per_s(configs[first], sizes, device, args.steps)
                    result["lightning"] = {"config": first, "clips_per_s": clips}
                except Exception as err:
                    result["lightning"] = {
                        "config": first,
                        "error": f"{type(err).__name__}: {err}"[:200],
                    }
        write(out, result)
    print((out / "table.md").read_text())
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
