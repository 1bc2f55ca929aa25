"""scripts/reconnect_storm.py: a replica SIGKILLed and restarted under ~50 connected clients.

The clients come back to it spread over time by their full-jitter backoff, not
all at once, and the cluster keeps (or gets back) its speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.reconnect_storm_report import rates

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reconnect_storm.py"
CLIENTS = 50


@pytest.mark.slow
def test_a_restarted_replica_sees_its_clients_come_back_spread_out(tmp_path: Path) -> None:
    picture = tmp_path / "storm.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", str(CLIENTS), "--workers", "1",
         "--active", "5", "--before", "3", "--down", "1.5", "--after", "10",
         "--json", "--quiet", "--plot", str(picture)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # Every client connected to the replica again, and the replica says so itself.
    assert summary["clients_back"] == CLIENTS
    assert summary["all_clients_back_seconds"] is not None
    assert summary["accepted_after_restart"] >= CLIENTS
    # Spread out: not all within 100 ms, and over at least a few tenths of a second.
    assert summary["clients_back_in_first_100ms"] < CLIENTS // 2
    quantiles = summary["clients_back_quantiles_seconds"]
    assert quantiles["p90"] - quantiles["p10"] > 0.3
    # The cluster keeps working: operations complete after the restart, at a good pace.
    baseline = summary["baseline_ops_per_s"]
    after = [rate for t, rate in summary["series"]["ops_per_s"] if t >= summary["down_seconds"]]
    assert baseline > 0 and max(after) >= 0.5 * baseline
    assert picture.stat().st_size > 10_000


def test_rates_are_taken_over_whole_windows() -> None:
    points = [(0.0, 0.0), (0.5, 5.0), (1.0, 10.0), (1.5, 30.0), (2.0, 30.0)]
    assert rates(points, 1.0) == [(1.0, 10.0), (1.5, 25.0), (2.0, 20.0)]
    assert rates(points, 0.5)[0] == (0.5, 10.0)
    assert rates([], 1.0) == []
