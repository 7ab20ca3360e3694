"""``tsf weights list`` and ``tsf weights download [NAME ...] [--from URL|DIR] [--dir D]``."""

from __future__ import annotations

import os
import sys

from lightning_tsf.commands.help import HelpFormatter, command_parser
from lightning_tsf.models.names import CACHE_ENV, MIRROR_ENV


def _list() -> None:
    from lightning_tsf.models.zoo import ZOO, cache_dir

    print(f"cache: {cache_dir()} (set {CACHE_ENV} to move it)\n")
    print("| name | dataset | frames x size | scheme | top-1 / top-5 (official) | HF hub | file |")
    print("|---|---|---|---|---|---|---|")
    for e in ZOO.values():
        top1, top5 = e.accuracy or (None, None)
        acc = "" if top1 is None else f"{top1}" + (f" / {top5}" if top5 else "")
        print(f"| {e.name} | {e.dataset} | {e.frames_x_size} | {e.scheme} | {acc} | "
              f"{e.hf or ''} | {e.file} |")  # fmt: skip
    print(
        "\nIn an experiment: model.pretrained: zoo:NAME (downloaded on first use: the release "
        f"link, then the HF hub copy; only the mirror when {MIRROR_ENV} is set). HF hub "
        "copies load as they are too: load_checkpoint(model, hf_model.state_dict())."
    )


def _download(names: list[str], mirror: str | None, directory: str | None,
              progress: bool) -> int:  # fmt: skip
    """Fetch ``names`` (every entry from a mirror when none is named); 2 on any failure."""
    from lightning_tsf.models.zoo import ZOO, NotInSource, ZooError, entry, fetch

    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if not names and not mirror:
        print("tsf weights: name the checkpoints to download (`tsf weights list`), or give "
              "--from URL|DIR to fetch every one a mirror has", file=sys.stderr)  # fmt: skip
        return 2
    try:
        items = [entry(n) for n in names] if names else list(ZOO.values())
    except KeyError as err:
        print(f"tsf weights: {err.args[0]}", file=sys.stderr)
        return 2
    status, fetched = 0, 0
    for item in items:
        try:
            got = fetch(item, directory, mirror=mirror, progress=progress)
        except NotInSource as err:
            if names:  # asked for by name: a failure
                print(f"tsf weights: {err}", file=sys.stderr)
                status = 2
            else:
                print(f"tsf weights: {item.name}: not in {mirror}, skipped", file=sys.stderr)
            continue
        except ZooError as err:
            print(f"tsf weights: {err}", file=sys.stderr)
            status = 2
            continue
        fetched += 1
        print(got.path if names else f"{item.name}: {got.path}")
    if not fetched and not names:
        print(f"tsf weights: {mirror} holds none of the zoo's files (`tsf weights list`)",
              file=sys.stderr)  # fmt: skip
        status = 2
    return status


def main(argv: list[str]) -> int:
    parser = command_parser("weights", __doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the known checkpoints", formatter_class=HelpFormatter)
    get = sub.add_parser("download", help="download, verify and print the paths",
                         formatter_class=HelpFormatter)  # fmt: skip
    get.add_argument("names", nargs="*", metavar="NAME", help="default with --from: all")
    get.add_argument("--from", dest="mirror", metavar="URL|DIR",
                     help=f"a mirror (http(s) base URL or folder holding the zoo's file names), "
                          f"the only source then; default ${MIRROR_ENV}")  # fmt: skip
    get.add_argument("--dir", help="target folder (default: the cache)")
    get.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "list":
        _list()
        return 0
    return _download(args.names, args.mirror, args.dir, not args.no_progress)
