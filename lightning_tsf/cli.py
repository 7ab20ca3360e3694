"""The ``tsf`` command: one entry point, subcommands dispatched to their modules.

Subcommands are imported lazily so that ``tsf check-videos`` does not pay for the Trainer.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # under lightning_tsf.commands
    function: str  # takes argv, returns the exit status
    help: str


COMMANDS: dict[str, Command] = {
    "fit": Command("lightning", "fit_main", "train: tsf fit --config experiments/X.yaml"),
    "validate": Command("lightning", "validate_main", "validate a checkpoint on a config's data"),
    "test": Command("lightning", "test_main", "multi-view test of a checkpoint on a config's data"),
    "predict": Command("lightning", "predict_main", "top-k classes of a config's predict split"),
    "predict-files": Command("files", "predict_main", "top-k classes of video files/folders"),
    "heatmap-files": Command("files", "heatmap_main", "attention rollout heatmaps of video files"),
    "features-files": Command("files", "extract_features_main", "feature vectors of video files"),
    "timeline": Command("files", "timeline_main", "top-k classes of sliding windows over a video"),
    "tsne": Command("files", "tsne_main", "t-SNE plot of a features-files folder"),
    "check-videos": Command("data", "check_videos_main", "list the unreadable videos of a dataset"),
    "prepare": Command("data", "prepare_main", "re-encode a dataset for fast training reads"),
    "shard": Command("data", "shard_main", "write a dataset as LitData shards (streaming)"),
    "bench-data": Command("bench", "main", "is the loader fast enough for the GPU? clips/s"),
    "make-synthetic": Command("data", "synthetic_main", "write the synthetic motion dataset"),
    "weights": Command("weights", "main", "pretrained checkpoints: list, download"),
    "export": Command("export", "main", "a checkpoint as ONNX or torch.export for deployment"),
    "flops": Command("flops", "main", "parameter and multiply-add table"),
    "demo": Command("demo", "main", "synthetic data + CPU training + test + pictures"),
    "ablation": Command("ablation", "main", "Mini Table 1: the five schemes on synthetic data"),
}
# Earlier names, still accepted.
ALIASES = {
    "predict-videos": "predict-files",
    "heatmap": "heatmap-files",
    "extract-features": "features-files",
}


def usage() -> str:
    """The ``tsf --help`` text: one aligned line per command, then the aliases."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: tsf <command> [args]   (tsf <command> --help for its options)", ""]
    lines += ["commands:"] + [f"  {name:<{width}}{c.help}" for name, c in COMMANDS.items()]
    lines += ["", "aliases: " + ", ".join(f"{old} = {new}" for old, new in ALIASES.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    name, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if name not in COMMANDS:
        print(f"tsf: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    module = importlib.import_module(f"lightning_tsf.commands.{command.module}")
    return int(getattr(module, command.function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
