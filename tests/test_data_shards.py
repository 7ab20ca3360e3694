"""Shards (``tsf shard``, LitData): writing, files-versus-shards agreement of clips, DDP
evaluation counts, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from barcodes import read_barcodes, write_barcode_video
from conftest import data_module
from torch.utils.data import default_collate

from lightning_tsf.cli import main as tsf
from lightning_tsf.data.clips import ViewSpec, decode_clip
from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.decode import make_bytes_reader
from lightning_tsf.data.prepare import prepare_dataset

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "experiments" / "smoke_cpu.yaml"


@pytest.fixture
def barcode_root(tmp_path: Path) -> Path:
    """Kinetics root of barcode videos (3 train incl. one broken, 2 val, 2 test)."""
    root = tmp_path / "src"
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        lines = []
        for i in range(n):
            rel = f"videos/{split}/v{i}.mp4"
            write_barcode_video(root / rel, 40 + 7 * i, fps=25)
            lines.append(f"{rel} {i % 2}\n")
        if split == "train":
            (root / "videos/train/bad.mp4").write_text("not a video")
            lines.append("videos/train/bad.mp4 1\n")
        (root / f"{split}.csv").write_text("".join(lines))
    (root / "classnames.txt").write_text("a\nb\n")
    return root


def test_shard_command_reports_and_reruns(
    barcode_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "shards"
    args = ["shard", str(barcode_root), str(out), "--short-side=48", "--workers=0",
            "--no-progress"]  # fmt: skip
    assert tsf(args) == 1  # one unreadable source, listed and left out
    failed = (out / "train.failed.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("videos/train/bad.mp4\t")
    meta = json.loads((out / "shards.json").read_text())
    assert meta["format"] == "kinetics" and meta["class_names"] == ["a", "b"]
    assert meta["splits"]["train"] == {"videos": 3, "records": 4, "failed": 1}
    assert (out / "classnames.txt").read_text() == "a\nb\n"
    assert not list(out.glob(".*.partial"))
    capsys.readouterr()
    assert tsf(args) == 0
    assert "already complete: train, val, test" in capsys.readouterr().err
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert tsf(["shard", str(barcode_root), "s3://bucket/prefix"]) == 2  # checked first
    err = capsys.readouterr().err
    assert "s3://bucket/prefix" in err and len(err.strip().splitlines()) == 1, err


def test_interrupted_split_restarts(barcode_root: Path, tmp_path: Path) -> None:
    from lightning_tsf.data.shards import write_shards

    out = tmp_path / "shards"
    partial = out / ".val.partial"
    (partial / "chunks").mkdir(parents=True)
    (partial / "chunks" / "chunk-0-0.bin").write_bytes(b"half written")
    (partial / "encoded").mkdir()
    report = write_shards(barcode_root, out, short_side=48, num_workers=0, progress=False)
    assert report.written == {"train": 3, "val": 2, "test": 2}
    assert not partial.exists()


def _modules(barcode_root: Path, tmp_path: Path, **kw) -> tuple[VideoDataModule, VideoDataModule]:
    """Files (a `tsf prepare` root) and shards of the same videos, same settings."""
    prepared, out = tmp_path / "prepared", tmp_path / "shards"
    prepare_dataset(barcode_root, prepared, 48, num_workers=0, progress=False)
    assert tsf(["shard", str(prepared), str(out), "--short-side=48", "--workers=0",
                "--no-progress"]) == 1  # fmt: skip
    common = dict(num_frames=4, sampling_rate=4, crop_size=32, train_scale=(40, 56),
                  batch_size=1, num_workers=0, pin_memory=False, seed=3, **kw)  # fmt: skip
    return (data_module(str(prepared), source="files", **common),
            data_module(str(out), **common))  # fmt: skip


def _same_row(a: dict, b: dict, root: Path) -> None:
    """Two items or batches: the same keys, dtypes, shapes and values; a file's ``path`` is
    the shard's ``id`` under the data root."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key == "path":
            x = [x] if isinstance(x, str) else x
            y = [y] if isinstance(y, str) else y
            assert [str(Path(p).relative_to(root)) for p in x] == list(y)
        elif isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), key
        else:
            assert type(x) is type(y) and x == y, key


