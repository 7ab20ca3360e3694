"""``bench_gpu.py --tokens``: the token switches on a GPU, each against the switch off.

ViT-B divided 8×224 (``--tiny``: a 4×64 model on the CPU), bf16 autocast on a GPU, eager and
compiled (``compile_timesformer``, what ``compile: true`` does): inference (batch 16, no grad)
and one SGD training step (batch 8) per setting, medians after warm-up, and the ratio to the
switch off of the same implementation and mode, measured in the same run. The clips have a
still background with a band of columns that changes every frame (a third of the positions
for ViT-B), so static-patch dropping has something to drop; tokens kept (%): the patch tokens
the blocks see, averaged over the blocks. Eager rows first (seconds), then the compiled rows
of ``COMPILED_PLAN`` while the time budget lasts (each compile takes tens of seconds); the
rest are reported as skipped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_tsf.models import TimeSformer
from lightning_tsf.train.compile import compile_timesformer

SETTINGS = {
    "off": {},
    "static_drop 0.1": {"static_drop": 0.1},
    "merge_r 8": {"merge_r": 8},
    "merge_r 16": {"merge_r": 16},
    "tube_drop 0.5": {"tube_drop": 0.5},
}
TRAIN_ONLY = {"tube_drop 0.5"}
# compiled (setting, mode) pairs, most telling first: a budget cut skips the tail
COMPILED_PLAN = [("off", "infer"), ("merge_r 16", "infer"), ("off", "train"),
                 ("tube_drop 0.5", "train"), ("static_drop 0.1", "infer"),
                 ("merge_r 8", "infer"), ("merge_r 16", "train")]  # fmt: skip
VIT_B = dict(img_size=224, num_frames=8, embed_dim=768, depth=12, num_heads=12)
TINY = dict(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=4)
TINY_SETTINGS = {**{k: v for k, v in SETTINGS.items() if "merge" not in k},
                 "merge_r 2": {"merge_r": 2}, "merge_r 4": {"merge_r": 4}}  # fmt: skip


def clips(batch: int, frames: int, size: int, device: torch.device) -> torch.Tensor:
    """A still random frame, and a band of a third of the columns redrawn in every frame."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 1, size, size, generator=g).repeat(1, 1, frames, 1, 1)
    band = size // 3
    x[..., :band] = torch.randn(batch, 3, frames, size, band, generator=g)
    return x.to(device)


def timed(fn, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def runner(model: TimeSformer, mode: str, device: torch.device, dtype, sizes: dict, tiny: bool):
    """The timed call: inference of a batch (16; tiny 4) or one SGD step (8; tiny 2)."""
    batch = (4 if tiny else 16) if mode == "infer" else (2 if tiny else 8)
    x = clips(batch, sizes["num_frames"], sizes["img_size"], device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model.eval()(x)

    def train() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model.train()(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return (infer if mode == "infer" else train), batch


def kept(model: TimeSformer, x: torch.Tensor, train: bool) -> float:
    """Patch tokens the blocks see, % of all, averaged over the blocks."""
    seen: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1] - 1))
             for b in model.blocks]  # fmt: skip
    with torch.no_grad():
        model.train(train)(x[:1])
    for hook in hooks:
        hook.remove()
    t, n = x.shape[2], (x.shape[-1] // model.patch_size) ** 2
    return 100 * statistics.mean(seen) / (n * t)


def token_rows(args, device: torch.device, dtype, out: Path) -> list[dict]:
    """Eager rows for every setting and mode, then the compiled plan within ``--budget-s``."""
    tiny = args.tiny or device.type == "cpu"
    sizes, settings = (TINY, TINY_SETTINGS) if tiny else (VIT_B, SETTINGS)
    began, rows = time.perf_counter(), []
    plan = [(s, m, "eager") for s in settings for m in ("infer", "train")
            if not (s in TRAIN_ONLY and m == "infer")]  # fmt: skip
    plan += [(s, m, "compiled") for s, m in COMPILED_PLAN if s in settings and not args.no_compile]
    for setting, mode, impl in plan:
        row = {"setting": setting, "mode": mode, "impl": impl}
        if time.perf_counter() - began > args.budget_s:
            rows.append({**row, "error": "skipped: time budget"})
            continue
        if impl == "compiled":
            torch._dynamo.reset()
        try:
            torch.manual_seed(0)
            model = TimeSformer(**sizes, patch_size=16, num_classes=400, drop_path_rate=0.0,
                                attention_type="divided_space_time",
                                tokens=settings[setting]).to(device)  # fmt: skip
            row["kept"] = kept(model, clips(1, sizes["num_frames"], sizes["img_size"], device),
                               mode == "train")  # fmt: skip
            if impl == "compiled":
                compile_timesformer(model)
            fn, batch = runner(model, mode, device, dtype, sizes, tiny)
            sec = timed(fn, device, args.warmup, args.steps)
            row.update(ms=1000 * sec, clips_per_s=batch / sec)
        except Exception as err:  # a compiler error, out of memory: a row, not the end
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(out, rows, device, dtype)
    return rows


def write(out: Path, rows: list[dict], device: torch.device, dtype) -> None:
    """``tokens.json`` and ``tokens.md``: each row with its ratio to off (same impl, mode)."""
    off = {(r["impl"], r["mode"]): r["ms"] for r in rows if r["setting"] == "off" and "ms" in r}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"{name}, torch {torch.__version__}, {'bf16 autocast' if dtype else 'fp32'}; "
             "divided space-time", "",
             "| setting | mode | impl | tokens kept | clips/s | ms | × off |",
             "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        if "ms" not in r:
            lines.append(
                f"| {r['setting']} | {r['mode']} | {r['impl']} | {r.get('error')} |  |  |  |"
            )
            continue
        ref = off.get((r["impl"], r["mode"]))
        r["x_off"] = ref / r["ms"] if ref else None
        ratio = f"{r['x_off']:.2f}" if ref else "-"
        lines.append(
            f"| {r['setting']} | {r['mode']} | {r['impl']} | {r['kept']:.0f}% | "
            f"{r['clips_per_s']:.1f} | {r['ms']:.1f} | {ratio} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text(json.dumps(rows, indent=1))
    (out / "tokens.md").write_text("\n".join(lines) + "\n")


def main(args, device: torch.device, began: float) -> int:
    """``bench_gpu.py --tokens``: the rows, then the table."""
    dtype = torch.bfloat16 if device.type == "cuda" else None
    token_rows(args, device, dtype, Path(args.out))
    print((Path(args.out) / "tokens.md").read_text())
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0
