"""The ``tsf`` command: one entry point, subcommands dispatched to their modules.

Subcommands are imported lazily so that ``tsf check-videos`` does not pay for the Trainer, and
each command module imports torch, Lightning and PyAV only when it runs, not to print its
``--help`` (``tests/test_cli_help.py`` guards this). The LightningCLI commands' help is built
by jsonargparse from the classes' signatures, which needs them imported (seconds): it is built
once and kept in the cache folder (:func:`cached_help`), keyed by everything it depends on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
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
# Commands whose ``--help`` LightningCLI builds (seconds): kept in the cache (cached_help).
CACHED_HELP = {"lightning"}
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


HELP_DEPENDS_ON = ("lightning-tsf", "pytorch-lightning", "jsonargparse", "torch")


def help_cache_path(name: str, argv: list[str]) -> Path:
    """The cached ``--help`` text of command ``name``: keyed by the arguments, the terminal
    width, the versions of the packages that shape it and the size and time of every file of
    this package (an edited or upgraded install builds it anew)."""
    from importlib import metadata

    from lightning_tsf.models.names import cache_dir

    key = hashlib.sha256()
    key.update(repr((name, argv, shutil.get_terminal_size().columns)).encode())
    for dist in HELP_DEPENDS_ON:
        try:
            key.update(f"{dist}={metadata.version(dist)};".encode())
        except metadata.PackageNotFoundError:
            key.update(f"{dist}=none;".encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        stat = path.stat()
        key.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return cache_dir() / "help" / f"{name}-{key.hexdigest()[:20]}.txt"


def cached_help(name: str, argv: list[str], build: Callable[[], int]) -> int:
    """Print the cached help of ``name``; without one, run ``build`` (the command, which
    prints its help and exits), print and keep what it printed. A cache that cannot be
    written is skipped."""
    path = help_cache_path(name, argv)
    with contextlib.suppress(OSError):
        sys.stdout.write(path.read_text())
        return 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = build()
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    text = out.getvalue()
    sys.stdout.write(text)
    if status == 0 and text:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.glob(f"{name}-*.txt"):
                old.unlink(missing_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    return status


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

    def run() -> int:
        module = importlib.import_module(f"lightning_tsf.commands.{command.module}")
        return int(getattr(module, command.function)(rest) or 0)

    if command.module in CACHED_HELP and rest in (["-h"], ["--help"]):
        return cached_help(name, rest, run)
    return run()


if __name__ == "__main__":
    sys.exit(main())
