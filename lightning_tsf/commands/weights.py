"""``tsf weights list`` and ``tsf weights download NAME [--dir D]``: the model zoo."""

from __future__ import annotations

import argparse
import sys

from lightning_tsf.models.zoo import CACHE_ENV, ZOO, ZooError, cache_dir, download


def _list() -> None:
    print(f"cache: {cache_dir()} (set {CACHE_ENV} to move it)\n")
    print("| name | dataset | frames x size | scheme | top-1 / top-5 (official) | HF hub | file |")
    print("|---|---|---|---|---|---|---|")
    for e in ZOO.values():
        acc = "" if e.top1 is None else f"{e.top1}" + (f" / {e.top5}" if e.top5 else "")
        print(f"| {e.name} | {e.dataset} | {e.frames_x_size} | {e.scheme} | {acc} | "
              f"{e.hf or ''} | {e.file} |")  # fmt: skip
    print("\nIn an experiment: model.pretrained: zoo:NAME (downloaded on first use). HF hub "
          "copies load as they are too: load_checkpoint(model, hf_model.state_dict()).")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tsf weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the known checkpoints")
    get = sub.add_parser("download", help="download, verify and print the path")
    get.add_argument("name", choices=list(ZOO))
    get.add_argument("--dir", help="target folder (default: the cache)")
    get.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "list":
        _list()
        return 0
    try:
        path = download(args.name, args.dir, progress=not args.no_progress)
    except ZooError as err:
        print(f"tsf weights: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0
