"""``tsf flops``: parameters and multiply-adds of one view for every variant and scheme."""

from __future__ import annotations

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
    args = parser.parse_args(argv)
    from lightning_tsf.models.flops import format_table, macs_table

    print(format_table(macs_table(args.variants, args.schemes)))
    return 0
