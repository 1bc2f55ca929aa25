"""Scenarios on a real Trio cluster over loopback TCP: every scripted scenario meets its own
expectations (the f+1 one included: the checker must catch its safety violation), and the
report says what each replica executed and what each client saw."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from faults.scenarios.document import (
    load_scenario,
    parse_scenario,
    run_scenario,
    run_scenario_async,
)
from faults.scenarios.report import format_report
from pbft.cli import main

SCENARIOS = Path(__file__).parents[2] / "scripts" / "scenarios"

#: Small, with every operation, a traitor and a Byzantine client, for the report's shape.
SMALL = """\
name = "small"
f = 1
seed = 3
[workload]
clients = 2
requests = 16
keys = 2
mix = { put = 0.4, get = 0.3, delete = 0.1, cas = 0.2 }
[[traitor]]
replica = 3
behaviour = "lie"
what = "result"
[[byzantine_client]]
mode = "reuse-timestamp"
requests = 2
[expect]
safe = true
live = true
view_change = false
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda path: path.stem)
def test_every_scripted_scenario_meets_its_expectations(path: Path) -> None:
    report = run_scenario(load_scenario(path))
    assert report["passed"], (
        f"{path.name}: {json.dumps(report['expectations'])}\n{format_report(report)}\n"
        f"replay: {report['replay']}"
    )


async def test_the_report_says_what_replicas_executed_and_clients_saw() -> None:
    report = await run_scenario_async(parse_scenario(SMALL, "small.toml"), seed=5)
    assert report["seed"] == 5 and report["name"] == "small" and report["passed"]
    assert report["safe"] and report["live"] and not report["view_change"]
    assert report["expectations"]["view_change"] == {
        "expected": False, "actual": False, "met": True,
    }  # fmt: skip
    assert report["views_seen"] == [0]

    replicas = report["replicas"]
    assert [r["id"] for r in replicas] == [0, 1, 2, 3]
    assert [r["honest"] for r in replicas] == [True, True, True, False]
    assert replicas[3]["behaviours"] == ["lie(what='result')"]
    honest = replicas[:3]
    assert len({r["state_digest"] for r in honest}) == 1
    for replica in replicas:
        seqs = [entry["seq"] for entry in replica["executed"]]
        assert seqs == sorted(seqs) and set(replica["executed"][0]) == {"seq", "view", "digest"}
        assert replica["view"] == 0 and replica["last_executed"] == seqs[-1]

    operations = report["clients"]
    honest_operations = [op for op in operations if not op["byzantine"]]
    assert len(honest_operations) == 16 and {op["client"] for op in honest_operations} == {0, 1}
    assert {op["client"] for op in operations if op["byzantine"]} <= {2}
    for op in honest_operations:
        assert set(op) == {
            "client", "op", "key", "value", "invoke_ms", "return_ms", "result", "byzantine",
        }  # fmt: skip
        assert 0 <= op["invoke_ms"] <= op["return_ms"]
        if op["op"] == "cas":
            assert len(op["value"]) == 2 and type(op["result"]) is bool
        elif op["op"] == "put":
            assert op["result"] is True
        elif op["op"] == "get":
            assert op["result"] is None or op["result"].startswith("v")
    # The traitor lied about results; clients took f+1 matching ones, so no lie got through.
    assert all(op["result"] != "lie" for op in operations)
    # One clock for the whole run: each client's operations follow one another.
    for client in (0, 1):
        mine = [op for op in honest_operations if op["client"] == client]
        assert all(a["return_ms"] <= b["invoke_ms"] for a, b in itertools.pairwise(mine))
    json.dumps(report)  # JSON-ready as it is


def test_pbft_scenario_run_exits_0_exactly_when_the_expectations_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No traitor, and a view change expected: the run is fine, the expectation is not."""
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("f = 1\n[workload]\nrequests = 6\n[expect]\nlive = true\nview_change = true\n")
    assert main(["scenario", "run", str(wrong), "--seed", "4", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] == 4 and report["safe"] and report["live"]
    assert report["expectations"]["view_change"] == {
        "expected": True, "actual": False, "met": False,
    }  # fmt: skip
    assert not report["passed"]

    right = tmp_path / "right.toml"
    right.write_text(wrong.read_text().replace("view_change = true", "view_change = false"))
    assert main(["scenario", "run", str(right)]) == 0
    out = capsys.readouterr().out
    assert "PASS  view_change: expected false, got false" in out and "PASSED" in out