def test_files_and_shards_give_the_same_items_and_batches(barcode_root: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """The same videos as prepared files and as `tsf shard` shards of them: training items of
    the same video and seed, and every evaluation view, equal key for key (dtype, shape,
    value), as items and as loader batches."""
    from lightning_tsf.data.items import item_seeds

    files, shards = _modules(barcode_root, tmp_path, num_spatial_crops=3, num_temporal_views=2)
    root = tmp_path / "prepared"
    assert shards.source.kind == "shards" and files.source.kind == "files"
    assert shards.class_names == files.class_names and shards.format == files.format
    # training: the shard stream's batch of video i equals the file loader's item (i, seed_i)
    file_ds = files.make_dataset("train")
    seeds = item_seeds(3, 0, 4)  # seed 3, epoch 0, 4 annotated videos (one unreadable)
    got = {int(b["video_index"]): b for b in shards.train_dataloader()}
    assert sorted(got) == [0, 1, 2]  # the unreadable source (index 3) was left out
    file_batches = {int(b["video_index"]): b for b in files.train_dataloader()
                    if not b["retries"].any()}  # the broken file's stand-in draws otherwise
    for i, batch in got.items():
        item = file_ds[(i, seeds[i])]
        _same_row(default_collate([item]), batch, root)
        _same_row(file_batches[i], batch, root)  # the file loader draws it with its seed too
        assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.uint8
    # the frames behind them: the same barcodes from the file and from the bytes
    spec = ViewSpec(num_frames=4, sampling_rate=4, crop_size=32)
    path = file_ds.records[1].path
    reader = make_bytes_reader(Path(path).read_bytes(), "v1")
    a = decode_clip(path, spec, train=True, rng=np.random.default_rng(5))
    b = decode_clip(reader, spec, train=True, rng=np.random.default_rng(5))
    assert read_barcodes(a) == read_barcodes(b) and np.array_equal(a, b)
    # evaluation: every view of every video, as items and as batches of view rows
    file_test, shard_test = files.make_dataset("test"), shards.make_dataset("test")
    for v in range(2):
        item = file_test[v]
        assert item["video"].shape == (6, 3, 4, 32, 32) and item["view_index"].tolist() == [
            0, 1, 2, 3, 4, 5]  # fmt: skip
        _same_row(item, next(it for it in shard_test if it["video_index"] == v), root)
    file_rows, shard_rows = list(files.test_dataloader()), list(shards.test_dataloader())
    assert len(file_rows) == len(shard_rows) == 2  # batch 1 < 6 views: one video per batch
    for x, y in zip(file_rows, shard_rows):
        _same_row(x, y, root)
    rows = [(int(v), int(w)) for b in shard_rows for v, w in zip(b["video_index"],
                                                                  b["view_index"])]  # fmt: skip
    assert rows == [(v, w) for v in range(2) for w in range(6)]


@pytest.mark.timeout(900)
def test_shards_fit_then_ddp_test_counts_each_video_once(
    tiny_overrides: Callable[[Path], list[str]], tiny_shards: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from lightning_tsf.commands.lightning import TSFCLI, cli_main

    monkeypatch.setattr(sys, "argv", ["tsf"])
    args = ["--config", str(SMOKE), *tiny_overrides(tmp_path), f"--data.data_root={tiny_shards}",
            "--data.clips.num_spatial_crops=3", "--trainer.limit_test_batches=1.0",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    fit = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4"]
    assert cli_main(["fit", *args, *fit]) == 0
    ckpt = str(next((tmp_path / "checkpoints").glob("last.ckpt")))
    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_fork")):
        cli = TSFCLI(args=[*args, f"--trainer.devices={devices}", f"--trainer.strategy={strategy}"],
                     run=False)  # fmt: skip
        (results[devices],) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
    assert results[1]["test/videos"] == results[2]["test/videos"] == 7
    assert results[2]["test/acc1"] == pytest.approx(results[1]["test/acc1"], abs=1e-6)


KILLER = """
import os, sys, torch
torch.set_num_threads(1)
from pytorch_lightning import Callback
from lightning_tsf.commands.lightning import TSFCLI

MID = os.environ.get("MID_CKPT")  # also write a checkpoint mid-epoch, as on pre-emption


class Kill(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and trainer.global_step >= 3:
            if MID:
                trainer.save_checkpoint(MID)
            os._exit(17)

cli = TSFCLI(args=sys.argv[1:], run=False)
cli.trainer.callbacks.append(Kill())
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
"""


@pytest.mark.parametrize("resume_from, workers", [("epoch end", 1), ("mid-epoch", 2)])
@pytest.mark.timeout(900)
def test_killed_shard_run_resumes_exactly(
    tiny_overrides: Callable[[Path], list[str]], tiny_shards: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, resume_from: str, workers: int,
) -> None:  # fmt: skip
    """SIGKILL-like exit in the second epoch, then a resume from the last epoch-end checkpoint
    or from one written mid-epoch (two of four batches trained, as a pre-empted SLURM job
    writes it): the final weights equal an uninterrupted run's, bit for bit (mixup, drop
    path, LitData's shuffle and the clips' draws all replayed)."""
    from lightning_tsf.commands.lightning import cli_main

    monkeypatch.setattr(sys, "argv", ["tsf"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def args(run: Path) -> list[str]:
            return ["--config", str(SMOKE), *tiny_overrides(run),
                    f"--data.data_root={tiny_shards}", f"--data.num_workers={workers}",
                    "--trainer.max_epochs=3", "--trainer.limit_train_batches=4",
                    "--trainer.limit_val_batches=1", "--trainer.deterministic=true",
                    "--trainer.enable_progress_bar=false", "--model.mixup_alpha=0.4",
                    "--model.net.init_args.drop_path_rate=0.2"]  # fmt: skip

        ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
        assert cli_main(["fit", *args(ref_dir)]) == 0
        mid = run_dir / "mid.ckpt"
        env = {**os.environ, "MID_CKPT": str(mid) if resume_from == "mid-epoch" else ""}
        proc = subprocess.run([sys.executable, "-c", KILLER, *args(run_dir)], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 17, proc.stderr[-3000:]
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        # the epoch-end checkpoint of epoch 0: its loop state says one epoch of 4 batches done
        fit_loop = ckpt["loops"]["fit_loop"]
        batches = fit_loop["epoch_loop.batch_progress"]["total"]["completed"]
        assert ckpt["epoch"] == 0 and batches == 4
        resume = "--ckpt_path=last"
        if resume_from == "mid-epoch":
            state = torch.load(mid, weights_only=False)
            assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] is False
            assert state["VideoDataModule"]["shard_train"]["num_samples_yielded"] > 0
            resume = f"--ckpt_path={mid}"
        assert cli_main(["fit", *args(run_dir), resume]) == 0
    finally:
        torch.set_num_threads(threads)
    ref = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=False)
    got = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (got["epoch"], got["global_step"]) == (ref["epoch"], ref["global_step"])
    for key, value in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key


def test_resume_note_says_what_changes() -> None:
    from lightning_tsf.data.streaming import resume_note

    state = {"dataset": {"world_size": 2, "num_workers": 4, "batch_size": 8}}
    assert resume_note(state, world_size=2, num_workers=4, batch_size=8) == ""
    note = resume_note(state, world_size=1, num_workers=4, batch_size=8)
    assert "world size 2" in note and "not bit-equal" in note and "once" in note
