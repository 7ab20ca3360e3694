"""The demo's pipeline on tiny data: fit, multi-view test, the heatmap grid and the t-SNE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from lightning_tsf.commands.demo import run_experiment
from lightning_tsf.configs import config_path


def test_demo_pipeline_writes_summary_and_pictures(
    tiny_synthetic: Path, tiny_overrides: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    overrides = [*tiny_overrides(tmp_path), "--trainer.max_epochs=1", "--trainer.max_time=null"]
    res = run_experiment(config_path(), tiny_synthetic, tmp_path, overrides, pictures=True)
    assert res["videos"] == res["total_videos"] == 7 and not res["failed"]
    assert 0.0 <= res["acc1"] <= res["acc5"] <= 1.0
    assert Path(res["checkpoint"]).is_file() and Path(res["config"]).is_file()
    heat = Image.open(res["heatmaps"])
    # one clip per class (4), each a row of frames over a row of overlays: 2 * 32 px high,
    # 4 frames of 32 px wide
    assert heat.size == (4 * 32, 4 * 2 * 32)
    assert Path(res["tsne"]).is_file()
    assert Path(res["tsne"]).with_name("tsne_features.npy").is_file()
