"""``tsf predict-files``, ``heatmap-files``, ``features-files``, ``timeline`` and ``tsf tsne``:
a trained model on video files. The work is done by :class:`lightning_tsf.predictor.Predictor`;
these commands parse options, print and write files.

Each video is decoded into the evaluation views of the checkpoint's input record (the views
``tsf test`` scores; ``--num-temporal-views``/``--num-spatial-crops``/``--test-short-side``
change them); predictions average the views' softmax, features average the views' cls
features. A video that cannot be decoded gets one ``cannot decode PATH: reason`` line on stderr
and the others still run; the exit status is 1 when any video failed. A bad option or
checkpoint, or inputs that name no video, get one ``tsf <command>: error: ...`` line and exit
status 2.

Model, decoding and plotting code is imported inside the commands: ``--help`` imports none.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_tsf.commands.help import command_parser
from lightning_tsf.commands.options import add_model_source, add_view_options, model_source
from lightning_tsf.data.annotations import read_class_names

if TYPE_CHECKING:
    from lightning_tsf.predictor import Predictor
    from lightning_tsf.results import VideoError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the file commands: inputs, model source and view settings."""
    parser.add_argument("inputs", nargs="+", help="video files, folders or annotation files")
    parser.add_argument("--checkpoint", required=True,
                        help="Lightning .ckpt, official .pyth, HF file or zoo:NAME")  # fmt: skip
    parser.add_argument("--class-names", help="class-name file (one per line, or JSON)")
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--num-workers", type=int,
                        help="decoding processes (default: every usable core; 0: decode "
                        "in this process)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_source(parser)
    add_view_options(parser)


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """A :class:`Predictor` from the checkpoint, with the options' view settings over its own."""
    from lightning_tsf.data.inputs import VIEW_OPTIONS
    from lightning_tsf.predictor import Predictor

    return Predictor.from_checkpoint(
        args.checkpoint,
        args.device,
        class_names=read_class_names(args.class_names) if args.class_names else None,
        batch_size=args.batch_size,
        progress=False if args.no_progress else None,
        backend=args.backend,
        num_workers=args.num_workers,
        **model_source(args),
        **{k: getattr(args, k) for k in VIEW_OPTIONS},
    )


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, description)
    add_model_args(parser)
    return parser


def _start(prog: str, args: argparse.Namespace) -> Predictor | None:
    """The predictor, or None after a one-line error (inputs that name no video, a bad
    checkpoint, file or option)."""
    from lightning_tsf.inference import collect_videos
    from lightning_tsf.models.checkpoint import CheckpointError

    try:
        collect_videos(args.inputs)  # nothing to do is an error, found before the model loads
        return predictor_from_args(args)
    except (FileNotFoundError, CheckpointError, ValueError, OSError) as err:
        print(f"tsf {prog}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return None


def _report(errors: list[VideoError]) -> int:
    """Print the failed videos; the exit status: 1 when any video failed."""
    for e in errors:
        print(e.message, file=sys.stderr)
    return 1 if errors else 0


def predict_main(argv: list[str]) -> int:
    """``tsf predict-files``: top-k classes of each video; JSON/CSV and optional heatmaps."""
    parser = _parser("predict-files", "Predict the classes of video files.")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--out", help="write predictions to this .json or .csv file, or to a "
                        ".jsonl file one line per video as each is done")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="with --out X.jsonl: skip the videos already in it, append the rest")
    parser.add_argument("--save-heatmap", metavar="DIR", help="write a rollout PNG per video")
    args = parser.parse_args(argv)
    jsonl = bool(args.out) and Path(args.out).suffix.lower() == ".jsonl"
    if args.resume and not jsonl:
        print("tsf predict-files: error: --resume needs --out FILE.jsonl", file=sys.stderr)
        return 2
    if (predictor := _start("predict-files", args)) is None:
        return 2
    from lightning_tsf.results import write_predictions

    if jsonl:
        return _predict_lines(predictor, args)
    result = predictor.predict(args.inputs, args.topk)
    for p in result:
        print(f"{p.path}: " + "  ".join(f"{c} ({x:.3f})" for c, x in zip(p.classes, p.probs)))
    rows = result.rows()
    if args.save_heatmap:
        for row, heat in zip(rows, predictor.heatmaps(args.inputs, args.save_heatmap)):
            row["heatmap"] = heat.png
    if args.out:
        print(f"wrote {write_predictions(rows, args.out)}")
    return _report(result.errors)


def _predict_lines(predictor: Predictor, args: argparse.Namespace) -> int:
    """``--out X.jsonl``: one JSON line per video (a failed one: ``{"path", "error"}``) in
    input order, written and flushed as each is done, so a killed run loses at most the videos
    in flight; ``--resume`` keeps the complete lines and skips their videos."""
    from lightning_tsf.results import JsonLines, VideoError

    failed = 0
    with JsonLines(args.out, resume=args.resume) as out:
        if out.done:
            print(f"resuming: {len(out.done)} video(s) already in {out.path}")
        skip = {r["path"] for r in out.done}
        for item in predictor.iter_predict(args.inputs, args.topk, skip):
            if isinstance(item, VideoError):
                failed += 1
                print(item.message, file=sys.stderr)
            else:
                print(f"{item.path}: " + "  ".join(f"{c} ({x:.3f})"
                                                   for c, x in zip(item.classes, item.probs)))
            out.write(item.to_dict())
    if args.save_heatmap:
        predictor.heatmaps(args.inputs, args.save_heatmap)
    print(f"wrote {out.path}")
    return 1 if failed else 0


