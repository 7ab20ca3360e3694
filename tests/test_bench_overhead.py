"""benchmarks/bench_overhead.py runs on CPU at a tiny size: both loops, interleaved rounds, the
paired ratio, the forced-AdamW case, JSON and the table."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_overhead  # noqa: E402


def test_tiny_run_writes_json_and_table(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert bench_overhead.main(["--tiny", "--cases", "eager fused", "--rounds", "2", "--steps",
                                "3", "--warmup", "1", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["case"] == "eager fused" and row["fused_adamw"] is True
    bare, lit = row["bare_rounds_ms"], row["lightning_rounds_ms"]
    assert len(bare) == len(lit) == 2 and min(bare + lit) > 0
    assert abs(row["bare_ms"] - statistics.median(bare)) < 1e-9
    assert abs(row["ratio"] - statistics.median(b / t for b, t in zip(bare, lit))) < 1e-9
    assert "| eager fused | fused |" in (out / "table.md").read_text()
