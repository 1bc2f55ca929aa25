"""The simulator and the explorer: deterministic replay, checkers that can fail, and the
CI exploration run with its coverage gates (the verification issue's CI requirements)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from faults.verification.checkers import check_agreement, check_liveness, check_validity
from faults.verification.explore import (
    draw_canary_plan,
    draw_plan,
    explore,
    run_plan,
    run_seed,
    shrink,
)
from faults.verification.sim import COVERAGE_PATHS, simulate
from faults.verification.sim_trace import SimTrace, sim_header
from pbft.trace.format import TraceWriter

#: Seeds in the CI run, and the share of runs each rare path must reach.
CI_SEEDS = 2000
COVERAGE_GATE = 0.05


@pytest.mark.slow
def test_the_same_seed_gives_a_byte_identical_trace() -> None:
    """20 seeds replayed twice: identical event traces, line for line."""
    for seed in range(20):
        plan = draw_plan(seed)
        first, second = (
            SimTrace(TraceWriter(io.StringIO(), sim_header(plan, seed, None))) for _ in range(2)
        )
        simulate(plan, seed, first)
        simulate(plan, seed, second)
        assert first.writer.stream.getvalue() == second.writer.stream.getvalue(), seed
        assert run_seed(seed).trace_hash == run_seed(seed).trace_hash


def test_different_seeds_give_different_runs() -> None:
    assert len({run_seed(seed).trace_hash for seed in range(10)}) == 10


@pytest.mark.slow
def test_ci_exploration_finds_no_violation_and_reaches_every_rare_path() -> None:
    """2,000 seeds, about 60% with n = 4 and 40% with n = 7, each with at least 20
    operations and a view change in at least half of them; every rare path reached in
    at least 5% of the runs (random faults that never reach the hard paths prove
    nothing)."""
    summary = explore(range(CI_SEEDS), jobs=2)
    assert summary["runs"] == CI_SEEDS
    assert summary["violations"] == [], json.dumps(summary["violations"][:3], indent=1)
    assert 0.5 <= summary["share_n4"] <= 0.7
    assert summary["min_operations"] >= 20
    assert summary["coverage"]["view_change"] >= 0.5
    for path in COVERAGE_PATHS:
        assert summary["coverage"][path] >= COVERAGE_GATE, (path, summary["coverage"])


def test_the_canary_with_f_plus_one_traitors_is_caught() -> None:
    """With more traitors than f the checkers must report violations in a good share of
    seeds: checkers that never fail prove nothing."""
    caught = 0
    for seed in range(30):
        result = run_plan(draw_canary_plan(seed), seed)
        caught += any(v.checker == "agreement" for v in result.violations)
    assert caught >= 20


def test_a_violation_shrinks_to_a_smaller_schedule_that_still_fails() -> None:
    seed = 3
    plan = draw_canary_plan(seed)
    small = shrink(plan, seed, "agreement", budget=40)
    assert any(v.checker == "agreement" for v in run_plan(small, seed).violations)
    size = lambda p: (  # noqa: E731
        len(p.traitors) + len(p.network) + sum(len(ops) for ops in p.workload)
    )
    assert size(small) < size(plan)


def test_checkers_report_the_first_conflict() -> None:
    replicas = [
        {"id": 0, "honest": True, "executed": [{"seq": 1, "view": 0, "digest": "aa" * 32,
                                                 "requests": [[0, 1]]}]},
        {"id": 1, "honest": True, "executed": [{"seq": 1, "view": 0, "digest": "bb" * 32,
                                                 "requests": [[0, 1], [0, 1]]}]},
        {"id": 2, "honest": False, "executed": [{"seq": 1, "view": 0, "digest": "cc" * 32}]},
    ]  # fmt: skip
    (violation,) = check_agreement(replicas)
    assert "seq 1" in violation.detail and "replica 0" in violation.detail
    operations = [{"client": 0, "timestamp": 1, "op": "put", "key": "k", "value": "v",
                   "invoke_ms": 0, "return_ms": None, "result": None}]  # fmt: skip
    (duplicate,) = check_validity(replicas, operations)
    assert "twice" in duplicate.detail
    (late,) = check_liveness(operations, stabilization_ms=100, bound_ms=50)
    assert "never returned" in late.detail
    forged = [dict(operations[0], timestamp=2)]
    (unissued,) = check_validity(replicas[:1], forged)
    assert "no client issued" in unissued.detail


def test_explore_command_prints_json_and_replays_a_seed_with_its_trace(tmp_path: Path) -> None:
    def pbft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pbft", "explore", *args], capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    ran = pbft("--seeds", "12", "--start", "100", "--json")  # one process per core
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 12 and summary["violations"] == []
    assert {"runs_per_second", "coverage"} <= set(summary)
    # The results do not depend on how many processes ran the seeds.
    alone = json.loads(pbft("--seeds", "12", "--start", "100", "--jobs", "1", "--json")
                       .stdout.strip().splitlines()[-1])  # fmt: skip
    for key in ("coverage", "drop_reasons", "faults", "simulated_seconds"):
        assert alone[key] == summary[key], key
    traces = []
    for name in ("a.txt", "b.txt"):
        replay = pbft("--replay", "105", "--trace", str(tmp_path / name))
        assert replay.returncode == 0, replay.stderr
        traces.append((tmp_path / name).read_text())
    assert traces[0] == traces[1] and traces[0].count("\n") > 100
