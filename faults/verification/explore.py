"""Randomized fault exploration: many seeded simulations, checked, counted, shrunk.

Each seed draws a whole :class:`~faults.verification.sim.SimPlan` (:func:`draw_plan`): the
cluster size (n = 4 for 60% of seeds, n = 7 for the rest, unless ``f`` is
fixed), up to f Byzantine replicas with behaviours and triggers from
:mod:`faults.traitors.behaviours` (including Twins and ByzzFuzz-style mutation), loss,
delay, duplication, reordering and partitions, crashes and restarts of honest
replicas, all before a stabilization time after which the network is
reliable and timely; the primary of view 0 is faulty in most runs, so that
view changes are common. The run is simulated and every checker of
:mod:`faults.verification.checkers` runs on it.

:func:`explore` runs seeds on all the cores asked for and returns a summary:
runs, simulated seconds, runs per second, violations (seed, checker, detail,
and the command that replays it) and coverage (for each rare protocol path,
the share of runs that reached it). :func:`shrink` turns a failing plan into a
smaller one that still fails the same checker (fewer faults, fewer requests,
shorter schedule).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from faults.traitors.base import Trigger
from faults.verification.checkers import Violation, check_quiet, check_run
from faults.verification.draw import draw_plan as draw_plan  # re-exported: the explorer's API
from faults.verification.reach import drop_reason_summary, fault_summary
from faults.verification.sim import (
    COVERAGE_PATHS,
    SimPlan,
    TraitorPlan,
    random_workload,
    simulate,
)
from faults.verification.sim_trace import SimTrace


@attrs.frozen
class SeedResult:
    seed: int
    n: int
    violations: tuple[Violation, ...]
    coverage: dict[str, bool]
    sim_ms: int
    wall_s: float
    trace_hash: str
    operations: int
    #: Scheduled and fired faults and injections (timeline.FaultLedger.as_dict()).
    faults: dict[str, Any] = attrs.field(factory=dict)
    #: The drop reasons honest replicas reached in this run.
    drop_reasons: frozenset[str] = frozenset()


def run_plan(plan: SimPlan, seed: int, trace: SimTrace | None = None) -> SeedResult:
    started = time.perf_counter()
    outcome = simulate(plan, seed, trace)
    violations = check_run(
        outcome.replicas, outcome.operations, outcome.stabilization_ms, outcome.liveness_bound_ms
    )
    violations += [Violation("invariant", text) for text in outcome.invariant_violations]
    if plan.quiet:
        violations += check_quiet(outcome.views_seen, outcome.operations, plan.retransmit_ms)
    return SeedResult(
        seed, plan.n, tuple(violations), outcome.coverage, outcome.sim_ms,
        time.perf_counter() - started, outcome.trace_hash,
        sum(len(ops) for ops in plan.workload), outcome.faults,
        frozenset(outcome.drop_reasons),
    )  # fmt: skip


def run_seed(seed: int, f: int | None = None) -> SeedResult:
    return run_plan(draw_plan(seed, f), seed)


def _run_seed_args(arguments: tuple[int, int | None]) -> SeedResult:
    return run_seed(*arguments)


def replay_command(seed: int, f: int | None) -> str:
    return f"pbft explore --replay {seed}" + ("" if f is None else f" --f {f}")


def run_all(
    function: Callable[[Any], Any],
    arguments: list[Any],
    jobs: int,
    progress: Callable[[Any], None] | None = None,
    chunksize: int = 4,
) -> list[Any]:
    """``function`` over ``arguments``, in ``jobs`` forked processes (patches applied by
    a test, such as a mutant, are inherited); results in completion order."""
    results: list[Any] = []
    if jobs > 1 and len(arguments) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(jobs) as pool:
            for result in pool.imap_unordered(function, arguments, chunksize=chunksize):
                results.append(result)
                if progress is not None:
                    progress(result)
    else:
        for argument in arguments:
            results.append(function(argument))
            if progress is not None:
                progress(results[-1])
    return results


def explore(
    seeds: Iterable[int],
    f: int | None = None,
    jobs: int = 1,
    progress: Callable[[SeedResult], None] | None = None,
) -> dict[str, Any]:
    """Run and check every seed; return the summary (see the module docstring)."""
    started = time.perf_counter()
    arguments = [(seed, f) for seed in seeds]
    results = run_all(_run_seed_args, arguments, jobs, progress, chunksize=4)
    elapsed = time.perf_counter() - started
    results.sort(key=lambda result: result.seed)
    return summarize(results, elapsed, f)


def summarize(results: list[SeedResult], elapsed: float, f: int | None) -> dict[str, Any]:
    runs = len(results)
    violations = [
        {
            **violation.as_dict(),
            "seed": result.seed,
            "replay": replay_command(result.seed, f),
            # The same replay, drawing the run with the conflicting executions marked.
            "picture": f"{replay_command(result.seed, f)} --trace violation-{result.seed}.html",
        }
        for result in results
        for violation in result.violations
    ]
    by_kind: dict[str, int] = {}
    for violation in violations:
        by_kind[violation["checker"]] = by_kind.get(violation["checker"], 0) + 1
    return {
        "runs": runs,
        "violations": violations,
        "violations_by_kind": by_kind,
        "runs_per_second": round(runs / elapsed, 2) if elapsed > 0 else None,
        "simulated_seconds": round(sum(r.sim_ms for r in results) / 1000, 1),
        "wall_seconds": round(elapsed, 2),
        "coverage": {
            path: round(sum(r.coverage[path] for r in results) / runs, 3) if runs else 0.0
            for path in COVERAGE_PATHS
        },
        "share_n4": round(sum(r.n == 4 for r in results) / runs, 3) if runs else 0.0,
        "min_operations": min((r.operations for r in results), default=0),
        "faults": fault_summary(results),
        "drop_reasons": drop_reason_summary(results),
    }


# ------------------------------------------------------------------------ shrink


def shrink(plan: SimPlan, seed: int, checker: str, budget: int = 60) -> SimPlan:
    """A smaller plan that still fails ``checker``: greedy removal of faults, requests
    and schedule, keeping each step that still fails."""
    runs = 0

    def fails(candidate: SimPlan) -> bool:
        nonlocal runs
        runs += 1
        try:
            result = run_plan(candidate, seed)
        except Exception:  # a candidate the simulator cannot run is no reproducer
            return False
        return any(v.checker == checker for v in result.violations)

    improved = True
    while improved and runs < budget:
        improved = False
        for candidate in _smaller(plan):
            if runs >= budget:
                break
            if fails(candidate):
                plan = candidate
                improved = True
                break
    return plan


def _smaller(plan: SimPlan) -> Iterable[SimPlan]:
    for i in range(len(plan.traitors)):
        yield attrs.evolve(plan, traitors=plan.traitors[:i] + plan.traitors[i + 1 :])
    if plan.twin is not None:
        yield attrs.evolve(plan, twin=None)
    for i in range(len(plan.network)):
        yield attrs.evolve(plan, network=plan.network[:i] + plan.network[i + 1 :])
    for i in range(len(plan.crashes)):
        yield attrs.evolve(plan, crashes=plan.crashes[:i] + plan.crashes[i + 1 :])
    if plan.byzantine_clients:
        yield attrs.evolve(plan, byzantine_clients=())
    if sum(len(ops) for ops in plan.workload) > 2:
        yield attrs.evolve(
            plan, workload=tuple(ops[: max(1, len(ops) // 2)] for ops in plan.workload)
        )
    if plan.stabilization_ms > 500:
        yield attrs.evolve(plan, stabilization_ms=plan.stabilization_ms // 2)


def describe_plan(plan: SimPlan) -> dict[str, Any]:
    """A JSON-ready description of a plan (for violation reports)."""
    return {
        "n": plan.n,
        "f": plan.f,
        "clients": plan.clients,
        "operations": sum(len(ops) for ops in plan.workload),
        "stabilization_ms": plan.stabilization_ms,
        "adaptive_batching": plan.params.partial_batches_in_flight == 1,
        "channels": not plan.params.signed_replies,
        "traitors": [
            {"replica": t.replica, "behaviour": t.behaviour, **dict(t.params),
             **{k: (sorted(v) if isinstance(v, frozenset) else v)
                for k, v in attrs.asdict(t.trigger).items() if v not in (None, frozenset())}}
            for t in plan.traitors
        ],
        "twin": None if plan.twin is None else {"replica": plan.twin.replica,
                                                 "routes": plan.twin.routes},
        "network": [dict(rule) for rule in plan.network],
        "crashes": [attrs.asdict(c) for c in plan.crashes],
    }  # fmt: skip


def draw_canary_plan(seed: int) -> SimPlan:
    """More traitors than f (two in a 4-replica cluster): the checkers must catch the
    safety violation this allows in a good share of seeds, or they prove nothing.

    The recipe of scripts/scenarios/f-plus-one-breaks-safety.toml: both traitors talk
    only to each other and one honest replica while the first requests commit, the
    primary then stops proposing, both hide their certificates from the view change,
    and the other honest replica builds the new view without them.
    """
    rng = random.Random(seed)
    accomplice = rng.choice([2, 3])
    witness = 5 - accomplice  # the honest replica the traitors commit with
    stop = rng.randint(3, 8)
    params = attrs.evolve(draw_plan(seed, 1).params, checkpoint_interval=64, log_window=128)
    lie = (("what", "view-change"),)
    split = frozenset({accomplice, witness})
    pre_prepares = frozenset({"PRE-PREPARE"})
    traitors = (
        TraitorPlan(0, "selective", Trigger(until_view=1, targets=split)),
        TraitorPlan(0, "stall", Trigger(from_seq=stop, until_view=1, types=pre_prepares)),
        TraitorPlan(0, "lie", Trigger(), lie),
        TraitorPlan(
            accomplice, "selective", Trigger(until_view=1, targets=frozenset({0, witness}))
        ),
        TraitorPlan(accomplice, "lie", Trigger(), lie),
    )
    clients = 2
    return SimPlan(
        f=1, n=4, clients=clients, params=params,
        workload=random_workload(rng, clients, rng.randint(20, 30), keys=3),
        traitors=traitors,
        network=({"kind": "loss", "links": [[witness, 1]], "rate": 1.0},),
        stabilization_ms=0, liveness_bound_ms=8_000,
    )  # fmt: skip
