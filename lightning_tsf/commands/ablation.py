"""``tsf ablation``: the Mini Table 1 — the five attention schemes on the synthetic dataset.

Same small model and budget for every scheme (the demo's config with ``attention_type``
overridden); writes ``<out>/table.md`` with scheme, parameters, multiply-adds per clip and test
top-1. The order-blind ``space_only`` is capped at the synthetic set's order-blind ceiling
(chance, see :mod:`lightning_tsf.data.synthetic`), the temporal schemes are not.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from lightning_tsf.commands.demo import run_experiment
from lightning_tsf.configs import config_path
from lightning_tsf.models import BLOCKS


def cost(config: str | Path, attention: str) -> tuple[int, float]:
    """(parameters without head, multiply-adds per clip) of the config's backbone."""
    import yaml

    from lightning_tsf.models import TimeSformer
    from lightning_tsf.models.flops import count_flops, count_params

    cfg = yaml.safe_load(Path(config).read_text())
    init = dict(cfg["model"]["net"]["init_args"], attention_type=attention)
    init.update(img_size=cfg["data"]["crop_size"], num_frames=cfg["data"]["num_frames"])
    with torch.device("meta"):
        model = TimeSformer(num_classes=0, **init)
    return count_params(model), count_flops(model) / 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tsf ablation``."""
    parser = argparse.ArgumentParser(prog="tsf ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default=str(config_path()))
    parser.add_argument("--max-minutes", type=float, default=4.0, help="per scheme")
    parser.add_argument("--schemes", nargs="*", default=list(BLOCKS), choices=list(BLOCKS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the demo")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(args.threads)
    from lightning_tsf.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(args.root)
    seconds = int(args.max_minutes * 60)
    guard = f"--trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    rows = [
        "| scheme | params | multiply-adds / clip | test top-1 | epochs |",
        "|---|---|---|---|---|",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for scheme in args.schemes:
        overrides = [guard, f"--model.net.init_args.attention_type={scheme}"]
        res = run_experiment(args.config, args.root, out / scheme, overrides)
        params, macs = cost(args.config, scheme)
        rows.append(
            f"| {scheme} | {params / 1e3:.0f}K | {macs / 1e6:.1f}M | "
            f"{100 * res['acc1']:.1f}% | {res['epochs']} |"
        )
        (out / "table.md").write_text("\n".join(rows) + "\n")
        print("\n".join(rows), flush=True)
    return 0
