"""scripts/coverage_core.py on a few explorer seeds: the table names every core module,
the figures are percentages, and the Markdown and JSON files are written.

The real measurement (CI's 2,000 seeds, the Twins sets, the pinned regressions and the
scenarios) takes minutes and is reported in docs/verification.md; this test only keeps
the script working.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("coverage", reason="coverage is not installed: pip install -e '.[verify]'")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "coverage_core.py"
MODULES = [
    "pbft/auth.py",
    "pbft/certificates.py",
    "pbft/client.py",
    "pbft/encoding.py",
    "pbft/replica.py",
    "pbft/replica_catch_up.py",
    "pbft/replica_checkpoints.py",
    "pbft/replica_gate.py",
    "pbft/replica_normal.py",
    "pbft/replica_recovery.py",
    "pbft/replica_requests.py",
    "pbft/replica_stores.py",
    "pbft/replica_view_change.py",
]
ROW = re.compile(r"^\| (\S+) \| (\d+) \| ([\d.]+)% \| (\d+) \| (\d+) \| ([\d.]+)% \|$")
BRANCH = re.compile(r"^  (pbft/\S+\.py):(\d+) -> (\d+|exit) ")


def test_the_script_reports_branch_coverage_of_every_core_module(tmp_path: Path) -> None:
    markdown, figures = tmp_path / "coverage.md", tmp_path / "coverage.json"
    ran = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "explorer", "--seeds", "3", "--start", "10",
         "--jobs", "1", "--markdown", str(markdown), "--json", str(figures)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    rows = {m.group(1): m for line in ran.stdout.splitlines() if (m := ROW.match(line))}
    assert set(MODULES) | {"**total**"} == set(rows)
    for match in rows.values():
        statements, branches, taken = int(match.group(2)), int(match.group(4)), int(match.group(5))
        assert 0 <= taken <= branches and statements > 0
        assert 0.0 <= float(match.group(3)) <= 100.0
        assert 0.0 <= float(match.group(6)) <= 100.0
    missed = [m for line in ran.stdout.splitlines() if (m := BRANCH.match(line))]
    total = rows["**total**"]
    assert len(missed) >= int(total.group(4)) - int(total.group(5)) > 0
    summary = json.loads(figures.read_text())
    assert summary["runs"] == {"explorer": 3}
    assert summary["total"]["branch_percent"] == float(total.group(6))
    text = markdown.read_text()
    assert "--parts explorer --seeds 3" in text and "| **total** |" in text
