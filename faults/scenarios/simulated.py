"""Scenario files on simulated time: ``pbft scenario run FILE --sim``.

The same :class:`~faults.scenarios.document.Scenario` as on a real cluster, translated
into a :class:`~faults.verification.sim.SimPlan` and run by the deterministic simulator:
the same traitors and network faults, the same planned workload, one
millisecond per tick. The report has the same shape as a real run's (built by
:func:`faults.scenarios.report.build_report`) plus the checkers' verdicts, and the same
seed always gives the same report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from faults.scenarios import workload as planning
from faults.scenarios.document import Scenario
from faults.scenarios.report import Report, build_report
from faults.verification.checkers import check_run
from faults.verification.explore import describe_plan
from faults.verification.sim import SimPlan, TraitorPlan, simulate
from faults.verification.sim_trace import sim_header
from faults.verification.trace_files import check_trace_path, close_trace, open_trace
from pbft.config import ProtocolParams


def scenario_plan(scenario: Scenario, seed: int) -> SimPlan:
    planned = planning.plan(scenario.workload, scenario.honest_clients, seed)
    byzantine = {spec.client: spec for spec in scenario.byzantine_clients}
    workload = []
    for client in range(scenario.total_clients):
        if client in byzantine:
            ops = [planning.byzantine_put(client, i) for i in range(byzantine[client].requests)]
        else:
            ops = planned.get(client, [])
        workload.append(tuple(op.encode() for op in ops))
    stabilization = max((rule.get("until_ms") or 0 for rule in scenario.network), default=0)
    return SimPlan(
        f=scenario.f,
        n=scenario.n,
        clients=scenario.total_clients,
        workload=tuple(workload),
        params=ProtocolParams(**scenario.protocol_settings()),
        traitors=tuple(
            TraitorPlan(t.replica, t.behaviour, t.trigger, tuple(sorted(t.params.items())))
            for t in scenario.traitors
        ),
        byzantine_clients=tuple((spec.client, spec.mode) for spec in scenario.byzantine_clients),
        network=tuple(dict(rule) for rule in scenario.network),
        stabilization_ms=stabilization,
        liveness_bound_ms=int(scenario.duration_limit_s * 1000),
        retransmit_ms=500,
    )


def run_scenario_sim(
    scenario: Scenario, seed: int | None = None, trace_path: Path | None = None
) -> Report:
    """Run ``scenario`` in the simulator; the report also lists the checkers' violations.
    ``trace_path``: write the run's trace there (docs/trace.md; a picture if it ends .html)."""
    seed = scenario.seed if seed is None else seed
    plan = scenario_plan(scenario, seed)
    trace = None
    if trace_path is not None:
        check_trace_path(trace_path)
        description = {"scenario": scenario.name, "file": str(scenario.source)}
        trace = open_trace(trace_path, sim_header(plan, seed, description | describe_plan(plan)))
    started = time.perf_counter()
    outcome = simulate(plan, seed, trace, max_ms=int(scenario.duration_limit_s * 1000))
    behaviours: dict[int, list[str]] = {}
    for traitor in scenario.traitors:
        behaviours.setdefault(traitor.replica, []).append(traitor.describe())
    replicas: list[dict[str, Any]] = [
        {**replica, "behaviours": behaviours.get(replica["id"], [])} for replica in outcome.replicas
    ]
    report = build_report(
        scenario,
        seed,
        replicas,
        outcome.operations,
        outcome.views_seen,
        outcome.evidence,
        time.perf_counter() - started,
        mode="simulated",
    )
    report["simulated_ms"] = outcome.sim_ms
    report["trace_hash"] = outcome.trace_hash
    violations = check_run(replicas, outcome.operations)
    report["violations"] = [violation.as_dict() for violation in violations]
    if trace is not None and trace_path is not None:
        for violation in violations:
            trace.violation(violation.checker, violation.detail)
        report["trace"] = close_trace(trace, trace_path, f"scenario {scenario.name}")
    report["replay"] = f"pbft scenario run {scenario.source} --sim --seed {seed}"
    return report
