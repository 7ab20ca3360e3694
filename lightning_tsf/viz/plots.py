"""t-SNE and confusion-matrix plots of video-level features and predictions.

Features are the model's normalised cls feature (``forward_features``), averaged over the views
of each video (:func:`lightning_tsf.inference.collect_outputs`), so a t-SNE plot has one point
per video, coloured by its class, as in the paper.
Plots are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state,
safe in callbacks and worker threads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lightning_tsf.data.items import VideoBatch
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD
from lightning_tsf.inference import collect_outputs
from lightning_tsf.models import TimeSformer


def tsne_embed(features: np.ndarray, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """scikit-learn t-SNE of ``(V, D)`` features to ``(V, 2)`` (PCA init, seeded).

    Perplexity defaults to ``min(30, (V - 1) / 3)`` (t-SNE needs perplexity < V).
    """
    from sklearn.manifold import TSNE

    v = len(features)
    if v < 3:
        raise ValueError(f"t-SNE needs at least 3 videos, got {v}")
    perp = perplexity if perplexity is not None else max(1.0, min(30.0, (v - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def render_figure(fig, path: str | Path | None, tight: bool = True) -> np.ndarray:
    """Render ``fig`` (``tight``: with ``tight_layout``); write it to ``path`` (PNG) if given;
    return the RGB image."""
    if tight:
        fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return image


def _name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names and 0 <= i < len(names) else str(i)


def plot_tsne(
    embedding: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    path: str | Path | None = None,
    title: str = "t-SNE of video features",
) -> np.ndarray:
    """Scatter of a 2-D embedding, one colour per class, with a legend; returns the image."""
    fig = new_figure((6.5, 5.5))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    classes = sorted(set(int(c) for c in labels))
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for k, c in enumerate(classes):
        m = labels == c
        ax.scatter(embedding[m, 0], embedding[m, 1], s=18, color=palette(k % palette.N),
                   label=_name(class_names, c), alpha=0.85)  # fmt: skip
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=1.5, frameon=True)
    return render_figure(fig, path)


def plot_confusion(
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str] | None = None,
    path: str | Path | None = None,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix (rows: true class, columns: predicted), counts written in the cells.

    Returns ``(matrix, image)``.
    """
    k = num_classes or int(max(labels.max(initial=0), preds.max(initial=0)) + 1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    size = min(12.0, 2.5 + 0.45 * k)
    fig = new_figure((size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ticks = [_name(class_names, i) for i in range(k)]
    ax.set_xticks(range(k), ticks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), ticks, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for (i, j), n in np.ndenumerate(matrix):
            colour = "white" if n > matrix.max() / 2 else "black"
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"confusion matrix ({matrix.sum()} videos, accuracy {acc:.1%})")
    return matrix, render_figure(fig, path)


def save_tsne(
    model: TimeSformer,
    dataloader: Iterable[VideoBatch],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> np.ndarray:
    """t-SNE plot of a split's per-video features to ``path`` (PNG); the features go next to it
    as ``<stem>_features.npy`` and the labels as ``<stem>_labels.npy``. Returns the embedding.
    The loader's uint8 clips are normalised with ``mean``/``std``."""
    out = collect_outputs(model, dataloader, mean=mean, std=std)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_name(f"{path.stem}_features.npy"), out["features"])
    np.save(path.with_name(f"{path.stem}_labels.npy"), out["labels"])
    emb = tsne_embed(out["features"], seed)
    plot_tsne(emb, out["labels"], class_names, path)
    return emb
