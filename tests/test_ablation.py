"""``tsf ablation``: the lr grid x seeds, the lr chosen by validation, mean ± std of test top-1,
and a resumed run that reuses the finished runs (the demo's config, sizes shrunk)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from lightning_tsf.commands.ablation import main
from lightning_tsf.configs import config_path


@pytest.mark.timeout(900)  # training runs: slower than the 300 s default (pyproject.toml)
def test_grid_table_and_resume(tiny_synthetic: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = yaml.safe_load(config_path().read_text())
    cfg["model"]["net"]["init_args"].update(embed_dim=16, depth=1, num_heads=2)
    cfg["trainer"].update(max_epochs=1, logger=False)
    cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"]
                                   if "LearningRateMonitor" not in c["class_path"]]  # fmt: skip
    cfg["data"].update(batch_size=4, num_workers=0)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(cfg))
    args = ["--root", str(tiny_synthetic), "--out", str(tmp_path / "abl"), "--config", str(small),
            "--schemes", "space_only", "divided_space_time", "--lrs", "0.001", "0.002",
            "--seeds", "0", "1"]  # fmt: skip
    assert main(args) == 0
    runs = sorted((tmp_path / "abl").glob("*/*.json"))
    assert len(runs) == 2 * 2 * 2
    assert not list((tmp_path / "abl").rglob("viz"))  # no dashboard pictures in the ablation
    table = (tmp_path / "abl" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| space_only")
            or line.startswith("| divided_space_time")]  # fmt: skip
    assert len(rows) == 2 and "lr 0.001 | lr 0.002" in table and "(2 seeds)" in table
    for row in rows:
        scheme, best = row.split(" | ")[0][2:], float(row.split(" | ")[3])
        val = {lr: statistics.mean(json.loads((tmp_path / "abl" / scheme /
                                               f"lr{lr:g}_seed{s}.json").read_text())["val_acc1"]
                                   for s in (0, 1)) for lr in (0.001, 0.002)}  # fmt: skip
        assert all(0 <= v <= 1 for v in val.values()), val  # a number (was NaN: read too late)
        assert best == max(val, key=val.get)
        assert "±" in row
    capsys.readouterr()
    assert main(args) == 0  # resumed: every run is reused
    assert "[ablation]" not in capsys.readouterr().out


def test_a_run_cut_by_the_guard_is_named(tiny_synthetic: Path, tmp_path: Path, capsys,
                                         monkeypatch) -> None:  # fmt: skip
    """The time guard is not the budget: a run it stops short is listed under the table."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = yaml.safe_load(config_path().read_text())
    cfg["model"]["net"]["init_args"].update(embed_dim=16, depth=1, num_heads=2)
    cfg["trainer"].update(max_epochs=3, logger=False)
    cfg["data"].update(batch_size=4, num_workers=0)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(cfg))
    args = ["--root", str(tiny_synthetic), "--out", str(tmp_path / "abl"), "--config", str(small),
            "--schemes", "joint_space_time", "--lrs", "0.001", "--seeds", "0",
            "--max-minutes", "0.001"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stopped by the guard before 3 epochs: joint_space_time lr 0.001 seed 0" in out
