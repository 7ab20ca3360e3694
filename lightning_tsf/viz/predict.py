"""``tsf predict-videos``, ``tsf heatmap`` and ``tsf extract-features``: a trained model on files.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from lightning_tsf.models import TimeSformer
from lightning_tsf.viz.heatmap import save_heatmap_grid
from lightning_tsf.viz.inference import (
    ClipSettings,
    add_model_args,
    batched,
    collect_videos,
    error_line,
    load_views,
    setup_from_args,
)


def _iter_videos(
    inputs: list[str], settings: ClipSettings, failures: list[str]
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


def predict_video(
    model: TimeSformer, views: Tensor, topk: int, class_names: list[str], batch_size: int = 8
) -> dict[str, Any]:
    """Top-``topk`` classes of the views' averaged softmax: indices, names, probabilities."""
    probs = batched(model, "forward", views, batch_size).softmax(-1).mean(0)
    p, idx = probs.topk(min(topk, len(probs)))
    ids = idx.tolist()
    names = [class_names[i] if i < len(class_names) else str(i) for i in ids]
    return {"indices": ids, "classes": names, "probs": [round(float(x), 6) for x in p]}


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
    per_video: Callable[[TimeSformer, ClipSettings, list[str], tuple], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Load the model, run ``per_video`` on every decodable input; failures become rows too."""
    model, settings, names = setup_from_args(args)
    failures: list[str] = []
    rows = []
    for item in _iter_videos(args.inputs, settings, failures):
        rows.append({"path": item[0], "label": item[1], **per_video(model, settings, names, item)})
    rows += [{"path": p, "error": "cannot decode"} for p in failures]
    return rows, failures


def predict_main(argv: list[str]) -> int:
    """``tsf predict-videos``: top-k classes of each video; JSON/CSV and optional heatmaps."""
    parser = _parser("predict-videos", "Predict the classes of video files.")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--out", help="write predictions to this .json or .csv file")
    parser.add_argument("--save-heatmap", metavar="DIR", help="write a rollout PNG per video")
    args = parser.parse_args(argv)
    count = [0]

    def one(model, settings, names, item) -> dict[str, Any]:
        path, _, views, frames = item
        result = predict_video(model, views, args.topk, names, args.batch_size)
        top = "  ".join(f"{c} ({p:.3f})" for c, p in zip(result["classes"], result["probs"]))
        print(f"{path}: {top}")
        if args.save_heatmap:
            png = Path(args.save_heatmap) / heatmap_name(path, count[0])
            save_heatmap_grid(model, views[settings.centre_view], frames, png,
                              mean=settings.mean, std=settings.std)  # fmt: skip
            result["heatmap"] = str(png)
        count[0] += 1
        return result

    rows, failures = _run(args, one)
    if args.out:
        print(f"wrote {write_predictions(rows, args.out)}")
    return 1 if failures else 0


def heatmap_main(argv: list[str]) -> int:
    """``tsf heatmap``: the attention-rollout heatmap grid (and raw maps) of each video."""
    parser = _parser("heatmap", "Attention rollout heatmaps of video files.")
    parser.add_argument("--out-dir", required=True, help="PNG grids and maps.pt go here")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    maps: dict[str, Tensor] = {}

    def one(model, settings, names, item) -> dict[str, Any]:
        path, _, views, frames = item
        png = out / heatmap_name(path, len(maps))
        maps[path] = save_heatmap_grid(model, views[settings.centre_view], frames, png,
                                       mean=settings.mean, std=settings.std)[0]  # fmt: skip
        print(f"{path}: {png}")
        return {"heatmap": str(png)}

    _, failures = _run(args, one)
    if maps:
        torch.save(maps, out / "maps.pt")
    return 1 if failures else 0


@torch.no_grad()
def video_features(
    model: TimeSformer, views: Tensor, frame_tokens: bool = False, batch_size: int = 8
) -> tuple[Tensor, Tensor | None]:
    """cls feature ``(D,)`` averaged over views, and optionally per-frame tokens ``(T, D)``:
    the normalised patch tokens of each frame averaged over its patches (and over views)."""
    feats = batched(model, "forward_features", views, batch_size).mean(0)
    if not frame_tokens:
        return feats, None
    if model.attention_type == "space_only":
        raise ValueError("space_only averages frames inside the model: no per-frame tokens")
    device = next(model.parameters()).device
    per_view = []
    for chunk in views.split(batch_size):
        tokens, _ = model.forward_tokens(chunk.to(device))
        patches = model.norm(tokens)[:, 1:].float().cpu()  # (B, N*T, D), order (h w t)
        per_view.append(rearrange(patches, "b (n t) d -> b t n d", t=views.shape[2]).mean(2))
    return feats, torch.cat(per_view).mean(0)


def extract_features_main(argv: list[str]) -> int:
    """``tsf extract-features``: ``features.npy`` (V, D), ``index.csv``, optional tokens.

    ``index.csv`` has one row per feature row: ``row,path,label``. ``--frame-tokens`` also
    writes ``frame_tokens.pt``, a ``(V, T, D)`` tensor.
    """
    parser = _parser("extract-features", "Write one feature vector per video.")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--frame-tokens", action="store_true", help="also per-frame tokens")
    args = parser.parse_args(argv)
    feats: list[Tensor] = []
    tokens: list[Tensor] = []

    def one(model, settings, names, item) -> dict[str, Any]:
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
