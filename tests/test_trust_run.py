"""Trust on a shared machine (issue 25): no secret written anywhere, no file read outside the
dataset, no run mixed with another.

- A credential planted in ``data.storage_options`` (on the command line, the worst case) of a
  real ``tsf fit`` from S3 (moto on loopback) with the W&B logger offline: zero hits in every
  file of the run folder, the W&B offline run and the captured output; ``tsf test`` from the
  written ``config.yaml`` and checkpoint finds its credentials in the environment.
- Two runs in one folder: a real ``tsf fit`` process holds it; a second run there exits 2 in
  one line naming the folder and the first run's process, writing nothing; once the first is
  SIGKILLed its lock is not stuck.
- Annotated paths and class folders outside the dataset root (``..``, absolute, a symlink
  out) are an error naming file and line in the DataModule, ``check-videos``, ``prepare`` and
  ``shard``, unless opted in; shard ids are relative to the root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import data_module

from lightning_tsf.cli import main as tsf
from lightning_tsf.data.annotations import AnnotationError, load_split
from lightning_tsf.data.shards import _rel
from lightning_tsf.train.runlock import LOCK_NAME, RunLock

pytest.importorskip("litdata")
pytest.importorskip("moto")

from s3server import S3Server, s3_bucket_fixture  # noqa: E402, F401

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "experiments" / "smoke_cpu.yaml"
SECRET = "tsfPlantedSecret0123456789abcdef"
KEY_ID = "AKIAPLANTEDKEY000042"


def grep_tree(root: Path, needles: list[bytes]) -> list[str]:
    """Files below ``root`` holding any of ``needles`` (bytes, so binary files count too)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits


def test_no_secret_leaves_the_process(
    s3_bucket: S3Server, tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:  # fmt: skip
    from lightning_tsf.commands.lightning import cli_main

    client = s3_bucket.client()
    for path in sorted(p for p in tiny_shards.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3_bucket.bucket, f"k400/{path.relative_to(tiny_shards)}")
    url = s3_bucket.url("k400")
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    loggers = tmp_path / "loggers.yaml"
    loggers.write_text(
        "trainer:\n  logger:\n"
        "  - class_path: pytorch_lightning.loggers.CSVLogger\n"
        "    init_args: {save_dir: ., name: csv}\n"
        "  - class_path: pytorch_lightning.loggers.WandbLogger\n"
        "    init_args: {save_dir: ., offline: true, project: tsf-secret}\n"
    )
    options = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET,
                          "endpoint_url": s3_bucket.endpoint})  # fmt: skip
    args = ["fit", "--config", str(SMOKE), "--config", str(loggers), f"--data.data_root={url}",
            f"--data.storage_options={options}", f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.num_workers=0", "--data.batch_size=2", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--model.net.init_args.embed_dim=16",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={run}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["tsf", *args])  # as the `tsf` entry point sees it
    assert cli_main(args) == 0
    (config,) = run.rglob("config.yaml")  # in the first logger's folder
    ckpt = run / "checkpoints" / "last.ckpt"
    assert "aws_secret_access_key: '***'" in config.read_text()
    # a tested run from what the run wrote: credentials from the environment (the fixture's
    # AWS_* variables), the redacted values dropped
    test_args = ["test", "--config", str(config), f"--ckpt_path={ckpt}",
                 "--trainer.limit_test_batches=1", "--trainer.logger=false"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["tsf", *test_args])
    assert cli_main(test_args) == 0
    out, err = capfd.readouterr()
    assert "credential was given on the command line" in err  # said once, not echoed
    needles = [SECRET.encode(), KEY_ID.encode()]
    assert SECRET not in out + err and KEY_ID not in out + err
    wandb_runs = list(run.rglob("offline-run-*"))
    assert wandb_runs and list(run.rglob("*.wandb")), "no W&B offline run written"
    import torch

    saved = torch.load(ckpt, weights_only=False, map_location="cpu")
    assert saved["datamodule_hyper_parameters"]["storage"]["options"]["aws_secret_access_key"] == (
        "***"
    )
    hits = grep_tree(run, needles) + grep_tree(tmp_path / "wandb-home", needles)
    assert not hits, hits
    print(f"\n{sum(1 for p in run.rglob('*') if p.is_file())} files in the run folder, "
          f"{len(wandb_runs)} W&B offline runs: no secret")  # fmt: skip


