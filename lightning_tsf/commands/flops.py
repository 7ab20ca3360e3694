"""``tsf flops``: parameters and multiply-adds of one view for every variant and scheme."""

from __future__ import annotations

import argparse

from lightning_tsf.models import BLOCKS, PRESETS
from lightning_tsf.models.flops import format_table, macs_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tsf flops", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["timesformer", "timesformer_hr", "timesformer_l"],
        choices=list(PRESETS),
    )
    parser.add_argument("--schemes", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    args = parser.parse_args(argv)
    print(format_table(macs_table(args.variants, args.schemes)))
    return 0
