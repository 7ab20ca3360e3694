"""Compute scaling report (the paper's Figure 3): multiply-adds and peak memory of one forward
pass at batch 1, per attention scheme, as clips get longer and frames larger.

- Multiply-adds: counted for the full ViT-Base model on the ``meta`` device (no memory, no time).
- Memory: an analytic estimate first (weights + the largest attention step's score and softmax
  tensors + the block's token activations). Configurations whose estimate exceeds
  ``--memory-budget-gb`` are marked ``> budget`` and not run. The others run in a fresh
  subprocess each, in inference mode with the explicit (math) attention kernel that materialises
  the ``L x L`` attention matrix as the official code does: the reported number is the growth of
  the process's peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``) over
  the forward pass, i.e. activations, plus the full model's fp32 weights. In inference the
  activations of one block are freed before the next, so the activation peak does not depend on
  depth; ``--depth`` (default 1) sets how many blocks are run for the measurement.

``python benchmarks/compute_scaling.py`` prints a markdown table and writes a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_tsf.models import BLOCKS
from lightning_tsf.models.flops import count_flops, count_params
from lightning_tsf.models.presets import create_model

SCHEMES = tuple(BLOCKS)
FRAMES = (8, 16, 32, 64, 96)
SIZES = (224, 336, 448)
GB = 1024**3


def attention_elements(scheme: str, t: int, h: int, w: int) -> int:
    """Elements of the largest attention-score tensor of one block (per head, batch 1)."""
    n = h * w
    steps = {
        "space_only": [t * (1 + n) ** 2],
        "joint_space_time": [(1 + n * t) ** 2],
        "divided_space_time": [n * t * t, t * (1 + n) ** 2],
        "sparse_local_global": [4 * (n * t // 4) ** 2, 8 * (1 + n * t // 8) ** 2],
        "axial": [n * t * t, t * h * w * w, t * w * (1 + h) ** 2],
    }[scheme]
    return max(steps)


def estimate_bytes(scheme: str, frames: int, size: int, patch: int = 16, dim: int = 768,
                   heads: int = 12, params: int = 0) -> int:  # fmt: skip
    """Analytic peak of an fp32 inference forward: weights + scores and softmax of the largest
    attention step + ~12 token-sized activations (qkv, MLP hidden, residuals)."""
    g = size // patch
    tokens = 1 + g * g * frames
    attn = 2 * heads * attention_elements(scheme, frames, g, g)
    return 4 * (params + attn + 12 * tokens * dim)


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_rss_growth(fn: Callable[[], object]) -> int:
    """Bytes by which this process's peak resident set (VmHWM) grows above the current resident
    set while ``fn()`` runs (Linux; run it in a fresh process for a clean allocator)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def _measure(scheme: str, frames: int, size: int, depth: int) -> dict:
    """In this (fresh) process: activation peak and time of one forward pass at batch 1."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = create_model("timesformer", attention_type=scheme, num_frames=frames, img_size=size,
                         depth=depth, num_classes=400).eval()  # fmt: skip
    x = torch.randn(1, 3, frames, size, size)

    def forward() -> None:
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
            model(x)

    start = time.perf_counter()
    peak = peak_rss_growth(forward)
    return {"activation_bytes": peak, "seconds": time.perf_counter() - start}


def measure(scheme: str, frames: int, size: int, depth: int = 1, timeout: float = 600) -> dict:
    """:func:`_measure` in a fresh Python process (a clean allocator and peak counter)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_measure",
           scheme, str(frames), str(size), str(depth)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_rows(
    schemes: tuple[str, ...] = SCHEMES,
    frames: tuple[int, ...] = FRAMES,
    sizes: tuple[int, ...] = SIZES,
    budget_gb: float = 8.0,
    depth: int = 1,
    run: bool = True,
) -> list[dict]:
    """The two sweeps of Figure 3 (frames at 224 px; size at 8 frames), one row each."""
    grid = [(f, 224) for f in frames] + [(8, s) for s in sizes if s != 224 or 8 not in frames]
    rows = []
    for scheme in schemes:
        for f, s in grid:
            row: dict = {"scheme": scheme, "frames": f, "size": s}
            try:
                with torch.device("meta"):
                    model = create_model("timesformer", attention_type=scheme, num_frames=f,
                                         img_size=s, num_classes=400)  # fmt: skip
                    row["gmacs"] = count_flops(model) / 2e9
            except ValueError as err:  # e.g. local-global needs an even patch grid
                row.update(status="n/a", note=str(err).split(";")[0])
                rows.append(row)
                continue
            params = count_params(model, with_head=True)
            row["estimate_gb"] = estimate_bytes(scheme, f, s, params=params) / GB
            if row["estimate_gb"] > budget_gb:
                row["status"] = "> budget"
            elif run:
                m = measure(scheme, f, s, depth)
                row["memory_gb"] = (m["activation_bytes"] + 4 * params) / GB
                row["seconds"] = m["seconds"]
                row["status"] = "measured"
            else:
                row["status"] = "estimated"
            rows.append(row)
            print(_row_line(row, budget_gb), file=sys.stderr, flush=True)
    return rows


