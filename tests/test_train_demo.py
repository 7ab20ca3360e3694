"""The demo's pipeline on tiny data: fit, multi-view test, the heatmap figure and the t-SNE, and
the W&B offline run's dashboard (heatmaps, t-SNE, confusion matrix, predictions table)."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_overrides
from PIL import Image

from lightning_tsf.commands.demo import run_experiment
from lightning_tsf.configs import config_path


@pytest.fixture(scope="module")
def demo_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch of the demo's experiment file as shipped (its network, time guard, W&B
    logger offline and callbacks; only the data path and sizes changed, ``run_overrides``)
    on the tiny dataset, with the pictures; the run folder is private to this module."""
    out = tmp_path_factory.mktemp("demo")
    overrides = [*run_overrides(tiny_synthetic, out), "--trainer.max_epochs=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DATA_DIR", str(out / "wandb_data"))  # artifact staging
        mp.setenv("WANDB_CACHE_DIR", str(out / "wandb_cache"))
        return run_experiment(config_path(), tiny_synthetic, out, overrides, pictures=True)


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_demo_pipeline_writes_summary_and_pictures(demo_run: dict[str, Any]) -> None:
    res = demo_run
    assert res["videos"] == res["total_videos"] == 7 and not res["failed"]
    assert 0.0 <= res["acc1"] <= res["acc5"] <= 1.0
    assert Path(res["checkpoint"]).is_file() and Path(res["config"]).is_file()
    width, height = Image.open(res["heatmaps"]).size
    # one clip per class (4), each a row of frames over a row of overlays, 4 frames wide; the
    # 32 px frames are drawn at 128 px (x4, the smallest factor reaching 112)
    assert width >= 4 * 128 and height >= 4 * 2 * 128
    assert Path(res["tsne"]).is_file()
    assert Path(res["tsne"]).with_name("tsne_features.npy").is_file()


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf ``Record``s of a ``run-*.wandb`` file, read without W&B's reader: the file
    is a LevelDB-style log (7-byte header, 32 KiB blocks of chunks ``crc(4) length(2) type(1)``,
    type 1 a whole record, 2/3/4 its first/middle/last piece)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, piece = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        piece, pos = piece + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(piece)
            piece = b""
            yield record


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_demo_wandb_run_has_the_dashboard(demo_run: dict[str, Any]) -> None:
    """The offline run (what ``wandb sync`` uploads) logs the four dashboard panels, and the
    files they name are there: images under the run folder, the table with its clips staged
    as the run's table artifact."""
    run = Path(demo_run["wandb_dir"])
    assert run.name.startswith("offline-run-")
    (log,) = run.glob("run-*.wandb")
    history: dict[str, Any] = {}  # last value of each logged key, nested keys joined by "/"
    artifacts = []
    for record in wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif record.WhichOneof("record_type") == "artifact":
            artifacts.append(record.artifact)
    files = run / "files"
    for key in ("heatmaps", "tsne", "confusion_matrix"):
        assert history[f"viz/{key}/_type"] == "images/separated", key
        (name,) = history[f"viz/{key}/filenames"]
        assert (files / name).is_file() and Path(name).name.startswith(f"{key}_")
        assert len(list((files / "media/images/viz").glob(f"{key}_*.png"))) == 1  # not in sanity
    (heat,) = history["viz/heatmaps/filenames"]
    width, height = Image.open(files / heat).size
    assert width >= 4 * 112 and height >= 4 * 2 * 112  # 4 validation clips of 4 frames
    assert history["viz/predictions/_type"] == "table-file"
    assert history["viz/predictions/nrows"] == 8  # the 8 validation videos
    assert (files / history["viz/predictions/path"]).is_file()
    (table_artifact,) = [a for a in artifacts if a.type == "run_table"]
    staged = {c.path: Path(c.local_path) for c in table_artifact.manifest.contents}
    table = json.loads(staged["viz/predictions.table.json"].read_text())
    assert table["columns"][:4] == ["video", "video_index", "path", "label"]
    assert len(table["data"]) == 8
    for row in table["data"]:  # each row's clip, staged for upload with the table
        assert row[0]["_type"] == "video-file" and staged[row[0]["path"]].is_file()
    assert len(list((files / "media/videos/viz").glob("prediction_clips_*.mp4"))) == 8
    assert "val/acc1" in history and "test/acc1" in history


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
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
    assert Image.open(heatmaps).size[0] >= 4 * 112
