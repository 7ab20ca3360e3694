"""``tsf bench-data``: a ``tsf fit`` command line (any ``--model.*``/``--data.*``/``--trainer.*``)
runs the experiment's training loader on real files, times the configured model's training
step, probes the sources and advises with numbers; clear errors for a missing dataset or a bad
option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lightning_tsf.cli import main as tsf

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


def test_bench_data_loader_and_step(tiny_synthetic: Path, capsys) -> None:
    rc = tsf(["bench-data", "--config", str(SMOKE), "--data.data_root", str(tiny_synthetic),
              "--seconds", "1", "--workers", "1", "--step-device", "cpu", "--steps", "2",
              "--no-progress", "--model.lr=0.5", "--trainer.max_epochs=3"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "16 training videos" in out and "4 frames x rate 4, crop 32, batch 4" in out
    small = float(re.search(r"TimeSformer ([\d.]+) M parameters", out).group(1))
    rate = re.search(r"loader: ([\d.]+) clips/s with 1 workers \(([\d.]+) per worker", out)
    assert rate and float(rate.group(1)) > 0 and rate.group(1) == rate.group(2)
    step = re.search(r"training step on cpu \(32-true, batch 4\): ([\d.]+) ms = ([\d.]+)", out)
    assert step and abs(4000 / float(step.group(1)) / float(step.group(2)) - 1) < 0.05
    assert "would wait for data" in out and "tsf prepare" in out  # synthetic files are plain
    share = re.search(r"decoding a batch of 4 takes (\d+) ms of one core, the step (\d+) ms: "
                      r"decode is (\d+)% of the step", out)  # fmt: skip
    assert share, out  # the line is printed (a missing line used to pass the bounds below)
    decode, step_ms, pct = (int(share.group(i)) for i in (1, 2, 3))
    # the ms are printed rounded: the share lies between what the rounding bounds allow
    assert 100 * (decode - 0.5) / (step_ms + 0.5) - 1 <= pct <= 100 * (decode + 0.5) / max(
        step_ms - 0.5, 0.5) + 1, out  # fmt: skip
    # a count to use is one it measured; any other is an estimate with the command to measure
    use = re.search(r"workers to use: (\d+), as measured", out)
    assert (use and use.group(1) == "1") or re.search(r"measure it with --workers \d+", out) \
        or "more cores" in out, out
    assert re.search(r"sampled 5 training videos: 32x32 \w+; keyframe every \d+-\d+ frames; "
                     r"0 prepared", out)  # fmt: skip
    assert re.search(r"tsf prepare SRC DST .* about [\d.]+-[\d.]+x fewer pixels", out)
    # the user's model: a fit override of the net is the model whose step is timed
    rc = tsf(["bench-data", "--config", str(SMOKE), f"--data.data_root={tiny_synthetic}",
              "--seconds", "0.5", "--step-device", "cpu", "--steps", "1", "--no-progress",
              "--model.net.init_args.depth=3", "--model.net.init_args.embed_dim=64"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert float(re.search(r"TimeSformer ([\d.]+) M parameters", out).group(1)) > 4 * small


def test_bench_data_errors(tmp_path: Path, capsys) -> None:
    config = Path(__file__).parents[1] / "experiments" / "k400_timesformer.yaml"
    assert tsf(["bench-data", "--config", str(config), "--model.lr=1"]) == 2
    err = capsys.readouterr().err
    assert "data.data_root: path does not exist: data/kinetics400" in err
    assert "--data.data_root=PATH" in err and "Traceback" not in err
    assert tsf(["bench-data", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert tsf(["bench-data", "--config", str(config), "--model.no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err


@pytest.mark.parametrize("prepared", [False, True])
@pytest.mark.parametrize(
    ("workers", "clips_per_s", "step_s", "expect"),
    [
        (2, 100.0, 0.1, "workers to use: 2, as measured"),  # 8 clips/step needed, 10 made
        (1, 50.0, 0.1, "measure it with --workers 2"),  # a batch is 160 ms of one core
        (2, 8.0, 0.01, "more cores"),  # 4 clips/s per worker, 8 per 10 ms: 200 workers
    ],
)
def test_bench_data_advice_is_consistent(monkeypatch: pytest.MonkeyPatch, prepared: bool,
                                         workers: int, clips_per_s: float, step_s: float,
                                         expect: str) -> None:  # fmt: skip
    """The advice never recommends a worker count it did not measure, names the cores as
    they are (one left to the training process), and offers ``tsf prepare`` only for
    sources that are not prepared already."""
    from lightning_tsf.commands import bench
    from lightning_tsf.data.loader import LoaderRate

    monkeypatch.setattr(bench, "usable_cpus", lambda: 4)
    rate = LoaderRate(clips=round(clips_per_s * 10), seconds=10.0, workers=workers,
                      startup_seconds=1.0)  # fmt: skip
    text = "\n".join(bench.advice(rate, step_s, 8, "GPU", prepared))
    assert expect in text, text
    for n in re.findall(r"workers to use: (\d+)", text):
        assert int(n) == workers, text
    assert ("tsf prepare" in text) == (expect == "more cores" and not prepared), text
    if "as measured" not in text:  # one core runs the training process
        assert "3 of the 4 cores here are free for workers" in text, text
