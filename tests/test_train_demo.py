"""The demo's pipeline on tiny data: fit, multi-view test, the heatmap grid and the t-SNE."""

from __future__ import annotations

import re
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


def test_demo_with_every_scheme_prints_its_results(
    tiny_synthetic: Path, tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, capsys
) -> None:
    """``tsf demo`` with axial prints its summary and draws the heatmaps and the t-SNE."""
    from lightning_tsf.commands.demo import main

    net = "--model.net.init_args."
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("--data.data_root")]
    rc = main(["--root", str(tiny_synthetic), "--out", str(tmp_path / "axial"), "--threads", "1",
               *overrides, "--trainer.max_epochs=1", f"{net}attention_type=axial"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "test top-1 (video level, 3 views)" in out
    assert "heatmaps.png (attention rollout)" in out and "tsne.png (t-SNE)" in out
    heatmaps = re.search(r"pictures: +(\S+) \(attention rollout\)", out).group(1)
    assert Image.open(heatmaps).size == (4 * 32, 4 * 2 * 32)
