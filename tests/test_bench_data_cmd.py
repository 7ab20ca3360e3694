"""``tsf bench-data``: the experiment's training loader on real files, a timed training step,
advice; clear errors for a missing dataset or a bad option."""

from __future__ import annotations

import re
from pathlib import Path

from lightning_tsf.cli import main as tsf

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


def test_bench_data_loader_and_step(tiny_synthetic: Path, capsys) -> None:
    rc = tsf(["bench-data", "--config", str(SMOKE), f"--data.data_root={tiny_synthetic}",
              "--seconds", "1", "--workers", "1", "--step-device", "cpu", "--steps", "2",
              "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "16 training videos" in out and "4 frames x rate 4, crop 32, batch 4" in out
    rate = re.search(r"loader: ([\d.]+) clips/s with 1 workers \(([\d.]+) per worker", out)
    assert rate and float(rate.group(1)) > 0 and rate.group(1) == rate.group(2)
    step = re.search(r"training step on cpu \(32-true, batch 4\): ([\d.]+) ms = ([\d.]+)", out)
    assert step and abs(4000 / float(step.group(1)) / float(step.group(2)) - 1) < 0.05
    assert "would wait for data" in out and "tsf prepare" in out  # synthetic files are plain


def test_bench_data_errors(tmp_path: Path, capsys) -> None:
    config = Path(__file__).parents[1] / "experiments" / "k400_timesformer.yaml"
    assert tsf(["bench-data", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "data_root not found: data/kinetics400" in err and "--data.data_root" in err
    assert "Traceback" not in err
    assert tsf(["bench-data", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "file does not exist" in capsys.readouterr().err
    assert tsf(["bench-data", "--config", str(config), "--model.lr=1"]) == 2
    assert "unknown option '--model.lr=1'" in capsys.readouterr().err
