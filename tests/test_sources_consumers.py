"""The matrix of sources × consumers: the packaged demo config as shipped (data paths and sizes
shrunk; its W&B logger offline and its four picture callbacks kept, firing at the run's last
epoch) for one training step and one validation end, then ``tsf check-videos``, ``tsf test``,
``tsf predict`` and ``tsf bench-data``, from video files and from local shards; from the same
shards in an S3 bucket (moto on loopback) the fit and check-videos (test, predict and
bench-data read that stream as they read local shards; tests/test_shards_s3.py tests from S3).
Also: a corrupted shard sample is reported by its id, a broken video file once, and what cannot
read shards says so in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("litdata")

import torch  # noqa: E402
from conftest import _tiny_overrides, write_tiny_checkpoint  # noqa: E402
from s3server import s3_bucket_fixture  # noqa: E402, F401

from lightning_tsf.cli import main as tsf  # noqa: E402
from lightning_tsf.commands.demo import save_pictures  # noqa: E402
from lightning_tsf.commands.lightning import TSFCLI, cli_main, finish_wandb  # noqa: E402
from lightning_tsf.configs import config_path  # noqa: E402

pytestmark = pytest.mark.timeout(900)
SOURCES = ["files", "shards", "s3"]
WRITER = "--trainer.callbacks+=lightning_tsf.train.callbacks.PredictionWriter"


def _upload(folder: Path, s3, prefix: str) -> str:
    """A local shard folder copied file by file into the test bucket: ``s3://bucket/prefix``."""
    client = s3.client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3.bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return s3.url(prefix)


@pytest.fixture
def source(request, tiny_synthetic: Path, tiny_shards: Path, tmp_path: Path, monkeypatch):
    """``(data_root, extra overrides)`` of one source of the same 16/8/7 videos."""
    monkeypatch.setenv("LIGHTNING_TSF_CACHE", str(tmp_path / "cache"))
    if request.param == "files":
        return str(tiny_synthetic), []
    if request.param == "shards":
        return str(tiny_shards), []
    pytest.importorskip("moto")
    s3 = request.getfixturevalue("s3_bucket")
    url = _upload(tiny_shards, s3, "tiny/shards")
    return url, [f"--data.storage.cache_dir={tmp_path / 'cache'}"]


def _val_names(root: Path) -> list[str]:
    return [Path(line.split()[0]).name for line in (root / "val.csv").read_text().splitlines()]


