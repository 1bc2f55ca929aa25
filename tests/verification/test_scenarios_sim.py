"""Scenario files run in the simulator too: deterministic, same report shape, same verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faults.scenarios.document import load_scenario
from faults.scenarios.simulated import run_scenario_sim

SCENARIOS = sorted(Path(__file__).resolve().parents[2].glob("scripts/scenarios/*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_scenario_meets_its_expectations_in_the_simulator(path: Path) -> None:
    report = run_scenario_sim(load_scenario(path))
    assert report["passed"], json.dumps(report["expectations"])
    assert report["mode"] == "simulated"
    for key in ("replicas", "clients", "safe", "live", "evidence"):
        assert key in report
    if report["safe"]:
        assert report["violations"] == [] or all(
            v["checker"] == "liveness" for v in report["violations"]
        )
    else:
        assert any(v["checker"] == "agreement" for v in report["violations"])


def test_the_same_seed_gives_the_same_simulated_report() -> None:
    scenario = load_scenario(SCENARIOS[0])
    first, second = run_scenario_sim(scenario, seed=3), run_scenario_sim(scenario, seed=3)
    assert first["trace_hash"] == second["trace_hash"]
    assert first["clients"] == second["clients"]
    assert first["replicas"] == second["replicas"]


def test_scenario_run_sim_command() -> None:
    path = next(p for p in SCENARIOS if p.stem == "f-plus-one-breaks-safety")
    result = subprocess.run(
        [sys.executable, "-m", "pbft", "scenario", "run", str(path), "--sim", "--json",
         "--seed", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["safe"] is False and report["passed"] is True
    assert "--sim --seed 4" in report["replay"]
