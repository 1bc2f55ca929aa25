"""Running a :class:`~faults.scenarios.document.Scenario` on a real Trio cluster over loopback TCP.

Theory of operation
-------------------
Everything runs in one Trio process: a throw-away cluster folder
(:func:`pbft.runtime.files.init_cluster` with free loopback ports), one
:class:`~pbft.runtime.node.ReplicaNode` per replica and one
:class:`~pbft.runtime.client.RemoteClient` per client, all talking real TCP.

* Every node gets the scenario's ``[[network]]`` rules
  (:class:`faults.traitors.network.NetworkFaults`, seeded ``seed * 1000 + id``) and one
  clock origin, so ``at_ms`` means the same instant for every replica: the
  moment the replicas start.
* A traitor is an honest node whose ``replica`` is swapped for a
  :class:`faults.traitors.base.Traitor` wrapping it: the node only steps it and reads
  its attributes, which the traitor passes through. ``crash`` with
  ``restart_ms`` rebuilds a fresh honest replica from the traitor's journal.
* Byzantine clients are remote clients whose core is wrapped by
  :class:`faults.traitors.clients.ByzantineClient`; they run beside the workload, with
  short timeouts, and stop when the honest clients are done.
* The workload is planned before anything runs, from ``random.Random(seed)``:
  each honest client runs its share of the operations one after another,
  recording invoke and return times on the run's clock; an operation that
  times out is recorded as never returned and the client goes on.
* After the workload (or ``duration_limit_s``), the replicas get a moment to
  settle (honest ones to reach the same sequence number); then each replica's
  executed history (from its SQLite journal), final view, state digest and
  evidence are read, and the cluster is cancelled.

Trio's scheduler is randomized on purpose, so a run on the real cluster is
repeatable in its plan (operations, traitors' and network's random choices)
but not instant by instant; expectations must hold for every seed.

Given ``trace`` (``pbft scenario run FILE --trace out.html``), every replica and
client logs trace events to its own ``*.jsonl`` in the run's folder (instead of
the replicas' human logs), traitors mark the frames they made up
(:func:`faults.traitors.trace.report_forgeries`), partitions are announced as
they start and end, and after the run the logs are merged into one trace
(:mod:`pbft.trace.merge`) written to ``out.jsonl`` and drawn as ``out.html``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import trio

from faults.scenarios import workload as planning
from faults.scenarios.document import Scenario
from faults.scenarios.report import Report, build_report
from faults.traitors.base import Traitor
from faults.traitors.clients import ByzantineClient
from faults.traitors.network import NetworkFaults
from faults.traitors.trace import report_forgeries
from faults.verification.linearizability_picture import picture_from_trace
from pbft.replica import Replica
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.eventlog import EventLog, wall_clock_ms
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.node import ReplicaNode
from pbft.runtime.storage import read_history
from pbft.trace.merge import merge_logs, write_outputs

#: Clients retransmit to every replica after this long without f+1 replies.
RETRANSMIT_TICKS = 300
#: Backoff stops growing here, so a client notices a healed partition within 2 s.
MAX_RETRANSMIT_TICKS = 2_000
#: How long the cluster may take to connect before the run is abandoned.
CONNECT_TIMEOUT_S = 15.0
#: After the workload: wait at most this long for the honest replicas to line up.
SETTLE_S = 1.5
#: A Byzantine client gives up on each of its requests after this long.
BYZANTINE_TIMEOUT_S = 2.0
VIEW_POLL_S = 0.02
#: Free ports are found before they are bound; another process may take one in between.
START_ATTEMPTS = 3


class ScenarioRunError(RuntimeError):
    """The cluster could not be started or did not connect; the message says why."""


def run_scenario(
    scenario: Scenario,
    seed: int | None = None,
    workdir: Path | None = None,
    trace: Path | None = None,
) -> Report:
    """Run ``scenario`` in a fresh Trio loop; ``seed`` overrides the file's; ``trace``: where
    to write the run's trace (``.html``: and its picture)."""
    return trio.run(run_scenario_async, scenario, seed, workdir, trace)


async def run_scenario_async(
    scenario: Scenario,
    seed: int | None = None,
    workdir: Path | None = None,
    trace: Path | None = None,
) -> Report:
    """Run ``scenario`` in the running Trio loop.

    The cluster folder, databases and replica logs live in a temporary
    directory, or in ``workdir`` (kept afterwards, for a post-mortem).
    """
    seed = scenario.seed if seed is None else seed
    with _folder(workdir) as folder, contextlib.ExitStack() as logs:
        attempt = 1
        while True:
            run = _Run(scenario, seed, folder / f"attempt-{attempt}", logs, trace is not None)
            try:
                report = await run.run()
                if trace is not None:
                    logs.close()  # every log flushed before it is merged
                    report["trace"] = run.write_trace(trace)
                return report
            except ExceptionGroup as group:
                port_taken = group.subgroup(OSError) is not None and not run.listening
                if not port_taken or attempt == START_ATTEMPTS:
                    raise
            attempt += 1


