"""``tsf check-videos``, ``tsf prepare``, ``tsf shard`` and ``tsf make-synthetic`` (argparse,
return codes)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

from lightning_tsf.commands.help import command_parser
from lightning_tsf.data.annotations import DEFAULT_CLASS_FILES, DEFAULT_SPLITS, FORMATS
from lightning_tsf.data.names import BACKENDS


def add_outside_option(p: argparse.ArgumentParser) -> None:
    """``--allow-outside-root``: the opt-in to paths outside the dataset (one definition)."""
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept annotated paths (and files) that resolve outside the dataset root (.., "
        "symlinks); by default each is an error naming file and line",
    )


def check_videos_main(argv: list[str]) -> int:
    """List unreadable videos of a dataset's splits (files, or a `tsf shard` output: a folder
    or s3://bucket/prefix, every sample decoded); exit 1 if there are any, 2 if an annotation
    file or the shards cannot be read (one line naming file and entry)."""
    p = command_parser("check-videos", check_videos_main.__doc__)
    p.add_argument("data_root", help="dataset root, or a shard folder / s3:// prefix")
    p.add_argument("--format", choices=FORMATS, default="kinetics",
                   help="annotation format (class sub-folders: folder); shards say their own")
    p.add_argument(
        "--splits", nargs="+", help="annotation files (folders for 'folder'; split names for "
        "shards); default: all three"
    )  # fmt: skip
    p.add_argument("--class-names-file", help="default: classnames.txt / labels.json")
    p.add_argument("--video-dir", default="", help="SSv2: folder of the videos under data_root")
    p.add_argument("--video-ext", default=".webm", help="SSv2: video file extension")
    p.add_argument(
        "--unlabelled",
        action="store_true",
        help="the splits may list unlabelled entries (a prediction set); by default every entry "
        "needs a label, as training, validation and test do",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--full", action="store_true", help="decode every frame (slow)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--output", help="also write 'path<TAB>reason' lines to this file")
    add_outside_option(p)
    p.add_argument("--storage-options", type=json.loads, default=None,
                   help="shards in object storage: JSON of boto3 client keywords; default: "
                   "the AWS variables")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from lightning_tsf.data.shard_format import is_shard_folder

    try:
        shards = is_shard_folder(args.data_root)
        lines, total = _check_shards(args) if shards else _check_files(args)
    except (OSError, ValueError) as err:  # AnnotationError, ShardError, StorageError
        print(f"tsf check-videos: {err}{folder_hint(args.data_root, args.format)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.output:
        with open(args.output, "w") as f:
            f.write("".join(line + "\n" for line in lines))
    for line in lines:
        print(line)
    print(f"{total - len(lines)}/{total} videos readable, {len(lines)} unreadable",
          file=sys.stderr)  # fmt: skip
    return 1 if lines else 0


def _check_files(args: argparse.Namespace) -> tuple[list[str], int]:
    """``path<TAB>reason`` of the unreadable videos the annotation files list, and how many
    distinct videos they list."""
    from lightning_tsf.data.annotations import load_class_names, load_split
    from lightning_tsf.data.check import check_videos

    splits = list(dict.fromkeys(args.splits or DEFAULT_SPLITS[args.format]))
    class_file = args.class_names_file or DEFAULT_CLASS_FILES[args.format]
    names = load_class_names(args.format, args.data_root, class_file, splits[0])
    read = partial(load_split, args.format, args.data_root, class_names=names,
                   class_names_file=class_file, video_dir=args.video_dir,
                   video_ext=args.video_ext, labelled=not args.unlabelled,
                   allow_outside=args.allow_outside_root)  # fmt: skip
    paths = [r.path for split in splits for r in read(split=split)]
    bad = check_videos(paths, backend=args.backend, full=args.full, num_workers=args.workers,
                       progress=not args.no_progress)  # fmt: skip
    return [f"{path}\t{reason}" for path, reason in bad], len(set(paths))


def _check_shards(args: argparse.Namespace) -> tuple[list[str], int]:
    """``split<TAB>id<TAB>reason`` of the unreadable samples of a shard output (every sample
    of every split decoded from the stream), and how many samples were checked."""
    from lightning_tsf.data.shard_check import check_shards

    result = check_shards(args.data_root, args.splits, backend=args.backend, full=args.full,
                          num_workers=args.workers, options=args.storage_options,
                          progress=not args.no_progress)  # fmt: skip
    left = {split: n for split, n in result.left_out.items() if n}
    if left:
        where = ", ".join(f"{n} in {split}.failed.txt" for split, n in left.items())
        print(f"tsf check-videos: sources left out when the shards were written: {where}",
              file=sys.stderr)  # fmt: skip
    return [f"{s}\t{name}\t{why}" for s, name, why in result.bad], sum(result.checked.values())


def shards_given(prog: str, src: str) -> bool:
    """True, after one line on stderr, when ``src`` is a `tsf shard` output (local or
    object storage): these commands read a dataset's video files, and shards hold prepared
    videos already."""
    from lightning_tsf.data.shard_format import is_shard_folder

    if not is_shard_folder(src):
        return False
    print(f"{prog}: {src} is a `tsf shard` output (its videos are prepared already); {prog} "
          "reads a dataset's video files: give the dataset it was written from", file=sys.stderr)
    return True


def folder_hint(root: str, fmt: str) -> str:
    """A hint for a folder dataset (class sub-folders under train/val/test) read with another
    format: ``; ... pass --format folder`` (empty when that is not the case)."""
    from lightning_tsf.data.shard_format import is_shard_folder

    train = Path(root) / DEFAULT_SPLITS["folder"][0]
    if fmt == "folder" or not train.is_dir() or is_shard_folder(root):
        return ""
    if not any(p.is_dir() for p in train.iterdir()):
        return ""
    return (f"; {root} has a {DEFAULT_SPLITS['folder'][0]}/ folder: a folder dataset (one "
            "sub-folder per class)? pass --format folder")


def prepare_main(argv: list[str]) -> int:
    """Re-encode a dataset into the prepared format (fast random access) in a new root."""
    from lightning_tsf.data.prepare import Encoding, prepare_dataset

    p = command_parser("prepare", prepare_main.__doc__)
    p.add_argument("src_root")
    p.add_argument("dst_root", help="a new folder outside src_root")
    p.add_argument("--short-side", type=int, default=256, help="256 (official) or 320")
    p.add_argument("--keyint", type=int, default=Encoding.keyint,
                   help="frames between keyframes (1: all-intra, faster, ~1.6x larger)")
    p.add_argument("--crf", type=int, default=Encoding.crf, help="x264 quality (lower = better)")
    p.add_argument("--preset", default=Encoding.preset, help="x264 speed preset")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-progress", action="store_true")
    add_outside_option(p)
    args = p.parse_args(argv)
    if shards_given("tsf prepare", args.src_root):
        return 2
    try:
        report = prepare_dataset(
            args.src_root,
            args.dst_root,
            args.short_side,
            encoding=Encoding(args.keyint, args.crf, args.preset),
            num_workers=args.workers,
            progress=not args.no_progress,
            allow_outside=args.allow_outside_root,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"tsf prepare: {err}", file=sys.stderr)
        return 2
    for path, reason in report.failed:
        print(f"{path}\t{reason}")
    print(report.summary(), file=sys.stderr)
    return 1 if report.failed else 0


def shard_main(argv: list[str]) -> int:
    """Write a dataset's train/val/test splits as LitData shards of prepared-format videos;
    exit 1 if some sources were unreadable (listed in OUT/<split>.failed.txt), 2 on an error."""
    from lightning_tsf.data.prepare import Encoding

    p = command_parser("shard", shard_main.__doc__)
    p.add_argument("src_root")
    p.add_argument("out", help="a new local folder (s3://bucket/prefix: object storage)")
    p.add_argument("--format", choices=FORMATS, default="kinetics")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}-split", help="annotation file (folder for 'folder') under "
                       "src_root; default: the format's")  # fmt: skip
    p.add_argument("--class-names-file", help="default: classnames.txt / labels.json")
    p.add_argument("--video-dir", default="", help="SSv2: folder of the videos under src_root")
    p.add_argument("--video-ext", default=".webm", help="SSv2: video file extension")
    p.add_argument("--short-side", type=int, default=256, help="256 (official) or 320")
    p.add_argument("--keyint", type=int, default=Encoding.keyint, help="frames between keyframes")
    p.add_argument("--crf", type=int, default=Encoding.crf, help="x264 quality (lower = better)")
    p.add_argument("--preset", default=Encoding.preset, help="x264 speed preset")
    p.add_argument("--chunk-bytes", default="64MB", help="target size of one chunk file")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--storage-options", type=json.loads, default=None,
                   help="object storage: JSON of boto3 client keywords (endpoint_url, ...); "
                   "default: the AWS variables")  # fmt: skip
    p.add_argument("--staging", help="object storage: local folder the splits are written to "
                   "before upload (default: under the cache)")  # fmt: skip
    add_outside_option(p)
    args = p.parse_args(argv)
    from lightning_tsf.data.shards import ShardError, write_shards

    splits = {s: v for s in ("train", "val", "test") if (v := getattr(args, f"{s}_split"))}
    if shards_given("tsf shard", args.src_root):
        return 2
    try:
        report = write_shards(
            args.src_root, args.out, format=args.format, splits=splits,
            class_names_file=args.class_names_file, video_dir=args.video_dir,
            video_ext=args.video_ext, short_side=args.short_side,
            encoding=Encoding(args.keyint, args.crf, args.preset), chunk_bytes=args.chunk_bytes,
            num_workers=args.workers, progress=not args.no_progress,
            storage_options=args.storage_options, staging=args.staging,
            allow_outside=args.allow_outside_root,
        )  # fmt: skip
    except (OSError, ValueError, ShardError) as err:  # AnnotationError is a ValueError
        print(f"tsf shard: {err}{folder_hint(args.src_root, args.format)}", file=sys.stderr)
        return 2
    failed = [(split, path, why) for split, rows in report.failed.items() for path, why in rows]
    for split, path, why in failed:
        print(f"{split}\t{path}\t{why}")
    print(f"tsf shard: {report.summary()}", file=sys.stderr)
    return 1 if failed else 0


def synthetic_main(argv: list[str]) -> int:
    """Write the synthetic motion-direction dataset (see lightning_tsf.data.synthetic)."""

    p = command_parser("make-synthetic", synthetic_main.__doc__)
    p.add_argument("root")
    p.add_argument("--num-train", type=int, default=512)
    p.add_argument("--num-val", type=int, default=128)
    p.add_argument("--num-test", type=int, default=128)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=4, choices=(2, 4, 6, 8))
    p.add_argument("--motion", default="translate", choices=("translate", "orbit"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    from lightning_tsf.data.synthetic import make_synthetic_dataset

    start = time.perf_counter()
    root = make_synthetic_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        size=args.size,
        num_frames=args.num_frames,
        fps=args.fps,
        seed=args.seed,
        num_classes=args.num_classes,
        motion=args.motion,
        num_workers=args.workers,
        progress=True,
    )
    print(f"synthetic dataset at {root} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0
