"""benchmarks/bench_gpu.py runs on CPU with tiny shapes: every implementation row, the
Lightning Trainer path, JSON and a markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_gpu  # noqa: E402


def test_tiny_run_writes_json_and_table(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert bench_gpu.main(["--tiny", "--steps", "2", "--warmup", "1", "--no-compile",
                           "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert {(r["config"], r["impl"]) for r in rows} == {
        (c, i) for c in bench_gpu.TINY_CONFIGS for i in ("ours eager", "hf eager")
    }
    for row in rows:
        assert "error" not in row, row
        assert row["clips_per_s"] > 0 and 0 < row["of_matmul"] < 2
        assert abs(row["clips_per_s"] * row["step_ms"] / 1000 - 2) < 1e-6  # batch 2
    assert result["lightning"]["clips_per_s"] > 0 and result["matmul_tflops"] > 0
    table = (out / "table.md").read_text()
    assert "| divided 4x32 b2 | ours eager |" in table and "Lightning Trainer" in table
