"""``pbft demo``: a throw-away cluster of real replica processes, a workload, a verdict.

It makes a cluster folder in a temporary directory with free loopback ports,
starts 3f+1 ``pbft replica`` processes, runs N requests from C concurrent
clients (in this process, over TCP), then stops the replicas and compares
their executed histories (from each replica's SQLite database): the run is
*safe* if no two replicas executed different batches at one sequence number,
and *live* if every request completed. The summary counts requests throughout:
``committed`` (completed for the clients) and ``executed`` (per replica, from
its journal); ``executed_batches`` counts sequence numbers, each a batch of
requests.

With ``trace`` (``pbft demo --trace out.html``) every replica runs with
``--log-json`` (its events go to its log in the demo's folder) and every client
logs its operations, sends and receives beside them; after the run the logs are
merged into one trace (:mod:`pbft.trace.merge`), written as ``out.jsonl``, and
drawn as ``out.html``.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from pbft import service as kv
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.eventlog import EventLog
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster
from pbft.runtime.storage import SqliteJournal, read_history
from pbft.trace.merge import Appendix

#: Protocol settings for a demo on one machine: quick view changes.
DEMO_PROTOCOL = {"view_change_timeout_ticks": 1000, "checkpoint_interval": 32, "log_window": 64}


def agreement(histories: dict[int, list[tuple[int, int, bytes]]]) -> tuple[bool, str]:
    """Do the executed histories agree entry by entry? Returns (safe, first conflict)."""
    first: dict[int, tuple[int, bytes]] = {}
    for replica, history in sorted(histories.items()):
        for seq, _view, digest in history:
            known = first.setdefault(seq, (replica, digest))
            if known[1] != digest:
                return False, (
                    f"seq {seq}: replica {known[0]} executed {known[1].hex()[:16]}, "
                    f"replica {replica} executed {digest.hex()[:16]}"
                )
    return True, ""


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run_workload(
    clients: list[RemoteClient],
    requests: int,
    progress: Callable[[int], None],
    timeout: float,
) -> list[float | None]:
    """Spread ``requests`` puts over the clients; return each one's latency (None: failed)."""
    latencies: list[float | None] = []
    shares = [requests // len(clients) + (i < requests % len(clients)) for i in range(len(clients))]

    async def one_client(client: RemoteClient, count: int) -> None:
        for i in range(count):
            operation = kv.put(f"key-{client.id}-{i}", f"value-{i}")
            started = time.perf_counter()
            try:
                await client.execute(operation, timeout=timeout)
            except NoQuorum:
                latencies.append(None)
            else:
                latencies.append(time.perf_counter() - started)
            progress(1)

    async with trio.open_nursery() as nursery:
        for client, count in zip(clients, shares, strict=True):
            nursery.start_soon(one_client, client, count)
    return latencies


def run_demo(
    f: int,
    clients: int,
    requests: int,
    progress_factory: Callable[[int], Callable[[int], None]],
    timeout: float = 30.0,
    traitors: dict[int, list[str]] | None = None,
    trace: Path | None = None,
    appendix: Sequence[Appendix] = (),
) -> dict[str, Any]:
    """Run the demo; ``traitors`` maps a replica id to its ``--traitor`` arguments; given
    ``trace`` (``.html``, or ``.jsonl`` for the trace alone), trace the run there, with
    ``appendix`` drawn under its picture (see :func:`pbft.trace.merge.write_outputs`)."""
    traitors = traitors or {}
    with (
        tempfile.TemporaryDirectory(prefix="pbft-demo-") as folder,
        contextlib.ExitStack() as client_logs,
    ):
        directory = Path(folder)
        n = 3 * f + 1
        files = init_cluster(
            directory, f=f, clients=clients, ports=free_loopback_ports(n), protocol=DEMO_PROTOCOL
        )
        replica_args = {
            replica: [argument for spec in specs for argument in ("--traitor", spec)]
            for replica, specs in traitors.items()
        }
        cluster = LocalCluster(
            files,
            directory / "data",
            ("--log-json",) if trace is not None else (),
            replica_args=replica_args,
        )
        logs = {c: directory / f"client-{c}.jsonl" for c in range(clients) if trace is not None}
        streams = {
            c: client_logs.enter_context(open(path, "w", encoding="utf-8"))
            for c, path in logs.items()
        }
        cluster.start()
        try:
            if not cluster.wait_connected(timeout=30):
                raise RuntimeError(_startup_failure(cluster))

            async def main() -> tuple[list[float | None], float]:
                remote = [
                    RemoteClient(files, c, log=_client_log(c, streams.get(c)))
                    for c in range(clients)
                ]
                async with trio.open_nursery() as nursery:
                    for client in remote:
                        await nursery.start(client.run)
                    for client in remote:
                        await client.wait_connected(timeout=30)
                    started = time.perf_counter()
                    latencies = await run_workload(
                        remote, requests, progress_factory(requests), timeout
                    )
                    elapsed = time.perf_counter() - started
                    nursery.cancel_scope.cancel()
                return latencies, elapsed

            latencies, elapsed = trio.run(main)
            # Let every replica finish executing what committed, then stop them.
            cluster.wait_until(
                lambda statuses: len({s["last_executed"] for s in statuses.values() if s}) == 1,
                timeout=5,
            )
            views = sorted({s["view"] for s in cluster.statuses().values() if s})
        finally:
            cluster.stop()
        histories = {
            replica: read_history(process.data_dir / "replica.db")
            for replica, process in cluster.processes.items()
        }
        executed = {
            replica: requests_executed(process.data_dir / "replica.db", files, replica)
            for replica, process in cluster.processes.items()
        }
        written: list[str] = []
        if trace is not None:
            client_logs.close()  # flushed before they are read
            plan = {"command": "demo", "f": f, "clients": clients, "requests": requests}
            written = _write_trace(trace, cluster, list(logs.values()), plan, traitors, appendix)
    done = [latency * 1000 for latency in latencies if latency is not None]
    honest = {r: h for r, h in histories.items() if r not in traitors}
    safe, conflict = agreement(honest)
    summary: dict[str, Any] = {
        "f": f,
        "n": n,
        "clients": clients,
        "requests": requests,
        "committed": len(done),
        "elapsed_s": round(elapsed, 3),
        "throughput_ops": round(len(done) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": _round(statistics.median(done) if done else None),
            "p99": _round(percentile(done, 0.99)),
        },
        "views": views,
        # Requests, like "committed"; a batch (one sequence number) holds several.
        "executed": {str(r): executed[r] for r in sorted(executed)},
        "executed_batches": {str(r): len(h) for r, h in sorted(histories.items())},
        "traitors": sorted(traitors),
        "safe": safe,
        "live": len(done) == requests,
    }
    if conflict:
        summary["conflict"] = conflict
    if trace is not None:
        summary["trace"] = written
    return summary


def _client_log(client: int, stream: Any) -> EventLog | None:
    return None if stream is None else EventLog(f"client {client}", json_lines=True, stream=stream)


def _write_trace(
    target: Path,
    cluster: LocalCluster,
    client_logs: list[Path],
    plan: dict[str, Any],
    traitors: dict[int, list[str]],
    appendix: Sequence[Appendix],
) -> list[str]:
    """Merge the replicas' and clients' logs into one trace; write it (and its picture)."""
    from pbft.trace.merge import merge_logs, write_outputs

    paths = [process.log_path for process in cluster.processes.values()] + client_logs
    n, f, clients = len(cluster.processes), plan["f"], plan["clients"]
    header, events = merge_logs(
        paths,
        n=n,
        f=f,
        clients=list(range(clients)),
        traitors={replica: " ".join(specs) for replica, specs in traitors.items()},
        plan=plan,
    )
    title = f"pbft demo: n = {n}, f = {f}, {clients} clients"
    return write_outputs(target, header, events, title, appendix)


def describe_executed(summary: dict[str, Any]) -> str:
    """Requests executed per replica, and the batches (sequence numbers) they came in."""
    counts = {
        replica: f"{requests} requests in {summary['executed_batches'][replica]} batches"
        for replica, requests in summary["executed"].items()
    }
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))}, on every replica"
    return ", ".join(f"replica {replica}: {text}" for replica, text in counts.items())


def requests_executed(database: Path, files: ClusterFiles, replica: int) -> int:
    """How many client requests the stopped replica's journal says it executed."""
    journal = SqliteJournal(database, files.config.cluster_id, replica)
    try:
        return sum(len(requests) for _, _, _, requests in journal.history())
    finally:
        journal.close()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _startup_failure(cluster: LocalCluster) -> str:
    lines = ["the replicas did not all connect to each other within 30 s"]
    for replica, process in cluster.processes.items():
        if not process.running:
            tail = process.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            lines.append(f"replica {replica} exited: {' | '.join(tail)}")
    return "; ".join(lines)
