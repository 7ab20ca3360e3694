"""Compute scaling benchmark (benchmarks/compute_scaling.py): counts, budget marking, a real
measurement, table and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from compute_scaling import estimate_bytes, main, measure, report_rows  # noqa: E402


def test_budget_marks_joint_first():
    rows = report_rows(("joint_space_time", "divided_space_time"), (8, 96), (224,), 4.0,
                       run=False)  # fmt: skip
    by = {(r["scheme"], r["frames"]): r for r in rows}
    assert by["joint_space_time", 96]["status"] == "> budget"
    assert by["divided_space_time", 96]["status"] == "estimated"
    assert abs(by["divided_space_time", 8]["gmacs"] - 196.1) / 196.1 < 0.01  # paper Table 1
    assert by["joint_space_time", 96]["gmacs"] > 3 * by["divided_space_time", 96]["gmacs"]
    assert estimate_bytes("joint_space_time", 96, 224) > 10 * estimate_bytes(
        "divided_space_time", 96, 224
    )


def test_measure_in_subprocess():
    m = measure("space_only", 4, 224, depth=1)
    # at least the (B*T, heads, 197, 197) fp32 attention probabilities are resident
    assert m["activation_bytes"] > 4 * 12 * 4 * 197**2 and m["seconds"] > 0


def test_main_writes_table_plot_json(tmp_path, capsys):
    out = tmp_path / "scaling.png"
    argv = ["--no-run", "--schemes", "joint_space_time", "space_only", "--frames", "8", "64",
            "--sizes", "224", "448", "--memory-budget-gb", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| joint_space_time | 64 | 224 |" in text and "> 4 GB budget" in text
    assert Image.open(out).size[0] > 500
    assert len(json.loads(out.with_suffix(".json").read_text())) == 2 * 3
