"""``pbft demo``: a throw-away cluster of real replica processes, a workload, a verdict.

It makes a cluster folder in a temporary directory with free loopback ports,
starts 3f+1 ``pbft replica`` processes, runs N requests from C concurrent
clients (in this process, over TCP), then stops the replicas and compares
their executed histories (from each replica's SQLite database): the run is
*safe* if no two replicas executed different batches at one sequence number,
and *live* if every request completed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from pbft import service as kv
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster
from pbft.runtime.storage import read_history

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
) -> dict[str, Any]:
    """Run the demo; ``traitors`` maps a replica id to its ``--traitor`` arguments."""
    traitors = traitors or {}
    with tempfile.TemporaryDirectory(prefix="pbft-demo-") as folder:
        directory = Path(folder)
        n = 3 * f + 1
        files = init_cluster(
            directory, f=f, clients=clients, ports=free_loopback_ports(n), protocol=DEMO_PROTOCOL
        )
        replica_args = {
            replica: [argument for spec in specs for argument in ("--traitor", spec)]
            for replica, specs in traitors.items()
        }
        cluster = LocalCluster(files, directory / "data", replica_args=replica_args)
        cluster.start()
        try:
            if not cluster.wait_connected(timeout=30):
                raise RuntimeError(_startup_failure(cluster))

            async def main() -> tuple[list[float | None], float]:
                remote = [RemoteClient(files, c) for c in range(clients)]
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
        "executed": {str(r): len(h) for r, h in sorted(histories.items())},
        "traitors": sorted(traitors),
        "safe": safe,
        "live": len(done) == requests,
    }
    if conflict:
        summary["conflict"] = conflict
    return summary


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _startup_failure(cluster: LocalCluster) -> str:
    lines = ["the replicas did not all connect to each other within 30 s"]
    for replica, process in cluster.processes.items():
        if not process.running:
            tail = process.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            lines.append(f"replica {replica} exited: {' | '.join(tail)}")
    return "; ".join(lines)
