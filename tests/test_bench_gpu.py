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


def test_tokens_section_tiny(tmp_path: Path) -> None:
    """``--tokens``: each token switch against off, eager rows with their ratios."""
    out = tmp_path / "bench"
    assert bench_gpu.main(["--tokens", "--tiny", "--steps", "1", "--warmup", "0",
                           "--no-compile", "--out", str(out)]) == 0  # fmt: skip
    rows = json.loads((out / "tokens.json").read_text())
    assert {r["setting"] for r in rows} == set(bench_gpu.gpu_tokens.TINY_SETTINGS)
    for row in rows:
        assert "error" not in row, row
        assert row["x_off"] > 0 and 0 < row["kept"] <= 100
    kept = {(r["setting"], r["mode"]): r["kept"] for r in rows}
    assert kept["off", "infer"] == 100 and kept["tube_drop 0.5", "train"] == 50
    assert kept["merge_r 4", "infer"] == 100 * (16 + 12) / 2 / 16  # 16 -> 12 tubes, depth 2
    assert "| static_drop 0.1 | infer | eager |" in (out / "tokens.md").read_text()
