"""The deterministic simulator: the unchanged protocol core on simulated time.

A :class:`SimPlan` describes a whole run: cluster size, protocol parameters,
traitors (behaviours and triggers from :mod:`faults.traitors.behaviours`), an optional
Twins pair (two nodes sharing one replica's key, each talking to a different
part of the network), Byzantine clients, network faults (:mod:`faults.traitors.network`),
crashes and restarts of honest replicas (recovered from an in-memory journal),
the workload, and the *stabilization time* after which the network is
reliable and timely (no more faults) so that liveness can be checked.

:func:`simulate` runs a plan on :class:`pbft.simnet.Network`: one seeded
``random.Random``, one heap of timed events, virtual milliseconds. Every
random choice (in the network, the traitors, the fault model) derives from
the run's seed, so the same plan and seed give a byte-identical event trace
(:attr:`SimOutcome.trace_hash`). The outcome carries the raw material of a
run report (replicas' executions, stable checkpoints, clients' histories) for
the checkers in :mod:`faults.verification.checkers`, and which rare protocol paths the run
reached (:data:`COVERAGE_PATHS`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from faults.traitors.base import Traitor, Trigger
from faults.traitors.behaviours import make_behaviour
from faults.traitors.clients import ByzantineClient
from faults.traitors.forgery import Keyring
from faults.traitors.network import NetworkFaults
from faults.verification.hooks import install_invariants, install_journals, install_trace
from faults.verification.invariants import StepInvariants
from faults.verification.sim_trace import SimTrace
from faults.verification.timeline import (
    FaultLedger,
    Pacer,
    operation_record,
    release_times,
)
from faults.verification.timeline import (
    random_workload as random_workload,  # re-exported: twins and the benchmark use it
)
from pbft.auth import Authenticator
from pbft.config import ProtocolParams
from pbft.crypto import KEYED_HASH
from pbft.events import (
    CheckpointStable,
    EquivocationDetected,
    NewViewEntered,
    StateTransferred,
)
from pbft.journal import MemoryJournal
from pbft.replica import Replica
from pbft.simnet import Address, SimCluster, make_cluster

#: The rare paths the explorer counts (the share of runs that reached each).
COVERAGE_PATHS = (
    "view_change",
    "new_view_reissues_prepared",
    "null_request",
    "stable_checkpoint",
    "outside_watermarks",
    "equivocation_detected",
    "state_transfer",
)


#: Deliveries and timers one run may take; a run needing more is a storm, reported as
#: a violation (explorer runs take about 1,200 events, 4,400 at most over seeds 0-59).
EVENT_BUDGET = 100_000

#: Small windows and quick timeouts: short runs still reach checkpoints and view changes.
SIM_PARAMS = ProtocolParams(
    checkpoint_interval=4,
    log_window=8,
    batch_size=4,
    view_change_timeout_ticks=300,
    state_transfer_timeout_ticks=200,
    # Small stores, so that a faulty node could overflow them within a short run:
    # the bounded-stores invariant then has something to catch.
    future_buffer_bytes=64 * 1024,
    verified_cache_entries=512,
    # Every message signed, and no channels: a traitor may relay anything it holds
    # to anyone and every check must hold on signatures alone (the strongest
    # adversary; the runtime's channels only narrow what a connection carries).
    # draw.draw_params turns channels on in a quarter of the explorer's seeds.
    signed_replies=1,
    # Every request takes a free sequence number at once: the interleavings in which
    # the explorer finds the holes of issue 8 by itself. draw.draw_params gives a
    # quarter of the seeds the runtime's adaptive batching instead.
    partial_batches_in_flight=4,
)


@attrs.frozen
class TraitorPlan:
    replica: int
    behaviour: str
    trigger: Trigger = attrs.field(factory=Trigger)
    params: tuple[tuple[str, Any], ...] = ()


@attrs.frozen
class CrashPlan:
    """An honest replica crashes at ``at_ms`` and restarts from its journal at ``restart_ms``."""

    replica: int
    at_ms: int
    restart_ms: int


@attrs.frozen
class TwinPlan:
    """Replica ``replica`` has a twin. In phase i (``phase_ms`` long each), peer j talks
    to the copy ``routes[i][j]`` ("replica", "twin" or "both"), clients with even ids to
    the replica and odd ids to the twin; after the last phase the twin falls silent."""

    replica: int
    routes: tuple[tuple[str, ...], ...]
    phase_ms: int


@attrs.frozen
class SimPlan:
    f: int
    n: int
    clients: int
    #: Per client, the operations it runs in order (already encoded).
    workload: tuple[tuple[bytes, ...], ...]
    params: ProtocolParams = attrs.field(factory=lambda: SIM_PARAMS)
    traitors: tuple[TraitorPlan, ...] = ()
    byzantine_clients: tuple[tuple[int, str], ...] = ()
    network: tuple[Mapping[str, Any], ...] = ()
    crashes: tuple[CrashPlan, ...] = ()
    twin: TwinPlan | None = None
    stabilization_ms: int = 0
    liveness_bound_ms: int = 20_000
    retransmit_ms: int = 300
    #: When above 0, operations are released over [0, workload_span_ms] instead of
    #: all at once, so that faults drawn in that span meet traffic (timeline.py).
    workload_span_ms: int = 0
    #: No fault at all: the run must need no view change and no client retransmission
    #: (:func:`faults.verification.checkers.check_quiet`).
    quiet: bool = False

    @property
    def faulty(self) -> set[int]:
        """Replicas that are not honest (traitors and the twinned identity)."""
        ids = {plan.replica for plan in self.traitors}
        if self.twin is not None:
            ids.add(self.twin.replica)
        return ids


@attrs.define
class SimOutcome:
    replicas: list[dict[str, Any]]
    operations: list[dict[str, Any]]
    #: Every view an honest replica was in during the run (0 and each view it entered).
    views_seen: list[int]
    evidence: list[dict[str, Any]]
    coverage: dict[str, bool]
    trace_hash: str
    sim_ms: int
    stabilization_ms: int
    liveness_bound_ms: int
    #: Invariants broken during the run, checked after every step (faults.verification.invariants).
    invariant_violations: list[str] = attrs.field(factory=list)
    #: Scheduled and fired faults, and injections (FaultLedger.as_dict()).
    faults: dict[str, Any] = attrs.field(factory=dict)
    #: Drop reason -> how often honest replicas dropped a message for it.
    drop_reasons: dict[str, int] = attrs.field(factory=dict)


def simulate(
    plan: SimPlan,
    seed: int,
    trace: SimTrace | None = None,
    max_ms: int | None = None,
) -> SimOutcome:
    """Run ``plan`` deterministically from ``seed``; ``trace`` writes the run's events."""
    cluster = make_cluster(
        f=plan.f, n=plan.n, clients=plan.clients, seed=seed, params=plan.params,
        scheme=KEYED_HASH, retransmit_timeout_ticks=plan.retransmit_ms,
    )  # fmt: skip
    network = cluster.network
    rules = [dict(rule) for rule in plan.network]
    if rules:
        fault_model = NetworkFaults.from_rules(rules, seed)
        fault_model.validate(plan.n)
        network.fault_model = fault_model
    journals = install_journals(cluster)
    checker = (Authenticator(cluster.config), cluster.config, plan.params)
    watcher = StepInvariants(plan.faulty, plan.params.log_window, checker=checker)
    drops: dict[str, int] = {}
    install_invariants(cluster, watcher, drops, plan.faulty)
    traitors = _install_traitors(cluster, plan, seed)
    _install_twin(cluster, plan, seed)
    liars = []
    for client, mode in plan.byzantine_clients:
        liar = ByzantineClient(
            cluster.clients[client], mode, seed * 7919 + client, plan.params.max_request_bytes
        )
        liars.append(liar)
        network.replace(("client", client), liar)
    if trace is not None:
        install_trace(cluster, trace, plan.faulty)
    crashes = [_schedule_crash(cluster, crash, journals, trace) for crash in plan.crashes]
    pacer = None
    if plan.workload_span_ms > 0:
        times = release_times(random.Random(seed * 31 + 7), plan.workload, plan.workload_span_ms)
        pacer = Pacer(network, plan.workload, times)
        pacer.start(("pacer", 0))
    else:
        for client, operations in enumerate(plan.workload):
            if operations:
                network.submit(client, operations)
    byzantine = {client for client, _ in plan.byzantine_clients}
    deadline = max_ms or (plan.stabilization_ms + plan.liveness_bound_ms)

    events = 0

    def over_budget() -> bool:
        nonlocal events
        events += 1
        return events > EVENT_BUDGET

    def honest_done() -> bool:
        if over_budget():
            return True
        return (
            (pacer is None or pacer.unreleased == 0)
            and all(client in byzantine for client in network._open)
            and all(
                not queue for client, queue in network._workload.items() if client not in byzantine
            )
        )

    network.run_until(honest_done, deadline)
    finished = network.now
    network.run_until(over_budget, 1_000)  # let every replica settle
    outcome = _outcome(cluster, plan, byzantine, finished)
    outcome.invariant_violations = watcher.violations
    if events > EVENT_BUDGET:
        outcome.invariant_violations.append(
            f"runaway: more than {EVENT_BUDGET} events by {network.now} ms (a message storm "
            f"or a loop between replicas); the run was cut short"
        )
    outcome.faults = _ledger(plan, network, crashes, traitors, liars, finished).as_dict()
    for replica_id in cluster.replicas:
        node = network.nodes[("replica", replica_id)]
        if replica_id not in plan.faulty and node.counters.dropped_for("equivocation"):
            # Counted without a Dropped effect (pbft.replica._note_conflict).
            drops["equivocation"] = drops.get("equivocation", 0) + 1
    outcome.drop_reasons = dict(sorted(drops.items()))
    return outcome


