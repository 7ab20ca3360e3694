"""Bad input stops before any compute with a message naming the file, line or key (CLI exit
2, no traceback), or behaves correctly: labels out of range, misspelt class names, broken
pretrained files, folder datasets without split folders, empty or unreadable test splits,
malformed annotation entries (exit 2 before any run file is written), byte-order marks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_broken

from lightning_tsf.commands.lightning import TSFCLI, cli_main
from lightning_tsf.configs import config_path

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "experiments" / "smoke_cpu.yaml"
DEMO = config_path()  # logs to W&B (offline here)


@pytest.fixture
def data(tiny_synthetic: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic dataset (the tests edit its annotation files)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    return root


@pytest.fixture
def args(tiny_overrides: Callable[[Path], list[str]], data: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    return ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"), f"--data.data_root={data}",
            "--trainer.enable_progress_bar=false"]  # fmt: skip


def stops(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 within seconds and no traceback; return stderr."""
    start = time.perf_counter()
    assert cli_main(argv) == 2
    assert time.perf_counter() - start < 20
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("tsf: error: ")
    return err


def test_label_out_of_range(data: Path, args: list[str], capsys) -> None:
    lines = (data / "train.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 7"
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    err = stops(capsys, ["fit", *args])
    assert f"{data / 'train.csv'}:3: label 7 is out of range for 4 classes" in err
    assert not (Path(args[3].split("=", 1)[1]) / "checkpoints").exists()


def test_misspelt_class_on_the_first_line(data: Path, args: list[str], capsys) -> None:
    """Not taken for a header and dropped: an error with the closest class name."""
    lines = (data / "val.csv").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " moveright"
    (data / "val.csv").write_text("\n".join(lines) + "\n")
    err = stops(capsys, ["fit", *args])
    assert f"{data / 'val.csv'}:1: unknown label 'moveright'; did you mean 'move_right'?" in err


def test_a_real_header_is_still_skipped(data: Path, args: list[str]) -> None:
    text = (data / "train.csv").read_text()
    (data / "train.csv").write_text("path label\n" + text)
    cli = TSFCLI(args=args, run=False)
    assert len(cli.datamodule.records("train")) == len(text.splitlines())


@pytest.mark.parametrize("kind", ["zero", "truncated", "text"])
def test_broken_pretrained_file(tmp_path: Path, args: list[str], capsys, kind: str) -> None:
    path = tmp_path / "weights.pth"
    if kind == "truncated":
        import torch

        from lightning_tsf.models import create_model

        torch.save(create_model("timesformer_tiny").state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        write_broken(path, kind)
    err = stops(capsys, ["fit", *args, f"--model.pretrained={path}"])
    expected = "empty file (0 bytes)" if kind == "zero" else "not a readable checkpoint"
    assert f"{path}: {expected}" in err


def test_folder_dataset_needs_split_folders(tmp_path: Path, make_video, args, capsys) -> None:
    for cls in ("jump", "run"):
        make_video(f"flat/{cls}/a.mp4", num_frames=8)
    err = stops(capsys, ["fit", *args, f"--data.data_root={tmp_path / 'flat'}",
                         "--data.format=folder"])  # fmt: skip
    assert f"{tmp_path / 'flat' / 'train'} is not a folder" in err
    assert "data_root/{train,val,test}/<class>/<video>" in err


def test_empty_test_split(data: Path, args: list[str], capsys) -> None:
    (data / "test.csv").write_text("")
    err = stops(capsys, ["test", *args])
    assert f"test split {data / 'test.csv'} lists no videos" in err


def test_unreadable_test_split_reports_instead_of_crashing(data: Path, args: list[str]) -> None:
    """Every test video broken: the test completes, 0 of 7 evaluated, each path listed."""
    paths = [line.rsplit(" ", 1)[0] for line in (data / "test.csv").read_text().splitlines()]
    for rel in paths:
        write_broken(data / rel, "text")
    cli = TSFCLI(args=[*args, "--trainer.limit_test_batches=1.0"], run=False)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    res = cli.model.test_results
    assert res["videos"] == 0 and res["total_videos"] == 7
    assert sorted(res["failed"]) == sorted(str(data / rel) for rel in paths)
    assert res["summary"].startswith("evaluated 0/7 videos; 7 unreadable")


def test_bom_and_crlf_keep_the_first_video(data: Path, args: list[str]) -> None:
    """A spreadsheet's CSV (byte-order mark, CRLF): every video kept, the first path intact."""
    text = (data / "train.csv").read_text()
    (data / "train.csv").write_bytes(("\ufeff" + text.replace("\n", " \r\n")).encode())
    cli = TSFCLI(args=args, run=False)
    records = cli.datamodule.records("train")
    assert len(records) == len(text.splitlines())
    assert records[0].path == str(data / text.split(" ", 1)[0]) and Path(records[0].path).is_file()


def run_tsf(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``tsf ...`` in a subprocess that imports this tree, W&B offline."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "lightning_tsf.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip


def assert_no_run_files(run: Path, cwd: Path) -> None:
    """No config.yaml, checkpoints or W&B run: in the run folder or the working directory."""
    for folder in (run, cwd):
        for name in ("config.yaml", "checkpoints", "wandb"):
            assert not (folder / name).exists(), folder / name


@pytest.mark.parametrize("case", ["ssv2_no_template", "kinetics_short_row"])
def test_malformed_entry_exits_2_before_training(
    case: str, ssv2_root: Path, data: Path, tiny_overrides, tmp_path: Path
) -> None:
    """``tsf fit`` with the W&B demo config: one error line naming file and entry, exit 2, no
    traceback, and nothing written (before: an SSv2 entry without a template got label -1 and
    failed in the sanity check, leaving config.yaml and a W&B run behind)."""
    run, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    argv = ["fit", "--config", str(DEMO), *tiny_overrides(run), f"--data.data_root={data}"]
    if case == "ssv2_no_template":
        path = ssv2_root / "train.json"
        entries = json.loads(path.read_text())
        del entries[1]["template"]
        path.write_text(json.dumps(entries))
        argv += [f"--data.data_root={ssv2_root}", "--data.format=ssv2",
                 "--data.annotations.video_ext=.webm"]
        expected = f"{path}: entry [1] (id '2'): no 'template'; train, val and test entries"
    else:
        path = data / "val.csv"
        path.write_text(path.read_text() + "videos/val/00000.mp4\n")
        expected = f"{path}:{len(path.read_text().splitlines())}: expected 'path label'"
    out = run_tsf(argv, cwd)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"tsf: error: {expected}"), out.stderr
    assert_no_run_files(run, cwd)


def test_unlabelled_test_split_exits_2_before_the_logger(
    ssv2_root: Path, tiny_overrides, tmp_path: Path, capsys
) -> None:
    """``tsf test`` on SSv2's unlabelled test set (no templates): stops before the W&B run;
    ``tsf predict`` is where unlabelled entries belong."""
    (ssv2_root / "test.json").write_text(json.dumps([{"id": "4"}, {"id": "5"}]))
    run = tmp_path / "run"
    ssv2 = [f"--data.data_root={ssv2_root}", "--data.format=ssv2",
            "--data.annotations.video_ext=.webm"]
    argv = ["test", "--config", str(DEMO), *tiny_overrides(run), *ssv2]
    err = stops(capsys, [*argv, "--data.annotations.test_split=test.json"])
    assert f"{ssv2_root / 'test.json'}: entry [0] (id '4'): no 'template'" in err
    assert_no_run_files(run, Path.cwd())