@contextlib.contextmanager
def _folder(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="pbft-scenario-") as folder:
        yield Path(folder)


class _Run:
    """One run of one scenario: builds the cluster, drives the clients, gathers the results."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        folder: Path,
        logs: contextlib.ExitStack,
        tracing: bool = False,
    ) -> None:
        self.scenario = scenario
        #: Every node logs trace events to its own *.jsonl, merged after the run.
        self.tracing = tracing
        self.seed = seed
        self.folder = folder
        self.logs = logs
        self.files: ClusterFiles = init_cluster(
            folder / "cluster",
            scenario.f,
            n=scenario.n,
            clients=scenario.total_clients,
            ports=free_loopback_ports(scenario.n),
            protocol=scenario.protocol_settings(),
            force=True,
        )
        self.honest = [i for i in range(scenario.n) if i not in scenario.traitor_ids]
        self.origin = 0.0
        self.nodes: list[ReplicaNode] = []
        self.operations: list[dict[str, Any]] = []
        self.views_seen: set[int] = {0}
        #: Every replica bound its port: a later OSError is not a port taken meanwhile.
        self.listening = False

    def now_ms(self) -> float:
        return round((trio.current_time() - self.origin) * 1000, 2)

    async def run(self) -> Report:
        scenario = self.scenario
        self.origin = trio.current_time()
        self.nodes = [self._node(i) for i in range(scenario.n)]
        connected = False
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                await nursery.start(node.run)
            self.listening = True
            clients = {c: self._client(c) for c in range(scenario.total_clients)}
            for client in clients.values():
                await nursery.start(client.run)
            connected = await self._connected(list(clients.values()))
            if connected:
                nursery.start_soon(self._watch_views)
                if self.tracing:
                    nursery.start_soon(self._announce_partitions)
                with trio.move_on_at(self.origin + scenario.duration_limit_s):
                    await self._workload(clients)
                await self._settle()
                replicas, evidence = self._collect()
                elapsed = trio.current_time() - self.origin
            nursery.cancel_scope.cancel()
        if not connected:
            raise ScenarioRunError(
                f"the replicas and clients did not all connect within {CONNECT_TIMEOUT_S:g} s"
            )
        return build_report(
            scenario, self.seed, replicas, self.operations, self.views_seen, evidence, elapsed
        )

    # ----------------------------------------------------------------- building

    def _node(self, replica_id: int) -> ReplicaNode:
        scenario = self.scenario
        faults = None
        if scenario.network:
            faults = NetworkFaults.from_rules(
                list(scenario.network), seed=self.seed * 1000 + replica_id
            )
        node = ReplicaNode(
            self.files,
            replica_id,
            self.folder / f"data-{replica_id}",
            log=self._event_log("replica", replica_id),
            network_faults=faults,
            clock_origin=self.origin,
        )
        behaviours = scenario.behaviours_of(replica_id)
        if behaviours:
            files = self.files

            def rebuild() -> Replica:
                return Replica(replica_id, files.config, node.signer, files.params)

            node.replica = Traitor(  # type: ignore[assignment]
                node.replica,
                behaviours,
                seed=self.seed * 1000 + 500 + replica_id,
                clock=node.now_ms,
                rebuild=rebuild,
            )
            report_forgeries(node.replica, node.log)  # type: ignore[arg-type]
        return node

    def _log(self, name: str) -> TextIO:
        return self.logs.enter_context(open(self.folder / name, "w", encoding="utf-8"))

    def _event_log(self, role: str, index: int) -> EventLog:
        """A replica's human log, or with tracing a node's trace events, in the run's folder."""
        if self.tracing:
            stream = self._log(f"{role}-{index}.jsonl")
            return EventLog(f"{role} {index}", json_lines=True, stream=stream)
        return EventLog(f"{role} {index}", stream=self._log(f"{role}-{index}.log"))

    def write_trace(self, target: Path) -> str:
        """Merge the nodes' trace logs into ``target``; say what was written."""
        scenario = self.scenario
        traitors: dict[int, list[str]] = {}
        for spec in scenario.traitors:
            traitors.setdefault(spec.replica, []).append(spec.describe())
        header, events = merge_logs(
            sorted(self.folder.glob("*.jsonl")),
            n=scenario.n,
            f=scenario.f,
            clients=list(range(scenario.total_clients)),
            traitors={replica: "; ".join(specs) for replica, specs in traitors.items()},
            seed=self.seed,
            plan={"scenario": scenario.name, "file": str(scenario.source)},
        )
        title = f"scenario {scenario.name} (real cluster, seed {self.seed})"
        drawn = write_outputs(target, header, events, title, [picture_from_trace])
        return "; ".join(drawn)

    async def _announce_partitions(self) -> None:
        """Log each partition's start and end on every replica's lane, when they happen."""
        moments = []
        for rule in self.scenario.network:
            if rule.get("kind") != "partition":
                continue
            groups = " | ".join(
                "{" + ",".join(map(str, group)) + "}" for group in rule.get("groups", [])
            )
            moments.append((rule.get("at_ms", 0), "partition-on", groups))
            if rule.get("until_ms") is not None:
                moments.append((rule["until_ms"], "partition-off", groups))
        for at_ms, fault, groups in sorted(moments):
            instant = self.origin + at_ms / 1000
            await trio.sleep_until(instant)
            # Stamped when the rule took effect (the nodes apply it from then on), not
            # when this task woke up, which may be later on a loaded machine.
            at_wall_ms = wall_clock_ms() - (trio.current_time() - instant) * 1000
            for node in self.nodes:
                node.log.event("fault", fault=fault, detail=groups, at_wall_ms=at_wall_ms)

    def _client(self, client_id: int) -> RemoteClient:
        client = RemoteClient(
            self.files,
            client_id,
            retransmit_ticks=RETRANSMIT_TICKS,
            max_retransmit_ticks=MAX_RETRANSMIT_TICKS,
            log=self._event_log("client", client_id) if self.tracing else None,
        )
        for spec in self.scenario.byzantine_clients:
            if spec.client == client_id:
                client.core = ByzantineClient(client.core, spec.mode)  # type: ignore[assignment]
        return client

    async def _connected(self, clients: list[RemoteClient]) -> bool:
        """Wait until every client reaches every replica, and every replica every peer."""
        with trio.move_on_after(CONNECT_TIMEOUT_S):
            while not all(
                connection.connected
                for client in clients
                for connection in client.connections.values()
            ) or not all(
                link.statistics().connected for node in self.nodes for link in node.links.values()
            ):
                await trio.sleep(0.01)
            return True
        return False

    # ------------------------------------------------------------------ running

    async def _workload(self, clients: dict[int, RemoteClient]) -> None:
        scenario = self.scenario
        plan = planning.plan(scenario.workload, scenario.honest_clients, self.seed)
        async with trio.open_nursery() as everyone:
            for spec in scenario.byzantine_clients:
                everyone.start_soon(self._byzantine_client, clients[spec.client], spec.requests)
            async with trio.open_nursery() as honest:
                for client_id, operations in plan.items():
                    honest.start_soon(
                        self._honest_client, clients[client_id], operations, False,
                        scenario.workload.timeout_s,
                    )  # fmt: skip
            everyone.cancel_scope.cancel()

    async def _byzantine_client(self, client: RemoteClient, requests: int) -> None:
        operations = [planning.byzantine_put(client.id, i) for i in range(requests)]
        timeout = min(BYZANTINE_TIMEOUT_S, self.scenario.workload.timeout_s)
        await self._honest_client(client, operations, True, timeout)

    async def _honest_client(
        self,
        client: RemoteClient,
        operations: list[planning.PlannedOperation],
        byzantine: bool,
        timeout: float,
    ) -> None:
        """Run operations one after another; a timed-out one is recorded as never returned."""
        for planned in operations:
            record: dict[str, Any] = {
                "client": client.id,
                "op": planned.op,
                "key": planned.key,
                "value": planned.value,
                "invoke_ms": self.now_ms(),
                "return_ms": None,
                "result": None,
                "byzantine": byzantine,
            }
            self.operations.append(record)
            try:
                result = await client.execute(planned.encode(), timeout=timeout)
            except NoQuorum:
                continue
            record["return_ms"] = self.now_ms()
            record["result"] = planning.decode(result)

    async def _watch_views(self) -> None:
        while True:
            self.views_seen.update(self.nodes[i].replica.view for i in self.honest)
            await trio.sleep(VIEW_POLL_S)

    async def _settle(self) -> None:
        """Give the honest replicas a moment to execute what committed, up to SETTLE_S."""
        with trio.move_on_after(SETTLE_S):
            await trio.sleep(0.2)
            while len({self.nodes[i].replica.last_executed for i in self.honest}) > 1:
                await trio.sleep(0.05)

    # ---------------------------------------------------------------- gathering

    def _collect(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        replicas = []
        evidence: list[dict[str, Any]] = []
        traitors = {spec.replica: [] for spec in self.scenario.traitors}  # type: ignore[var-annotated]
        for spec in self.scenario.traitors:
            traitors[spec.replica].append(spec.describe())
        for node in self.nodes:
            replica = node.replica
            history = read_history(node.data_dir / "replica.db")
            replicas.append(
                {
                    "id": node.id,
                    "honest": node.id not in traitors,
                    "behaviours": traitors.get(node.id, []),
                    "view": replica.view,
                    "last_executed": replica.last_executed,
                    "executed": [
                        {"seq": seq, "view": view, "digest": digest.hex()}
                        for seq, view, digest in history
                    ],
                    "state_digest": replica.state_digest().hex(),
                }
            )
            if node.id in traitors:
                continue
            for proof in getattr(replica, "evidence", {}).values():
                evidence.append({**proof.summary(), "reported_by": node.id})
        return replicas, evidence