def _ledger(
    plan: SimPlan, network: Any, crashes: list[dict[str, bool]], traitors: list[Traitor],
    liars: list[ByzantineClient], finished: int,
) -> FaultLedger:  # fmt: skip
    """Which of the plan's faults fired (timeline.py says what counts as fired)."""
    ledger = FaultLedger()
    model = network.fault_model
    if isinstance(model, NetworkFaults):
        ledger.network(model.took_effect)
    for crash in crashes:
        ledger.schedule("crash", crash["crashed"])
        ledger.schedule("restart", crash["restarted"])
    for traitor_plan in plan.traitors:
        if traitor_plan.trigger.at_ms is not None:
            ledger.schedule("trigger", finished >= traitor_plan.trigger.at_ms)
    ledger.injections = sum(
        getattr(behaviour, "injected", 0) for t in traitors for behaviour in t.behaviours
    )
    ledger.client_rewrites = sum(liar.rewrites for liar in liars)
    return ledger


# ------------------------------------------------------------------ installation


def _rebuilder(cluster: SimCluster, replica_id: int) -> Callable[[], Replica]:
    return lambda: cluster.fresh_replica(replica_id)


def _keyring(cluster: SimCluster, plan: SimPlan) -> Keyring:
    """Every faulty principal's key: colluding traitors sign for one another."""
    config = cluster.config
    return Keyring(
        {r: Authenticator(config, cluster.replica_signers[r]) for r in sorted(plan.faulty)},
        {c: Authenticator(config, cluster.client_signers[c]) for c, _ in plan.byzantine_clients},
    )