@pytest.mark.parametrize("source", SOURCES, indirect=True)
def test_demo_config_and_commands_on_every_source(
    source, tiny_synthetic: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    root, extra = source
    for name, value in [("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"),
                        ("WANDB_DIR", str(tmp_path)), ("WANDB_DATA_DIR", str(tmp_path / "wd")),
                        ("WANDB_CACHE_DIR", str(tmp_path / "wc"))]:  # fmt: skip
        monkeypatch.setenv(name, value)
    demo = str(config_path())

    def args(run: str) -> list[str]:
        tiny = _tiny_overrides(tiny_synthetic, tmp_path / run)  # sizes shrunk
        return ["--config", demo, *tiny[1:], *extra, f"--data.data_root={root}"]

    # fit: one step, one validation end with all four pictures
    fit = ["fit", *args("fit"), "--trainer.max_epochs=1", "--trainer.max_time=null",
           "--trainer.limit_train_batches=1", "--trainer.num_sanity_val_steps=0"]  # fmt: skip
    assert cli_main(fit) == 0
    media = next((tmp_path / "fit").rglob("files/media"))
    images = sorted(p.name.split("_")[0] for p in (media / "images").rglob("*.png"))
    assert images == ["confusion", "heatmaps", "tsne"], images
    (table,) = (media / "table").rglob("predictions*.table.json")
    rows = json.loads(table.read_text())
    columns = rows["columns"]
    paths = [Path(r[columns.index("path")]).name for r in rows["data"]]
    # the table lists the validation videos in annotation order, each with its clip
    assert paths == _val_names(tiny_synthetic)
    assert len(list((media / "videos").rglob("prediction_clips*.mp4"))) == len(paths)
    # check-videos: every video of every split decoded (16 + 8 + 7)
    capsys.readouterr()
    assert tsf(["check-videos", root, "--workers", "0", "--no-progress"]) == 0
    assert "31/31 videos readable, 0 unreadable" in capsys.readouterr().err
    if root.startswith("s3://"):
        return  # test, predict and bench-data read the same stream as from local shards
    ckpt = f"--ckpt_path={tmp_path / 'fit' / 'checkpoints' / 'last.ckpt'}"

    # test and predict with the checkpoint: every test video once, one record per video
    cli = TSFCLI(args=["test", *args("test"), ckpt, "--trainer.logger=false"])
    finish_wandb(cli.trainer)
    assert cli.model.test_results["videos"] == cli.model.test_results["total_videos"] == 7
    # the demo's pictures (tsf demo) from the test loader: one heatmap per class in test.csv
    drawn = save_pictures(cli.model, cli.datamodule, tmp_path / "pictures")
    classes = {line.split()[1] for line in (tiny_synthetic / "test.csv").read_text().splitlines()}
    assert len(torch.load(Path(drawn["heatmaps"]).with_suffix(".pt"))) == len(classes)
    assert cli_main(["predict", *args("predict"), ckpt, "--trainer.logger=false", WRITER]) == 0
    lines = (tmp_path / "predict" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["video_index"] for r in records) == list(range(7))
    assert all(len(r["classes"]) == 4 and abs(sum(r["probs"]) - 1) < 1e-3 for r in records)

    # bench-data: the count and the probes come from the source itself
    rc = tsf(["bench-data", *args("bench"), "--seconds", "0.3", "--workers", "0",
              "--step-device", "none", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"16 training videos under {root}" in out
    prepared = 0 if root == str(tiny_synthetic) else 5  # shards hold prepared videos
    assert re.search(rf"sampled 5 training videos: 32x32 h264; .*; {prepared} prepared", out)


def test_check_videos_reports_a_broken_shard_sample_by_id(tiny_shards: Path, tmp_path: Path,
                                                          capsys) -> None:  # fmt: skip
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    (chunk,) = (copy / "val").glob("*.bin")
    data = chunk.read_bytes()
    at = [m.start() for m in re.finditer(b"moov", data)]
    assert len(at) == 8  # one mp4 header per validation video, in order
    chunk.write_bytes(data[: at[2]] + b"junk" + data[at[2] + 4 :])  # the third one's
    assert tsf(["check-videos", str(copy), "--workers", "0", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith("val\tvideos/val/00002.mp4\t"), line
    assert "30/31 videos readable, 1 unreadable" in err
    assert tsf(["check-videos", str(copy), "--splits", "val", "nope", "--no-progress"]) == 2
    assert "no 'nope' split (they hold train, val, test)" in capsys.readouterr().err


def test_what_cannot_read_shards_says_so(tiny_shards: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "classes"
    for split in ("train", "val"):
        (folder / split / "walk").mkdir(parents=True)
    assert tsf(["check-videos", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("pass --format folder"), err
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    for command in ("predict-files", "features-files", "timeline"):
        assert tsf([command, str(tiny_shards), "--checkpoint", str(ckpt), "--out-dir",
                    str(tmp_path / "out")] if command != "predict-files" else
                   [command, str(tiny_shards), "--checkpoint", str(ckpt)]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "tsf shard" in err and "tsf predict" in err, err
    for command in ("prepare", "shard"):
        assert tsf([command, str(tiny_shards), str(tmp_path / command)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a `tsf shard` output" in err, err
        assert not (tmp_path / command).exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_files_reports_a_broken_video_once(tiny_synthetic: Path, tmp_path: Path, capsys,
                                                   workers: int) -> None:  # fmt: skip
    """The Predictor reads the dataset's evaluation items; the broken video is one line on
    stderr (the dataset's own log of it is the training run's), one error row in the output."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(tiny_synthetic / "videos" / "val" / "00000.mp4", folder / "a.mp4")
    (folder / "b.mp4").write_text("not a video\n")
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "p.jsonl"
    assert tsf(["predict-files", str(folder), "--checkpoint", str(ckpt), "--num-workers",
                str(workers), "--no-progress", "--out", str(out)]) == 1  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "b.mp4" in line]
    assert len(err) == 1 and err[0].startswith(f"cannot decode {folder / 'b.mp4'}: "), err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["a.mp4", "b.mp4"] and "error" in rows[1]
