"""``tsf flops``: parameters and multiply-adds of one view for every variant and scheme."""

from __future__ import annotations

import sys

from lightning_tsf.commands.help import command_parser
from lightning_tsf.models.names import ATTENTION_TYPES
from lightning_tsf.models.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("flops", __doc__)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["timesformer", "timesformer_hr", "timesformer_l"],
        choices=list(PRESETS),
    )
    parser.add_argument("--schemes", nargs="+", default=list(ATTENTION_TYPES),
                        choices=ATTENTION_TYPES)  # fmt: skip
    parser.add_argument("--merge-r", type=int, default=0,
                        help="ToMe: merge R token pairs in every block (count the tokens kept)")
    parser.add_argument("--tube-drop", type=float, default=0.0,
                        help="count a training forward with this fraction of positions dropped")
    args = parser.parse_args(argv)
    from lightning_tsf.models.flops import format_table, macs_table

    tokens = {"merge_r": args.merge_r, "tube_drop": args.tube_drop}
    try:
        rows = macs_table(args.variants, args.schemes, tokens)
    except ValueError as err:  # a switch the scheme refuses, or a bad value
        print(f"tsf flops: error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0