def test_two_runs_in_one_folder(tiny_overrides, tmp_path: Path, capsys) -> None:
    from lightning_tsf.commands.lightning import cli_main

    run = tmp_path / "run"
    common = ["--config", str(SMOKE), *tiny_overrides(run), "--trainer.logger=false",
              "--trainer.callbacks=[]", "--trainer.limit_train_batches=1",
              "--trainer.limit_val_batches=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lightning_tsf.cli import main; sys.exit(main())",
         "fit", *common, "--trainer.max_epochs=100000", "--model.lr=0.123"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lock, config = run / LOCK_NAME, run / "config.yaml"
        deadline = time.monotonic() + 120
        while not (config.is_file() and "0.123" in config.read_text() and lock.read_text()):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid
        written = config.read_text()
        capsys.readouterr()
        start = time.monotonic()
        assert cli_main(["fit", *common, "--trainer.max_epochs=1", "--model.lr=0.456"]) == 2
        took = time.monotonic() - start
        err = capsys.readouterr().err.strip().splitlines()
        print(f"\nsecond run refused after {took:.1f} s: {err[-1]}")
        assert err[-1].startswith(f"tsf: error: {run}: another run is live in this folder "
                                  f"(pid {first.pid} on ")  # fmt: skip
        assert "give this run its own trainer.default_root_dir" in err[-1]
        assert first.poll() is None  # the first run goes on
        assert config.read_text() == written and "0.123" in written  # nothing written by B
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    again = RunLock(run)  # a crashed (killed) run leaves no stuck lock
    again.acquire()
    again.release()


def _dataset(root: Path, rows: list[str]) -> Path:
    (root / "videos").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4"):
        (root / "videos" / name).write_bytes(b"")
    (root / "train.csv").write_text("".join(f"{r}\n" for r in rows))
    (root / "val.csv").write_text("videos/a.mp4 0\n")
    (root / "classnames.txt").write_text("x\ny\n")
    return root


@pytest.mark.parametrize(
    "row",
    ["../outside/x.mp4 0", "/etc/hostname 1", "videos/../../outside/x.mp4 0", "videos/link.mp4 1"],
)
def test_paths_stay_inside_the_dataset(tmp_path: Path, row: str, capsys) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.mp4").write_bytes(b"")
    root = _dataset(tmp_path / "data", ["videos/a.mp4 0", row])
    (root / "videos" / "link.mp4").symlink_to(outside / "x.mp4")  # a symlink out
    where = f"{root / 'train.csv'}:2: "
    with pytest.raises(AnnotationError, match="lies outside the dataset root") as err:
        data_module(str(root), num_workers=0).setup("fit")  # annotations are read in setup
    assert str(err.value).startswith(where) and "allow_outside_root" in str(err.value)
    records = load_split("kinetics", root, "train.csv", ["x", "y"], allow_outside=True)
    assert len(records) == 2  # the named opt-in
    assert tsf(["check-videos", str(root), "--splits", "train.csv", "--workers", "1"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"tsf check-videos: {where}") and "\n" not in line
    assert tsf(["shard", str(root), str(tmp_path / "shards"), "--workers", "1",
                "--no-progress"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip().startswith(f"tsf shard: {where}")
    assert not (tmp_path / "shards" / "train").exists()


def test_class_folders_and_prepare_stay_inside(tmp_path: Path, capsys) -> None:
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "v.mp4").write_bytes(b"")
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "ok").mkdir(parents=True)
        (root / split / "ok" / "v.mp4").write_bytes(b"")
    (root / "classes.txt").write_text("ok\n../../x\n")  # a class folder named '../../x'
    with pytest.raises(AnnotationError, match=r"classes.txt: class 1 '\.\./\.\./x'.*outside"):
        load_split("folder", root, "train", ["ok", "../../x"], "classes.txt")
    (root / "train" / "ok" / "out.mp4").symlink_to(outside / "v.mp4")
    with pytest.raises(AnnotationError, match=r"ok/out.mp4 -> .*x/v.mp4 lies outside"):
        load_split("folder", root, "train", ["ok"])
    dst = tmp_path / "prepared"
    assert tsf(["prepare", str(root), str(dst), "--workers", "1", "--no-progress"]) == 2
    assert "train/ok/out.mp4" in capsys.readouterr().err and not dst.exists()


def test_shard_ids_are_relative_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert _rel(str(root / "videos" / "a.mp4"), root) == "videos/a.mp4"
    assert _rel(str(root / "videos" / ".." / "b.mp4"), root) == "b.mp4"
    assert _rel(str(tmp_path / "elsewhere" / "c.mp4"), root) == "../elsewhere/c.mp4"  # opt-in


def test_checksums_catch_changed_bytes(tiny_shards: Path, tmp_path: Path, capsys) -> None:
    """Two bytes flipped inside one stored video (H.264 may decode them without complaint):
    check-videos names the sample, and the stream reports it as a broken video, skipped."""
    import hashlib
    import shutil

    from litdata import StreamingDataset

    check = ["--splits", "val", "--workers", "0", "--no-progress"]
    assert tsf(["check-videos", str(tiny_shards), *check]) == 0
    assert "8/8 videos readable, 0 unreadable" in capsys.readouterr().err
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    first = StreamingDataset(str(shards / "val"))[0]
    video, written = bytes(first["video"]), first["sha256"]
    assert hashlib.sha256(video).hexdigest() == written  # the checksum is of the video bytes
    (chunk,) = (shards / "val").glob("*.bin")
    data = bytearray(chunk.read_bytes())
    at = data.find(video) + len(video) // 2
    data[at] ^= 0x01
    data[at + 1] ^= 0x01
    chunk.write_bytes(bytes(data))
    assert tsf(["check-videos", str(shards), *check]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"val\t{first['id']}\tchecksum mismatch") and len(out.splitlines()) == 1
    assert "7/8 videos readable, 1 unreadable" in err
    dm = data_module(str(shards), num_frames=4, sampling_rate=4, crop_size=32,
                     train_scale=(32, 36), sampler="centred", num_spatial_crops=1,
                     num_workers=0)  # fmt: skip
    item = dm.dataset("val")[0]  # an evaluation item: the whole video
    assert item["valid"] is False and "checksum mismatch" in item["error"]


def test_training_does_not_import_the_shard_writer() -> None:
    """Every module ``tsf fit`` can reach (lazy imports too) leaves out the writer and its
    encoders: reading shards needs ``shard_format`` and ``storage`` only."""
    from test_layout import _graph

    graph = _graph()
    seen, todo = set(), ["lightning_tsf.commands.lightning"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    assert "lightning_tsf.data.shard_format" in seen
    assert not seen & {"lightning_tsf.data.shards", "lightning_tsf.data.prepare",
                       "lightning_tsf.data.encode"}, sorted(seen)  # fmt: skip


def test_writer_small_ones(s3_bucket: S3Server, tiny_synthetic: Path, tiny_shards: Path,
                           tmp_path: Path) -> None:  # fmt: skip
    """shards.json readable by others (as the umask allows), no empty failed lists, and a
    finished staging folder uploaded into an empty bucket is reported as uploaded."""
    import shutil

    from lightning_tsf.data.shards import write_shards

    umask = os.umask(0o022)
    os.umask(umask)
    assert (tiny_shards / "shards.json").stat().st_mode & 0o666 == 0o666 & ~umask
    assert not list(tiny_shards.glob("*.failed.txt"))  # nothing failed: no list written
    staging = tmp_path / "staging"
    shutil.copytree(tiny_shards, staging)
    url = s3_bucket.url("staged-only")  # moto's in-process state outlives a server: own prefix
    report = write_shards(tiny_synthetic, url, staging=staging,
                          short_side=32, num_workers=1, progress=False)  # fmt: skip
    assert report.uploaded == ["train", "val", "test"] and not report.done_before
    assert "already complete" not in report.summary()
    assert "uploaded from the staging folder: train, val, test" in report.summary()
    again = write_shards(tiny_synthetic, url, staging=staging,
                         short_side=32, num_workers=1, progress=False)  # fmt: skip
    assert again.done_before == ["train", "val", "test"] and not again.uploaded


def test_a_linked_folder_out_of_the_root_is_caught(tmp_path: Path) -> None:
    """A folder inside the root that is a symlink out of it: its videos are outside (the
    folders are resolved once per split, each video's own link checked too)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.mp4").write_bytes(b"")
    root = _dataset(tmp_path / "data", ["videos/a.mp4 0", "linked/x.mp4 1"])
    (root / "linked").symlink_to(outside)
    expected = r"train.csv:2: .*linked/x.mp4 -> .*outside/x.mp4 lies outside"
    with pytest.raises(AnnotationError, match=expected):
        load_split("kinetics", root, "train.csv", ["x", "y"])
