"""t-SNE on linearly separable features, the plots, and features over a real dataloader."""

from __future__ import annotations

import numpy as np
import torch
from conftest import data_module
from PIL import Image

from lightning_tsf.cli import main as tsf
from lightning_tsf.data import make_synthetic_dataset
from lightning_tsf.inference import collect_outputs
from lightning_tsf.models import TimeSformer
from lightning_tsf.viz.plots import plot_confusion, plot_tsne, save_tsne, tsne_embed


def _separable(n_per_class: int = 15, k: int = 3, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Classes at distinct random centres with small noise: linearly separable."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim)) * 5
    labels = np.repeat(np.arange(k), n_per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)) * 0.5, labels


def test_tsne_separates_linearly_separable_classes(tmp_path):
    feats, labels = _separable()
    emb = tsne_embed(feats)
    assert emb.shape == (len(labels), 2)
    # every point's nearest neighbour in the embedding has its class: clusters separate
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).all()
    from sklearn.metrics import silhouette_score

    assert silhouette_score(emb, labels) > 0.5
    image = plot_tsne(emb, labels, ["a", "b", "c"], tmp_path / "tsne.png")
    png = np.asarray(Image.open(tmp_path / "tsne.png").convert("RGB"))
    assert png.shape == image.shape and png.shape[0] > 300
    colourful = np.abs(png.astype(int) - png.mean(-1, keepdims=True)).max(-1) > 40
    assert colourful.sum() > 500  # the coloured points (and the legend) are drawn


def test_confusion_matrix():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 2, 0])
    matrix, image = plot_confusion(labels, preds, ["x", "y", "z"])
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert image.ndim == 3 and image.std() > 10


def test_tsne_command(tmp_path, capsys):
    feats, labels = _separable(6, 2, 8)
    np.save(tmp_path / "features.npy", feats.astype(np.float32))
    rows = "".join(f"{i},v{i}.mp4,{c}\n" for i, c in enumerate(labels))
    (tmp_path / "index.csv").write_text("row,path,label\n" + rows)
    assert tsf(["tsne", str(tmp_path)]) == 0
    png = np.asarray(Image.open(tmp_path / "tsne.png").convert("RGB")).astype(int)
    # the labels of index.csv colour the points: tab10's first two colours (blue, orange),
    # drawn at alpha 0.85 over white, are both there
    for rgb in ((31, 119, 180), (255, 127, 14)):
        drawn = 0.85 * np.array(rgb) + 0.15 * 255
        assert (np.abs(png - drawn).max(-1) < 12).sum() > 50, rgb
    # and the points are the t-SNE of features.npy (seed 0): the same figure drawn here
    want = plot_tsne(tsne_embed(feats, 0), labels, None, tmp_path / "want.png")
    np.testing.assert_array_equal(png, want.astype(int))


def test_save_tsne_over_datamodule(tmp_path):
    root = make_synthetic_dataset(tmp_path / "syn", num_train=4, num_val=4, num_test=8, size=32,
                                  num_frames=8)  # fmt: skip
    dm = data_module(str(root), num_frames=4, sampling_rate=2, crop_size=32,
                         train_scale=(32, 36), num_spatial_crops=3, batch_size=4,
                         num_workers=0)  # fmt: skip
    net = TimeSformer(img_size=32, patch_size=8, num_frames=4, num_classes=4, embed_dim=32,
                      depth=1, num_heads=2)  # fmt: skip
    dm.setup("test")
    out = collect_outputs(net, dm.test_dataloader())
    assert out["features"].shape == (8, 32) and out["probs"].shape == (8, 4)
    assert list(out["video_index"]) == list(range(8))  # 3 views each, averaged per video
    np.testing.assert_allclose(out["probs"].sum(1), 1, rtol=1e-5)
    emb = save_tsne(net, dm.test_dataloader(), tmp_path / "t" / "tsne.png", dm.class_names)
    assert emb.shape == (8, 2)
    assert np.load(tmp_path / "t" / "tsne_features.npy").shape == (8, 32)
    assert (tmp_path / "t" / "tsne.png").stat().st_size > 1000
    assert torch.is_grad_enabled()
