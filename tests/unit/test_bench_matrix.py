"""scripts/bench_matrix.py: medians over repeated runs and the Markdown it writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_matrix.py"
spec = importlib.util.spec_from_file_location("bench_matrix", SCRIPT)
assert spec is not None and spec.loader is not None
bench_matrix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_matrix)


def report(ops: float, p50: float, timeouts: int = 0) -> dict[str, Any]:
    return {
        "n": 4, "clients": 8, "throughput_ops": ops, "batch_mean": ops / 100,
        "latency_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3}, "efficiency": ops / 1000,
        "cpu_ms_per_op": {"replicas": 1000 / ops, "clients": 1.0}, "timeouts": timeouts,
        "ceiling_ops": 1000.0,
    }  # fmt: skip


def test_median_report_takes_each_figure_s_median_and_sums_timeouts() -> None:
    cell = bench_matrix.median_report([report(300, 9), report(100, 30, 2), report(200, 10)])
    assert cell["throughput_ops"] == 200
    assert cell["latency_ms"] == {"p50": 10, "p90": 20, "p99": 30}
    assert cell["cpu_ms_per_op"]["replicas"] == 5.0
    assert cell["timeouts"] == 2 and cell["runs"] == 3


def test_markdown_has_one_row_per_cell_and_links_the_plot() -> None:
    meta = {
        "arguments": "--f 1", "commit": "abc", "date": "2026-12-03", "cores": 2,
        "machine": "x86_64", "duration": 10.0, "warmup": 2.0, "repeat": 1, "auth": "macs",
        "calibration_us": {"sign_us": 30.0}, "png": "bench-matrix.png",
    }  # fmt: skip
    text = bench_matrix.markdown([report(100, 9), report(200, 10)], meta)
    rows = [line for line in text.splitlines() if line.startswith("| 4 |")]
    assert rows == [
        "| 4 | 8 | 100.0 | 9 | 27 | 1.0 | 1,000 | 10% | 10.0 | 1.0 | 0 |",
        "| 4 | 8 | 200.0 | 10 | 30 | 2.0 | 1,000 | 20% | 5.0 | 1.0 | 0 |",
    ]
    assert "![throughput, latency and CPU per operation against clients](bench-matrix.png)" in text


def test_bad_lists_are_refused_in_one_line() -> None:
    with pytest.raises(SystemExit, match="--clients '1,x': expected integers"):
        bench_matrix.parse_list("1,x", "clients")
    with pytest.raises(SystemExit, match="of at least 1"):
        bench_matrix.parse_list("0", "f")