def _install_traitors(cluster: SimCluster, plan: SimPlan, seed: int) -> list[Traitor]:
    network = cluster.network
    keyring = _keyring(cluster, plan)
    traitors = []
    by_replica: dict[int, list[TraitorPlan]] = {}
    for traitor in plan.traitors:
        by_replica.setdefault(traitor.replica, []).append(traitor)
    for replica_id, plans in sorted(by_replica.items()):
        behaviours = [make_behaviour(p.behaviour, p.trigger, **dict(p.params)) for p in plans]
        traitor = Traitor(
            cluster.replicas[replica_id], behaviours, seed=seed * 1009 + replica_id,
            clock=lambda: network.now, rebuild=_rebuilder(cluster, replica_id),
        )  # fmt: skip
        traitor.keyring = keyring
        traitors.append(traitor)
        network.replace(("replica", replica_id), traitor)
    return traitors


def _install_twin(cluster: SimCluster, plan: SimPlan, seed: int) -> None:
    twin = plan.twin
    if twin is None:
        return
    network = cluster.network
    copy = cluster.fresh_replica(twin.replica)
    network.nodes[("twin", twin.replica)] = copy
    silent_after = twin.phase_ms * len(twin.routes)

    def route(now: int, peer: Address, replica: int) -> str:
        if now >= silent_after:
            return "replica"
        if peer[0] != "replica":
            # Clients split between the copies, so the twins see different requests
            # and diverge (identical inputs would make identical twins).
            return "replica" if peer[1] % 2 == 0 else "twin"
        return twin.routes[min(now // twin.phase_ms, len(twin.routes) - 1)][peer[1]]

    network.twin_route = route


def _schedule_crash(
    cluster: SimCluster,
    crash: CrashPlan,
    journals: dict[int, MemoryJournal],
    trace: SimTrace | None = None,
) -> dict[str, bool]:
    """Crash and restart through the network's own clock (a timer of a watcher node);
    the returned flags say whether each happened."""
    network = cluster.network
    address: Address = ("replica", crash.replica)
    happened = {"crashed": False, "restarted": False}

    class Watcher:
        def step(self, event: Any) -> list[Any]:
            if event.name == "crash":
                network.crash(address)
                happened["crashed"] = True
                if trace is not None:
                    trace.fault(address, "crash", f"replica {crash.replica} crashed")
                return []
            if trace is not None:
                trace.fault(
                    address, "restart", f"replica {crash.replica} restarts from its journal"
                )
            cluster.restart(crash.replica, journals[crash.replica])
            happened["restarted"] = True
            return []

    watcher: Address = ("watcher", crash.replica)
    network.nodes[watcher] = Watcher()
    from pbft.events import SetTimer

    network._apply(watcher, SetTimer("crash", crash.at_ms))
    network._apply(watcher, SetTimer("restart", crash.restart_ms))
    return happened


# ------------------------------------------------------------------------ outcome


def _outcome(cluster: SimCluster, plan: SimPlan, byzantine: set[int], now: int) -> SimOutcome:
    network = cluster.network
    faulty = plan.faulty
    notices = network.notices
    checkpoints: dict[int, list[dict[str, Any]]] = {r: [] for r in cluster.replicas}
    coverage = dict.fromkeys(COVERAGE_PATHS, False)
    evidence = []
    # Every view an honest replica entered, as a real run's report counts them.
    entered = {0}
    for _, address, notice in notices:
        kind = type(notice)
        honest = address[0] == "replica" and address[1] not in faulty
        if kind is NewViewEntered and honest:
            entered.add(notice.view)
            coverage["view_change"] = True
            coverage["new_view_reissues_prepared"] |= notice.reissued > 0
            coverage["null_request"] |= notice.null_requests > 0
        elif kind is CheckpointStable and honest:
            coverage["stable_checkpoint"] = True
            checkpoints[address[1]].append({"seq": notice.seq, "digest": notice.state_digest.hex()})
        elif kind is StateTransferred and honest:
            coverage["state_transfer"] = True
        elif kind is EquivocationDetected and honest:
            coverage["equivocation_detected"] = True
            evidence.append({**notice.evidence.summary(), "reported_by": address[1]})
    replicas = []
    for replica_id in sorted(cluster.replicas):
        node = network.nodes[("replica", replica_id)]
        honest = replica_id not in faulty
        if honest and node.counters.dropped_for("outside-watermarks"):
            coverage["outside_watermarks"] = True
        replicas.append(
            {
                "id": replica_id,
                "honest": honest,
                "view": node.view,
                "last_executed": node.last_executed,
                "executed": [
                    {
                        "seq": e.seq,
                        "view": e.view,
                        "digest": e.digest.hex(),
                        "requests": [list(r) for r in e.requests],
                    }
                    for e in network.executed[replica_id]
                ],
                "checkpoints": checkpoints[replica_id],
                "state_digest": node.state_digest().hex(),
            }
        )
    operations = [operation_record(op, op.client in byzantine) for op in network.operations]
    views = sorted(entered | {r["view"] for r in replicas if r["honest"]})
    trace_hash = hashlib.sha256(network.trace_hash.encode()).hexdigest()
    return SimOutcome(
        replicas, operations, views, evidence, coverage, trace_hash, now,
        plan.stabilization_ms, plan.liveness_bound_ms,
    )  # fmt: skip
