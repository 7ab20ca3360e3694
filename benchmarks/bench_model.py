"""Benchmark our TimeSformer against HF transformers' TimeSformer on this machine.

For each configuration, in a fresh process: both models built from the same config with the
same weights, then timed *interleaved* over several rounds (medians): the training step
(forward + cross-entropy + backward), the inference forward, and a large fp32 matmul whose
FLOP/s is this machine's reference. Utilisation = training-step FLOPs (FlopCounterMode, on the
meta device) / median step time / matmul FLOP/s. Peak memory of one training step is measured
in yet another fresh process per (configuration, implementation): the growth of the resident
set's high-water mark (VmHWM, reset through /proc/self/clear_refs) during the step.

    python benchmarks/bench_model.py                      # all configurations, 5 rounds
    python benchmarks/bench_model.py --configs small-divided --rounds 3

Needs ``transformers`` (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

CONFIGS = {
    "small-divided": dict(
        dim=384, depth=4, heads=6, frames=8, size=112, batch=2, attn="divided_space_time"
    ),
    "small-joint": dict(
        dim=384, depth=4, heads=6, frames=8, size=112, batch=2, attn="joint_space_time"
    ),
    "base-divided": dict(
        dim=768, depth=12, heads=12, frames=8, size=224, batch=1, attn="divided_space_time"
    ),
    "base-joint": dict(
        dim=768, depth=12, heads=12, frames=8, size=224, batch=1, attn="joint_space_time"
    ),
}
NUM_CLASSES = 400


def build(cfg: dict, impl: str, device: str = "cpu") -> torch.nn.Module:
    """Our model or HF's, same sizes, no dropout or drop path (so both do identical work;
    ``cfg["drop_path"]`` sets ours)."""
    if impl == "hf":
        from transformers import TimesformerConfig, TimesformerForVideoClassification

        config = TimesformerConfig(
            image_size=cfg["size"],
            patch_size=16,
            num_frames=cfg["frames"],
            hidden_size=cfg["dim"],
            num_hidden_layers=cfg["depth"],
            num_attention_heads=cfg["heads"],
            intermediate_size=4 * cfg["dim"],
            num_labels=NUM_CLASSES,
            attention_type=cfg["attn"],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        with torch.device(device):
            return TimesformerForVideoClassification(config)
    from lightning_tsf.models import TimeSformer

    with torch.device(device):
        return TimeSformer(
            img_size=cfg["size"],
            patch_size=16,
            num_frames=cfg["frames"],
            num_classes=NUM_CLASSES,
            embed_dim=cfg["dim"],
            depth=cfg["depth"],
            num_heads=cfg["heads"],
            attention_type=cfg["attn"],
            drop_path_rate=cfg.get("drop_path", 0.0),
        )


def step_fn(model: torch.nn.Module, impl: str, cfg: dict, train: bool, bf16: bool) -> Callable:
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["size"], cfg["size"])
    if impl == "hf":
        x = x.transpose(1, 2).contiguous()  # HF wants (B, T, C, H, W)
    y = torch.randint(0, NUM_CLASSES, (cfg["batch"],))

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x) if impl == "ours" else model(pixel_values=x).logits
        return out.float()

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(forward(), y).backward()

    def infer() -> None:
        with torch.no_grad():
            forward()

    model.train(train)
    return train_step if train else infer


def train_flops(cfg: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(cfg, "ours", device="meta")
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["size"], cfg["size"], device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops()


def timed(fn: Callable) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_timing(cfg: dict, rounds: int, bf16: bool) -> dict:
    torch.manual_seed(0)
    ours, hf = build(cfg, "ours"), build(cfg, "hf")
    from lightning_tsf.models import load_checkpoint

    load_checkpoint(ours, hf.state_dict())  # same weights
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    fns = {
        "matmul": lambda: a @ b,
        "ours_train_fp32": step_fn(ours, "ours", cfg, True, False),
        "hf_train_fp32": step_fn(hf, "hf", cfg, True, False),
        **({"ours_train_bf16": step_fn(ours, "ours", cfg, True, True)} if bf16 else {}),
        "hf_infer_fp32": step_fn(hf, "hf", cfg, False, False),
        "ours_infer_fp32": step_fn(ours, "ours", cfg, False, False),
    }
    # the model step functions switch train/eval mode on one shared model: re-set per call
    modes = {
        "ours_train_fp32": (ours, True),
        "ours_train_bf16": (ours, True),
        "ours_infer_fp32": (ours, False),
        "hf_train_fp32": (hf, True),
        "hf_infer_fp32": (hf, False),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():  # warm-up
        if name in modes:
            modes[name][0].train(modes[name][1])
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            if name in modes:
                modes[name][0].train(modes[name][1])
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = train_flops(cfg)
    matmul_rate = 2 * n**3 / med["matmul"]
    return dict(
        median_s=med,
        train_flops=flops,
        matmul_gflops=matmul_rate / 1e9,
        ours_util=flops / med["ours_train_fp32"] / matmul_rate,
        hf_util=flops / med["hf_train_fp32"] / matmul_rate,
        bf16_speedup_vs_hf_fp32=med["hf_train_fp32"] / med.get("ours_train_bf16", float("nan")),
        train_speedup_fp32=med["hf_train_fp32"] / med["ours_train_fp32"],
        infer_speedup_fp32=med["hf_infer_fp32"] / med["ours_infer_fp32"],
    )


def run_memory(cfg: dict, impl: str) -> dict:
    torch.manual_seed(0)
    model = build(cfg, impl)
    from compute_scaling import peak_rss_growth  # beside this file

    return dict(peak_mib=peak_rss_growth(step_fn(model, impl, cfg, True, False)) / 2**20)


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    bf16 = args.config in args.bf16_configs
    result = (
        run_timing(cfg, args.rounds, bf16) if args.what == "timing" else run_memory(cfg, args.what)
    )
    print("RESULT " + json.dumps(result))


def in_fresh_process(args: argparse.Namespace, config: str, what: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--config",
        config,
        "--what",
        what,
        "--rounds",
        str(args.rounds),
        "--threads",
        str(args.threads),
        "--bf16-configs",
        *args.bf16_configs,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--bf16-configs",
        nargs="*",
        default=["small-divided", "small-joint"],
        help="configurations that also time a bf16-autocast step (slow on CPUs without bf16)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="timing", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds (medians)"
    )
    rows = []
    for name in args.configs:
        t = in_fresh_process(args, name, "timing")
        mem = {impl: in_fresh_process(args, name, impl)["peak_mib"] for impl in ("ours", "hf")}
        rows.append((name, t, mem))
        m = t["median_s"]
        print(
            f"{name}: ours train {m['ours_train_fp32'] * 1e3:.0f} ms, "
            f"HF {m['hf_train_fp32'] * 1e3:.0f} ms, "
            f"ours bf16 {m.get('ours_train_bf16', float('nan')) * 1e3:.0f} ms; "
            f"util ours {t['ours_util']:.2f} "
            f"HF {t['hf_util']:.2f}; peak MiB ours {mem['ours']:.0f} HF {mem['hf']:.0f}",
            flush=True,
        )

    print(
        "\n| config | train step ours / HF (ms) | speed-up | utilisation ours / HF "
        "| bf16 step ours (ms) | bf16 ours vs HF fp32 | inference ours / HF (ms) "
        "| peak train MiB ours / HF | ratio |"
    )
    print("|" + "---|" * 9)
    for name, t, mem in rows:
        m = t["median_s"]
        print(
            f"| {name} | {m['ours_train_fp32'] * 1e3:.0f} / {m['hf_train_fp32'] * 1e3:.0f} "
            f"| {t['train_speedup_fp32']:.2f}x | {t['ours_util']:.2f} / {t['hf_util']:.2f} "
            f"| {m.get('ours_train_bf16', float('nan')) * 1e3:.0f} "
            f"| {t['bf16_speedup_vs_hf_fp32']:.2f}x "
            f"| {m['ours_infer_fp32'] * 1e3:.0f} / {m['hf_infer_fp32'] * 1e3:.0f} "
            f"| {mem['ours']:.0f} / {mem['hf']:.0f} | {mem['ours'] / mem['hf']:.2f} |"
        )
    print(
        f"\nfp32 matmul reference ({2048}^3): "
        + ", ".join(f"{n} {t['matmul_gflops']:.1f} GFLOP/s" for n, t, _ in rows)
    )


if __name__ == "__main__":
    main()
