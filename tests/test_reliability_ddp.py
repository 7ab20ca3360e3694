"""Several processes for real (gloo on loopback): prediction keeps each video's views on one
rank, validation survives a rank whose videos are all unreadable, and two "nodes" of one
process each (MASTER_ADDR=127.0.0.1, NODE_RANK) train and test like one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import write_broken

from lightning_tsf.commands.lightning import TSFCLI, cli_main

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


@pytest.fixture
def base(tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, monkeypatch) -> list[str]:
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    return ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"),
            "--trainer.enable_progress_bar=false", "--trainer.limit_test_batches=1.0",
            "--trainer.limit_predict_batches=1.0", "--trainer.limit_val_batches=1.0",
            "--data.clips.num_spatial_crops=3"]  # fmt: skip


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_predict_keeps_views_together(base: list[str], tmp_path: Path) -> None:
    """7 videos x 3 views on 2 ranks: every video predicted once, from all 3 views, with the
    probabilities of a single-process run."""
    assert cli_main(["fit", *base, "--trainer.max_epochs=1"]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    outputs = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_fork")):
        out = tmp_path / f"pred{devices}" / "p.jsonl"
        args = [*base, f"--trainer.devices={devices}", f"--trainer.strategy={strategy}",
                "--trainer.callbacks+=lightning_tsf.train.callbacks.PredictionWriter",
                f"--trainer.callbacks.output={out}", f"--ckpt_path={ckpt}"]  # fmt: skip
        assert cli_main(["predict", *args]) == 0
        rows = [json.loads(line) for f in sorted(out.parent.glob("*.jsonl"))
                for line in f.read_text().splitlines()]  # fmt: skip
        outputs[devices] = rows
    ids = [r["video_index"] for r in outputs[2]]
    assert sorted(ids) == list(range(7)), "each video exactly once over the two ranks"
    assert len(list((tmp_path / "pred2").glob("*.rank*.jsonl"))) == 2
    single = {r["video_index"]: r for r in outputs[1]}
    for row in outputs[2]:
        assert row["classes"] == single[row["video_index"]]["classes"]
        assert row["probs"] == pytest.approx(single[row["video_index"]]["probs"], abs=1e-5)


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_validation_with_an_all_broken_rank(base: list[str], tiny_synthetic: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    """The 4 videos of rank 1's validation share are all unreadable: the epoch ends (no
    hang at the metric sync) and the validation accuracy comes from rank 0's clips."""
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    for rel in [line.rsplit(" ", 1)[0] for line in (data / "val.csv").read_text().split("\n")
                if line][4:]:  # fmt: skip
        write_broken(data / rel, "text")
    args = [*base, f"--data.data_root={data}", "--trainer.devices=2",
            "--trainer.strategy=ddp_fork", "--trainer.max_epochs=1"]  # fmt: skip
    code = ("import sys; from lightning_tsf.commands.lightning import cli_main;"
            "sys.exit(cli_main(['fit', *sys.argv[1:]]))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "WANDB_MODE": "offline"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 0
    (logged,) = [s["best_model_score"] for k, s in state["callbacks"].items()
                 if "ModelCheckpoint" in k]  # fmt: skip  # val/acc1 of the 2-rank epoch
    # rank 0's share alone (the 4 readable videos), validated by one process with the same
    # weights: the 2-rank accuracy is exactly that one
    good = tmp_path / "good"
    shutil.copytree(data, good, symlinks=True)
    lines = (data / "val.csv").read_text().splitlines(keepends=True)
    (good / "val.csv").write_text("".join(lines[:4]))
    cli = TSFCLI(args=[*base, f"--data.data_root={good}",
                       f"--trainer.default_root_dir={tmp_path / 'one'}"], run=False)  # fmt: skip
    (res,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt),
                                  verbose=False)  # fmt: skip
    assert float(logged) == pytest.approx(res["val/acc1"], abs=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_two_nodes_on_loopback(base: list[str], tmp_path: Path) -> None:
    """2 nodes x 1 process (NODE_RANK 0 and 1, MASTER_ADDR 127.0.0.1, gloo): fit, then the
    multi-view test counts each of the 7 test videos once, with one process's accuracy."""
    run = tmp_path / "run"
    fit = [*base, "--trainer.max_epochs=1", "--trainer.num_nodes=2", "--trainer.devices=1",
           "--trainer.strategy=ddp"]  # fmt: skip
    code = """
import json, sys
from lightning_tsf.commands.lightning import TSFCLI
cli = TSFCLI(args=sys.argv[2:], run=False)
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
(res,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
if cli.trainer.global_rank == 0:
    json.dump({**res, "world": cli.trainer.world_size}, open(sys.argv[1], "w"))
"""
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "NODE_RANK": str(node), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
               "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "res.json"),
                                       *fit], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    try:
        errs = [proc.communicate(timeout=300)[1] for proc in procs]
    finally:  # a hang (one node waiting for the other) ends here, both processes with it
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    for proc, err in zip(procs, errs):
        assert proc.returncode == 0, err[-3000:]
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["world"] == 2 and res["test/videos"] == 7

    ckpt = run / "checkpoints" / "last.ckpt"
    one = TSFCLI(args=[*base, "--trainer.devices=1"], run=False)
    (single,) = one.trainer.test(one.model, datamodule=one.datamodule, ckpt_path=str(ckpt),
                                 verbose=False)  # fmt: skip
    assert single["test/videos"] == 7
    assert res["test/acc1"] == pytest.approx(single["test/acc1"], abs=1e-6)
    assert res["test/acc5"] == pytest.approx(single["test/acc5"], abs=1e-6)