def heatmap_main(argv: list[str]) -> int:
    """``tsf heatmap-files``: the attention-rollout heatmap grid (and raw maps) of each video."""
    parser = _parser("heatmap-files", "Attention rollout heatmaps of video files.")
    parser.add_argument("--out-dir", required=True, help="PNG grids and maps.pt go here")
    args = parser.parse_args(argv)
    if (predictor := _start("heatmap-files", args)) is None:
        return 2
    result = predictor.heatmaps(args.inputs, args.out_dir)
    for heat in result:
        print(f"{heat.path}: {heat.png}")
    return _report(result.errors)


def extract_features_main(argv: list[str]) -> int:
    """``tsf features-files``: ``features.npy`` (V, D), ``index.csv``, optional tokens.

    ``index.csv`` has one row per feature row: ``row,path,label``. ``--frame-tokens`` also
    writes ``frame_tokens.pt``, a ``(V, T, D)`` tensor.
    """
    parser = _parser("features-files", "Write one feature vector per video.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--frame-tokens", action="store_true", help="also per-frame tokens")
    args = parser.parse_args(argv)
    if (predictor := _start("features-files", args)) is None:
        return 2
    import numpy as np
    import torch

    result = predictor.features(args.inputs, args.frame_tokens)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "features.npy", result.array)
    with (out / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "path", "label"])
        writer.writerows([i, *row] for i, row in enumerate(zip(result.paths, result.labels)))
    if result.frame_tokens is not None and len(result.frame_tokens):
        torch.save(torch.from_numpy(result.frame_tokens), out / "frame_tokens.pt")
    print(f"wrote {len(result)} feature vectors to {out}")
    return _report(result.errors)


def timeline_main(argv: list[str]) -> int:
    """``tsf timeline``: top-k classes of sliding windows over long videos.

    Per video, ``<out-dir>/<NNNN>_<stem>.csv`` (one row per window: start/end seconds and
    ``top{k}``/``prob{k}``), ``.json`` (the same with each window's source frames and the
    video's fps and length) and ``.png`` (a strip: top-1 class and probability over time).
    Only whole windows are scored (the last ends at or before the video's end); a video
    shorter than one window gets one window over all of it.
    """
    parser = _parser("timeline", "Top-k classes of sliding windows over long videos.")
    parser.add_argument("--window", type=float, default=2.0, help="window length in seconds")
    parser.add_argument("--stride", type=float, default=1.0, help="seconds between windows")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--out-dir", required=True, help="CSV, JSON and PNG per video go here")
    args = parser.parse_args(argv)
    for option in ("window", "stride", "topk"):
        if getattr(args, option) <= 0:
            print(f"tsf timeline: error: --{option} must be positive, got {getattr(args, option)}",
                  file=sys.stderr)  # fmt: skip
            return 2
    if (predictor := _start("timeline", args)) is None:
        return 2
    from lightning_tsf.inference import collect_videos, error_line
    from lightning_tsf.results import VideoError, numbered_name

    errors = []
    for i, (path, _) in enumerate(collect_videos(args.inputs)):
        try:
            timeline = predictor.timeline(path, args.window, args.stride, args.topk)
        except Exception as err:  # any undecodable file: one line, then carry on
            errors.append(VideoError(path, error_line(err)))
            continue
        written = timeline.save(args.out_dir, numbered_name(path, i, ""))
        note = f" ({timeline.note})" if timeline.note else ""
        print(f"{path}: {len(timeline.windows)} window(s){note}: {written[0]}")
    return _report(errors)


def tsne_main(argv: list[str]) -> int:
    """``tsf tsne``: plot the features written by ``tsf features-files``, coloured by label."""
    p = command_parser("tsne", "t-SNE plot of video features.")
    p.add_argument("features_dir", help="folder with features.npy and index.csv")
    p.add_argument("--class-names", help="class-name file")
    p.add_argument("--out", help="PNG path (default: <features_dir>/tsne.png)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import numpy as np

    from lightning_tsf.viz.plots import plot_tsne, tsne_embed

    root = Path(args.features_dir)
    feats = np.load(root / "features.npy")
    with (root / "index.csv").open() as f:
        labels = np.array([int(r["label"]) for r in csv.DictReader(f)])
    names = read_class_names(args.class_names) if args.class_names else None
    out = Path(args.out or root / "tsne.png")
    plot_tsne(tsne_embed(feats, args.seed), labels, names, out)
    print(f"wrote {out}")
    return 0
