"""Operators per training step, counted with ``torch.profiler`` on the CPU: the proxy for GPU
kernel launches. Ours against HF's TimeSformer, same config, one step after a warm-up.

    python benchmarks/count_ops.py [--attn divided_space_time] [--depth 12]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import build  # noqa: E402

COPIES = ("aten::copy_", "aten::cat")


def count(impl: str, cfg: dict) -> collections.Counter:
    """aten operators of one forward + backward: ``top`` (called from Python or autograd,
    about one kernel each), ``copies`` (``copy_`` and ``cat`` at any depth)."""
    torch.manual_seed(0)
    model = build(cfg, impl).train()
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["size"], cfg["size"])
    if impl == "hf":
        x = x.transpose(1, 2).contiguous()
    y = torch.randint(0, 400, (cfg["batch"],))

    def step() -> None:
        out = model(x) if impl == "ours" else model(pixel_values=x).logits
        F.cross_entropy(out, y).backward()
        model.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops: collections.Counter = collections.Counter()
    for event in prof.events():
        parent = event.cpu_parent
        nested = parent is not None and parent.name.startswith("aten::")
        if event.name.startswith("aten::"):
            ops["top" if not nested else "nested"] += 1
            if event.name in COPIES:
                ops["copies"] += 1  # every data copy, also inside reshape/contiguous
    return ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attn", default="divided_space_time")
    parser.add_argument("--depth", type=int, default=12)
    args = parser.parse_args(argv)
    cfg = dict(dim=192, depth=args.depth, heads=3, frames=8, size=112, batch=2, attn=args.attn)
    print(f"one training step, {args.attn}, depth {args.depth}, 8x112, batch 2, CPU")
    print("| implementation | aten ops (top level) | copies (copy_ + cat, any level) |")
    print("|---|---:|---:|")
    for impl in ("ours", "hf"):
        try:
            ops = count(impl, cfg)
        except ImportError:
            continue
        print(f"| {impl} | {ops['top']} | {ops['copies']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
