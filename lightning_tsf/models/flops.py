"""Parameters and multiply-adds of one view, counted with ``FlopCounterMode``.

The model is built on the ``meta`` device, so even TimeSformer-L (2.4 TMACs) is counted in
a second without memory. Multiply-adds = counted FLOPs / 2 (fvcore, used by the paper, counts
one multiply-add as one). ``tsf flops`` prints the table for every scheme and variant.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_tsf.models.presets import create_model
from lightning_tsf.models.timesformer import TimeSformer

# Paper, Table 1 (params without head, ViT-Base 8x224) and the multiply-adds it reports.
PAPER_PARAMS_M = {
    "space_only": 85.9,
    "joint_space_time": 85.9,
    "divided_space_time": 121.4,
    "sparse_local_global": 121.4,
    "axial": 156.8,
}
PAPER_GMACS = {
    ("timesformer", "space_only"): 140.7,
    ("timesformer", "joint_space_time"): 179.7,
    ("timesformer", "divided_space_time"): 196.1,
    ("timesformer_hr", "divided_space_time"): 1704.5,
    ("timesformer_l", "divided_space_time"): 2382.5,
}


def count_params(model: TimeSformer, with_head: bool = False) -> int:
    """Number of parameters; without the classification head unless asked (as Table 1)."""
    return sum(
        p.numel() for n, p in model.named_parameters() if with_head or not n.startswith("head.")
    )


def count_flops(model: TimeSformer, batch_size: int = 1, backward: bool = False) -> int:
    """FLOPs of one forward (and backward) pass on a ``(batch, C, T, H, W)`` input, in the
    model's mode (``train()``: with tube dropping, if on), so of the tokens kept.

    Runs on whatever device the model is on; build it under ``torch.device("meta")`` to count
    without computing (not with ``static_drop``, whose kept tokens depend on the pixels).
    """
    p = next(model.parameters())
    x = torch.randn(
        batch_size,
        model.in_chans,
        model.num_frames,
        model.img_size,
        model.img_size,
        device=p.device,
        dtype=p.dtype,
    )
    counter = FlopCounterMode(display=False)
    with counter:
        if backward:
            model(x).float().sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


def macs_table(
    variants: list[str], schemes: list[str], tokens: dict[str, float] | None = None
) -> list[dict]:
    """One row per (variant, scheme): params (M, no head), GMACs of one view, paper figures.
    ``tokens``: ``merge_r`` and ``tube_drop`` (counted in a training forward) switches; the
    GMACs are then those of the tokens kept, and ``tokens`` names them."""
    rows = []
    tokens = dict(tokens or {})
    if tokens.get("static_drop"):
        raise ValueError("static_drop keeps tokens by their pixels: no count without a video "
                         "(benchmarks/bench_tokens.py measures kept fractions)")  # fmt: skip
    for variant in variants:
        for scheme in schemes:
            with torch.device("meta"):
                model = create_model(variant, attention_type=scheme, num_classes=400,
                                     tokens=tokens)  # fmt: skip
            model.train(bool(tokens.get("tube_drop")))
            rows.append(
                dict(
                    variant=variant,
                    scheme=scheme,
                    frames=model.num_frames,
                    size=model.img_size,
                    params_m=count_params(model) / 1e6,
                    gmacs=count_flops(model) / 2e9,
                    paper_params_m=PAPER_PARAMS_M[scheme] if variant == "timesformer" else None,
                    paper_gmacs=None if model.tokens.on else PAPER_GMACS.get((variant, scheme)),
                    tokens=model.tokens.describe(),
                )
            )
    return rows


def _fmt(value: float | None, ref: float | None, digits: int = 1) -> str:
    if ref is None or value is None:
        return ""
    return f"{ref:.{digits}f} ({100 * (value - ref) / ref:+.2f}%)"


def format_table(rows: list[dict]) -> str:
    cols = ["variant", "scheme", "T x size", "params (M)", "paper params (diff)"]
    cols += ["GMACs/view", "paper GMACs (diff)"]
    tokens = any(r.get("tokens", "off") != "off" for r in rows)
    cols += ["tokens"] if tokens else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['scheme']} | {r['frames']}x{r['size']} | {r['params_m']:.2f} | "
            f"{_fmt(r['params_m'], r['paper_params_m'])} | {r['gmacs']:.1f} | "
            f"{_fmt(r['gmacs'], r['paper_gmacs'])} |" + (f" {r['tokens']} |" if tokens else "")
        )
    return "\n".join(lines)
