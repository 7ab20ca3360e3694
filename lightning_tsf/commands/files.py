"""``tsf predict-files``, ``tsf heatmap-files``, ``tsf features-files`` and ``tsf tsne``:
a trained model on video files (the work is done by :mod:`lightning_tsf.inference`).

Each video is decoded into the evaluation views (``--num-temporal-views`` clips x
``--num-spatial-crops`` crops); predictions average the views' softmax, features average the
views' cls features. A video that cannot be decoded gets one ``error: ...`` line on stderr and
the others still run; the exit status is 1 when any video failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_tsf.data.annotations import read_class_names
from lightning_tsf.data.decode import BACKENDS
from lightning_tsf.data.sampling import SAMPLERS
from lightning_tsf.data.views import clip_frame_indices
from lightning_tsf.inference import (
    DataSettings,
    collect_videos,
    error_line,
    load_model,
    load_views,
    predict_video,
    video_features,
)
from lightning_tsf.models import BLOCKS, TimeSformer
from lightning_tsf.viz.heatmap import save_heatmap_grid
from lightning_tsf.viz.plots import plot_tsne, tsne_embed


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the file commands: inputs, model source and view settings."""
    parser.add_argument("inputs", nargs="+", help="video files, folders or annotation files")
    parser.add_argument("--checkpoint", required=True, help="Lightning/official/HF checkpoint")
    parser.add_argument("--preset", help="model preset, when the checkpoint has no config")
    parser.add_argument("--model-config", help="YAML of TimeSformer arguments")
    parser.add_argument("--attention-type", choices=list(BLOCKS), help="override the scheme")
    parser.add_argument("--class-names", help="class-name file (one per line, or JSON)")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: checkpoint)")
    parser.add_argument("--sampling-rate", type=int, help="frame stride of dense clips")
    parser.add_argument("--sampler", choices=SAMPLERS, help="clip sampler")
    parser.add_argument("--crop-size", type=int, help="crop size (default: model img_size)")
    parser.add_argument("--num-spatial-crops", type=int, default=1, choices=(1, 3))
    parser.add_argument("--num-temporal-views", type=int, default=1)
    parser.add_argument("--backend", choices=BACKENDS, help="decoder (default: checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def setup_from_args(args: argparse.Namespace) -> tuple[TimeSformer, DataSettings]:
    """Model (on ``args.device``) and data settings: the checkpoint's, then the options'."""
    overrides = {"attention_type": args.attention_type} if args.attention_type else None
    model, settings = load_model(args.checkpoint, args.preset, args.model_config, overrides)
    model.to(args.device)
    given = {
        "num_frames": args.num_frames,
        "sampling_rate": args.sampling_rate,
        "sampler": args.sampler,
        "crop_size": args.crop_size,
        "num_spatial_crops": args.num_spatial_crops,
        "num_temporal_views": args.num_temporal_views,
        "backend": args.backend,
    }
    settings.spec = replace(settings.spec, **{k: v for k, v in given.items() if v is not None})
    if args.class_names:
        settings.class_names = read_class_names(args.class_names)
    return model, settings


def _iter_videos(
    inputs: list[str], settings: DataSettings, failures: list[str]
) -> Iterator[tuple[str, int, Tensor, np.ndarray]]:
    """Decoded ``(path, label, views, centre frames)``; failures printed and collected."""
    for path, label in collect_videos(inputs):
        try:
            views, frames = load_views(path, settings)
        except Exception as err:  # any undecodable file: one line, then carry on
            print(error_line(err), file=sys.stderr)
            failures.append(path)
            continue
        yield path, label, views, frames


def heatmap_name(path: str, index: int) -> str:
    """PNG file name for a video's heatmap: its stem, prefixed by its position (unique)."""
    return f"{index:04d}_{Path(path).stem}.png"


def save_heatmap(
    model: TimeSformer, settings: DataSettings, item: tuple[str, int, Tensor, np.ndarray], png: Path
) -> Tensor:
    """The rollout figure of a decoded video's centre view (``item`` from the decoding loop),
    titled with its file name, label and prediction, frames labelled with their source index."""
    path, label, views, frames = item
    spec = settings.spec
    temporal = spec.split(spec.centre_view)[0]
    return save_heatmap_grid(
        model, views[spec.centre_view], frames, png, names=[Path(path).name], labels=[label],
        class_names=settings.class_names, frame_indices=[clip_frame_indices(path, spec, temporal)],
        mean=settings.mean, std=settings.std,
    )  # fmt: skip


def write_predictions(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Predictions as JSON (a list) or CSV (one row per video: ``top{k}``/``prob{k}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(rows, indent=1))
        return path
    k = max((len(r.get("classes", [])) for r in rows), default=0)
    fields = ["path", "label", "error"] + [f"{n}{i + 1}" for i in range(k) for n in ("top", "prob")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for r in rows:
            row = {"path": r["path"], "label": r.get("label", ""), "error": r.get("error", "")}
            for i, (c, p) in enumerate(zip(r.get("classes", []), r.get("probs", []))):
                row[f"top{i + 1}"], row[f"prob{i + 1}"] = c, p
            writer.writerow(row)
    return path


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"tsf {prog}", description=description)
    add_model_args(parser)
    return parser


def _run(
    args: argparse.Namespace,
    per_video: Callable[[TimeSformer, DataSettings, tuple], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Load the model, run ``per_video`` on every decodable input; failures become rows too."""
    model, settings = setup_from_args(args)
    failures: list[str] = []
    rows = []
    for item in _iter_videos(args.inputs, settings, failures):
        rows.append({"path": item[0], "label": item[1], **per_video(model, settings, item)})
    rows += [{"path": p, "error": "cannot decode"} for p in failures]
    return rows, failures


def predict_main(argv: list[str]) -> int:
    """``tsf predict-files``: top-k classes of each video; JSON/CSV and optional heatmaps."""
    parser = _parser("predict-files", "Predict the classes of video files.")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--out", help="write predictions to this .json or .csv file")
    parser.add_argument("--save-heatmap", metavar="DIR", help="write a rollout PNG per video")
    args = parser.parse_args(argv)
    count = [0]

    def one(model, settings, item) -> dict[str, Any]:
        path, views = item[0], item[2]
        result = predict_video(model, views, args.topk, settings.class_names, args.batch_size)
        top = "  ".join(f"{c} ({p:.3f})" for c, p in zip(result["classes"], result["probs"]))
        print(f"{path}: {top}")
        if args.save_heatmap:
            png = Path(args.save_heatmap) / heatmap_name(path, count[0])
            save_heatmap(model, settings, item, png)
            result["heatmap"] = str(png)
        count[0] += 1
        return result

    rows, failures = _run(args, one)
    if args.out:
        print(f"wrote {write_predictions(rows, args.out)}")
    return 1 if failures else 0


def heatmap_main(argv: list[str]) -> int:
    """``tsf heatmap-files``: the attention-rollout heatmap grid (and raw maps) of each video."""
    parser = _parser("heatmap-files", "Attention rollout heatmaps of video files.")
    parser.add_argument("--out-dir", required=True, help="PNG grids and maps.pt go here")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    maps: dict[str, Tensor] = {}

    def one(model, settings, item) -> dict[str, Any]:
        path = item[0]
        png = out / heatmap_name(path, len(maps))
        maps[path] = save_heatmap(model, settings, item, png)[0]
        print(f"{path}: {png}")
        return {"heatmap": str(png)}

    _, failures = _run(args, one)
    if maps:
        torch.save(maps, out / "maps.pt")
    return 1 if failures else 0


def extract_features_main(argv: list[str]) -> int:
    """``tsf features-files``: ``features.npy`` (V, D), ``index.csv``, optional tokens.

    ``index.csv`` has one row per feature row: ``row,path,label``. ``--frame-tokens`` also
    writes ``frame_tokens.pt``, a ``(V, T, D)`` tensor.
    """
    parser = _parser("features-files", "Write one feature vector per video.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--frame-tokens", action="store_true", help="also per-frame tokens")
    args = parser.parse_args(argv)
    feats: list[Tensor] = []
    tokens: list[Tensor] = []

    def one(model, settings, item) -> dict[str, Any]:
        f, t = video_features(model, item[2], args.frame_tokens, args.batch_size)
        feats.append(f)
        if t is not None:
            tokens.append(t)
        return {}

    rows, failures = _run(args, one)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    good = [r for r in rows if "error" not in r]
    dim = feats[0].shape[-1] if feats else 0
    np.save(out / "features.npy", torch.stack(feats).numpy() if feats else np.zeros((0, dim)))
    with (out / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "path", "label"])
        writer.writerows([i, r["path"], r["label"]] for i, r in enumerate(good))
    if tokens:
        torch.save(torch.stack(tokens), out / "frame_tokens.pt")
    print(f"wrote {len(good)} feature vectors to {out}")
    return 1 if failures else 0


def tsne_main(argv: list[str]) -> int:
    """``tsf tsne``: plot the features written by ``tsf features-files``, coloured by label."""
    p = argparse.ArgumentParser(prog="tsf tsne", description="t-SNE plot of video features.")
    p.add_argument("features_dir", help="folder with features.npy and index.csv")
    p.add_argument("--class-names", help="class-name file")
    p.add_argument("--out", help="PNG path (default: <features_dir>/tsne.png)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    root = Path(args.features_dir)
    feats = np.load(root / "features.npy")
    with (root / "index.csv").open() as f:
        labels = np.array([int(r["label"]) for r in csv.DictReader(f)])
    names = read_class_names(args.class_names) if args.class_names else None
    out = Path(args.out or root / "tsne.png")
    plot_tsne(tsne_embed(feats, args.seed), labels, names, out)
    print(f"wrote {out}")
    return 0
