"""The ``tsf`` command: one entry point, subcommands dispatched to their modules.

Subcommands are imported lazily so that ``tsf check-videos`` does not pay for the Trainer.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "flops": ("lightning_tsf.models.flops", "main", "parameter and multiply-add table"),
    "check-videos": ("lightning_tsf.data.cli", "check_videos_main", "list unreadable videos"),
    "prepare": ("lightning_tsf.data.cli", "prepare_main", "re-encode videos to a short side"),
    "make-synthetic": ("lightning_tsf.data.cli", "synthetic_main", "write the synthetic dataset"),
    "predict-videos": ("lightning_tsf.viz.predict", "predict_main", "top-k classes of video files"),
    "heatmap": ("lightning_tsf.viz.predict", "heatmap_main", "attention rollout heatmaps"),
    "extract-features": ("lightning_tsf.viz.predict", "extract_features_main", "feature vectors"),
    "tsne": ("lightning_tsf.viz.features", "tsne_main", "t-SNE plot of extracted features"),
    "scaling": ("lightning_tsf.viz.scaling", "main", "GMACs and memory vs frames/resolution"),
    "fit": ("lightning_tsf.train.cli", "fit_main", "train: tsf fit --config experiments/X.yaml"),
    "validate": ("lightning_tsf.train.cli", "validate_main", "validate a checkpoint"),
    "test": ("lightning_tsf.train.cli", "test_main", "multi-view test of a checkpoint"),
    "predict": ("lightning_tsf.train.cli", "predict_main", "top-k classes per video"),
    "demo": ("lightning_tsf.train.demo", "main", "synthetic data + CPU training + summary"),
    "ablation": ("lightning_tsf.train.ablation", "main", "Mini Table 1 on synthetic data"),
}


def _usage() -> str:
    lines = ["usage: tsf <command> [args]", "", "commands:"]
    lines += [f"  {name:<16}{help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tsf: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
