"""``tsf ablation``: the Mini Table 1 — the five attention schemes on the synthetic dataset.

Same small model, data and budget for every scheme (the demo's config with ``attention_type``,
``lr`` and the seed overridden): each scheme over a small lr grid and 3 seeds (45 runs of the
demo's budget: about 2 hours on 2 cores; ``--quick``: 5 runs at the demo's lr). The lr is
chosen per scheme by mean validation top-1; ``<out>/table.md`` reports the test top-1 at that
lr as mean ± std over the seeds, and each lr's test mean. The order-blind ``space_only`` is
capped at the synthetic set's order-blind ceiling
(chance, see :mod:`lightning_tsf.data.synthetic`), the temporal schemes are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from lightning_tsf.commands.demo import ensure_synthetic, run_experiment, time_guard
from lightning_tsf.commands.help import command_parser
from lightning_tsf.configs import config_path
from lightning_tsf.models.names import ATTENTION_TYPES


def cost(cfg: dict, attention: str) -> tuple[int, float]:
    """(parameters without head, multiply-adds per clip) of the config's backbone."""
    from lightning_tsf.models import TimeSformer
    from lightning_tsf.models.flops import count_flops, count_params

    init = dict(cfg["model"]["net"]["init_args"], attention_type=attention)
    from lightning_tsf.data.options import upgrade

    clips = upgrade(cfg["data"])[0].get("clips", {})  # an earlier flat config too
    init.update(img_size=clips["crop_size"], num_frames=clips["num_frames"])
    import torch

    with torch.device("meta"):
        model = TimeSformer(num_classes=0, **init)
    return count_params(model), count_flops(model) / 2


def run_grid(args: argparse.Namespace, guard: str) -> dict[tuple[str, float, int], dict]:
    """Every (scheme, lr, seed) run; each result is kept in ``<out>/<scheme>/lr<lr>_seed<s>.json``
    so that an interrupted ablation resumes where it stopped."""
    results = {}
    for scheme in args.schemes:
        for lr in args.lrs:
            for seed in args.seeds:
                run = Path(args.out) / scheme / f"lr{lr:g}_seed{seed}"
                done = run.parent / f"{run.name}.json"
                if done.is_file():
                    results[scheme, lr, seed] = json.loads(done.read_text())
                    continue
                overrides = [guard, f"--model.net.init_args.attention_type={scheme}",
                             f"--model.lr={lr}", f"--seed_everything={seed}"]  # fmt: skip
                start = time.perf_counter()
                res = run_experiment(args.config, args.root, run, overrides, dashboard=False)
                row = {"val_acc1": res["val_acc1"], "test_acc1": res["acc1"],
                       "epochs": res["epochs"], "seconds": time.perf_counter() - start}  # fmt: skip
                done.write_text(json.dumps(row))
                results[scheme, lr, seed] = row
                top1, took = 100 * row["test_acc1"], row["seconds"]
                print(f"[ablation] {scheme} lr {lr:g} seed {seed}: test top-1 {top1:.1f}% "
                      f"({took:.0f} s)", flush=True)  # fmt: skip
    return results


def table(
    args: argparse.Namespace, cfg: dict, results: dict[tuple[str, float, int], dict]
) -> str:
    """Per scheme: the lr with the best mean *validation* top-1, and the test top-1 at that lr
    as mean ± std over the seeds; then every lr's test mean, to show the sensitivity."""
    lines = ["| scheme | params | multiply-adds / clip | lr (best val) | test top-1, mean ± std "
             f"({len(args.seeds)} seeds) | " + " | ".join(f"lr {lr:g}" for lr in args.lrs) + " |",
             "|---|---|---|---|---|" + "---|" * len(args.lrs)]  # fmt: skip
    for scheme in args.schemes:
        params, macs = cost(cfg, scheme)

        def runs(lr: float, key: str) -> list[float]:
            return [100 * results[scheme, lr, s][key] for s in args.seeds]  # noqa: B023

        best = max(args.lrs, key=lambda lr: statistics.mean(runs(lr, "val_acc1")))
        test = runs(best, "test_acc1")
        spread = statistics.stdev(test) if len(test) > 1 else 0.0
        per_lr = " | ".join(f"{statistics.mean(runs(lr, 'test_acc1')):.1f}%" for lr in args.lrs)
        lines.append(f"| {scheme} | {params / 1e3:.0f}K | {macs / 1e6:.1f}M | {best:g} | "
                     f"{statistics.mean(test):.1f} ± {spread:.1f}% | {per_lr} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tsf ablation``."""
    parser = command_parser("ablation", __doc__)
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default=str(config_path()))
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="per run: a guard, not the budget (40 epochs); a run it cuts "
                        "is named under the table")  # fmt: skip
    parser.add_argument("--schemes", nargs="*", default=list(ATTENTION_TYPES),
                        choices=ATTENTION_TYPES)  # fmt: skip
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 1e-3, 2e-3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true",
                        help="one seed at the demo's lr 2e-3 (5 runs instead of 45)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the demo")
    args = parser.parse_args(argv)
    if args.quick:
        args.lrs, args.seeds = [2e-3], [0]
    os.environ.setdefault("WANDB_MODE", "offline")
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    ensure_synthetic(args.root)
    guard = time_guard(args.max_minutes)
    start = time.perf_counter()
    results = run_grid(args, guard)
    cfg = yaml.safe_load(Path(args.config).read_text())
    text = table(args, cfg, results)
    runs = len(args.schemes) * len(args.lrs) * len(args.seeds)
    text += f"\n{runs} runs, {time.perf_counter() - start:.0f} s in this invocation\n"
    epochs = cfg["trainer"].get("max_epochs") or 0
    cut = [f"{k[0]} lr {k[1]:g} seed {k[2]} ({r['epochs']})" for k, r in results.items()
           if r["epochs"] < epochs]  # fmt: skip
    if cut:
        text += f"stopped by the guard before {epochs} epochs: " + ", ".join(cut) + "\n"
    Path(args.out, "table.md").write_text(text)
    print(text, flush=True)
    return 0