def _row_line(r: dict, budget_gb: float) -> str:
    if r["status"] == "n/a":
        mem = "n/a (odd patch grid)"
    elif r["status"] == "> budget":
        mem = f"> {budget_gb:g} GB budget (est. {r['estimate_gb']:.1f})"
    elif r["status"] == "measured":
        mem = f"{r['memory_gb']:.2f} (est. {r['estimate_gb']:.2f})"
    else:
        mem = f"est. {r['estimate_gb']:.2f}"
    gmacs = f"{r['gmacs']:.1f}" if "gmacs" in r else "-"
    return f"| {r['scheme']} | {r['frames']} | {r['size']} | {gmacs} | {mem} |"


def markdown_table(rows: list[dict], budget_gb: float) -> str:
    """The rows as a markdown table."""
    head = "| scheme | frames | size | GMACs | peak memory, GB (batch 1, fp32 inference) |\n"
    head += "|---|---|---|---|---|\n"
    return head + "\n".join(_row_line(r, budget_gb) for r in rows)


def plot(rows: list[dict], path: str | Path, budget_gb: float) -> Path:
    """2x2 figure: GMACs and memory vs frames (224 px) and vs size (8 frames), log scale;
    configurations over the budget are drawn as crosses at the budget line."""
    from lightning_tsf.viz.plots import new_figure, render_figure

    fig = new_figure((11, 8))
    axes = fig.subplots(2, 2)
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    sweeps = [("frames", lambda r: r["size"] == 224), ("size", lambda r: r["frames"] == 8)]
    for col, (key, keep) in enumerate(sweeps):
        for k, scheme in enumerate(schemes):
            pts = [r for r in rows if r["scheme"] == scheme and keep(r) and "gmacs" in r]
            colour = f"C{k}"
            axes[0, col].plot([r[key] for r in pts], [r["gmacs"] for r in pts], "o-",
                              color=colour, label=scheme)  # fmt: skip
            ok = [r for r in pts if r["status"] != "> budget"]
            mem = [r.get("memory_gb", r["estimate_gb"]) for r in ok]
            axes[1, col].plot([r[key] for r in ok], mem, "o-", color=colour, label=scheme)
            over = [r[key] for r in pts if r["status"] == "> budget"]
            axes[1, col].plot(over, [budget_gb] * len(over), "x", color=colour, ms=10, mew=2)
        axes[1, col].axhline(budget_gb, color="grey", ls="--", lw=1)
        for row, label in ((0, "GMACs (forward, batch 1)"), (1, "peak memory (GB)")):
            ax = axes[row, col]
            ax.set_yscale("log")
            ax.set_xlabel("frames (224 px)" if key == "frames" else "frame size (8 frames)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 1].text(0.02, 0.95, f"x: over the {budget_gb:g} GB budget (not run)",
                    transform=axes[1, 1].transAxes, fontsize=8, va="top")  # fmt: skip
    path = Path(path)
    render_figure(fig, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the table, write the plot (and the rows as JSON)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_measure"]:
        scheme, f, s, d = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        print(json.dumps(_measure(scheme, f, s, d)))
        return 0
    p = argparse.ArgumentParser(prog="compute_scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    p.add_argument("--frames", nargs="+", type=int, default=list(FRAMES))
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    p.add_argument("--memory-budget-gb", type=float, default=8.0)
    p.add_argument("--depth", type=int, default=1, help="blocks run for the memory measurement")
    p.add_argument("--no-run", action="store_true", help="estimates only, measure nothing")
    p.add_argument("--out", default="scaling.png", help="plot path; rows go to <out>.json")
    args = p.parse_args(argv)
    rows = report_rows(tuple(args.schemes), tuple(args.frames), tuple(args.sizes),
                       args.memory_budget_gb, args.depth, not args.no_run)  # fmt: skip
    print(markdown_table(rows, args.memory_budget_gb))
    out = plot(rows, args.out, args.memory_budget_gb)
    Path(out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
