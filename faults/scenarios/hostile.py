"""Hostile input at one replica of a real cluster, under a workload that needs that replica.

:func:`run_hostile` starts four replica processes on loopback (f = 1), stops one
backup other than the attacked replica, so that every quorum of 2f + 1 = 3 among the
three left contains the attacked one, and runs closed-loop clients
(:class:`~pbft.runtime.client.RemoteClient`) in three phases:

1. *baseline*: the workload alone, for ``baseline_s`` seconds;
2. *attack*: the workload while :class:`faults.traitors.socket_attacks.SocketAttacker`
   sends the replica every kind of hostile input for ``duration_s`` seconds, with a
   configured client's key (the last one: the workload uses the others);
3. *after*: the attacker's connections closed, a short settle.

It samples the attacked replica's resident memory (VmRSS) throughout, and reads
its log afterwards: the lines written during the attack, which the replica must
rate-limit (:mod:`pbft.runtime.ratelimit`), against the hostile inputs sent.
The returned dictionary is the ``--json`` document of ``scripts/hostile_input.py``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from faults.traitors.socket_attacks import KINDS, SocketAttacker
from pbft import service as kv
from pbft.bench.run import process_cpu_seconds, resident_mb
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.descriptors import raise_open_files_limit
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster, load_cluster
from pbft.runtime.limits import max_frame_bytes
from pbft.runtime.processes import LocalCluster

#: How often the attacked replica's memory is sampled during the attack.
SAMPLE_SECONDS = 0.25
#: Log events that record a refusal (rate-limited by the replica).
REJECTION_EVENTS = (
    "handshake-failed", "input-rejected", "connection-refused", "connected", "disconnected",
)  # fmt: skip


@attrs.define
class HostileSettings:
    duration_s: float = 30.0
    baseline_s: float = 5.0
    settle_s: float = 2.0
    #: The attacked replica (default a backup).
    replica: int = 1
    #: Connections the flood holds open at once.
    connections: int = 2000
    #: Concurrent loops per kind of attack (the flood has ``connections``).
    workers_per_kind: int = 2
    #: Closed-loop workload clients.
    clients: int = 2
    #: An existing ``pbft init`` folder; None: a temporary one.
    directory: Path | None = None
    #: The kinds of attack to run (:data:`faults.traitors.socket_attacks.KINDS`).
    kinds: tuple[str, ...] = KINDS


def stopped_replica(n: int, attacked: int, primary: int = 0) -> int:
    """The replica to stop: the highest-numbered one that is neither attacked nor primary."""
    return max(r for r in range(n) if r not in (attacked, primary))


def run_hostile(
    settings: HostileSettings, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    open_files = raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="pbft-hostile-") as folder:
        if settings.directory is None:
            files = init_cluster(Path(folder) / "cluster", f=1, clients=settings.clients + 1,
                                 ports=free_loopback_ports(4))  # fmt: skip
        else:
            files = load_cluster(settings.directory)
        if len(files.config.client_keys) < settings.clients + 1:
            raise ValueError(f"the cluster needs {settings.clients + 1} clients")
        cluster = LocalCluster(files, files.directory / "data")
        progress(f"starting 4 replicas (open files limit {open_files}) ...")
        cluster.start()
        try:
            if not cluster.wait_connected(timeout=30):
                raise RuntimeError(f"the replicas did not connect: {cluster.statuses()}")
            stopped = stopped_replica(files.config.n, settings.replica)
            cluster.processes[stopped].stop()
            progress(f"stopped replica {stopped}: every quorum of 3 needs replica "
                     f"{settings.replica}, the attacked one")  # fmt: skip
            report = trio.run(_drive, files, cluster, settings, progress)
            report["stopped_replica"] = stopped
            report["open_files_limit"] = open_files
        finally:
            cluster.stop()
    return report


async def _drive(
    files: ClusterFiles,
    cluster: LocalCluster,
    settings: HostileSettings,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    target = cluster.processes[settings.replica]
    assert target.popen is not None
    pid = target.popen.pid
    done = [0]

    async def closed_loop(client: RemoteClient) -> None:
        i = 0
        while True:
            i += 1
            try:
                await client.execute(kv.put(f"k{client.id}-{i % 16}", f"v{i}"), timeout=10)
            except NoQuorum:
                continue
            done[0] += 1

    async with trio.open_nursery() as nursery:
        clients = [RemoteClient(files, c) for c in range(settings.clients)]
        for client in clients:
            await nursery.start(client.run)
            await client.wait_connected(files.config.n - 1, timeout=30)
            nursery.start_soon(closed_loop, client)
        await trio.sleep(settings.baseline_s)
        baseline_ops = done[0]
        attack = await _attack(files, settings, pid, target.log_path, done, progress)
        attack_ops = done[0] - baseline_ops
        await trio.sleep(settings.settle_s)
        after_ops = done[0] - baseline_ops - attack_ops
        nursery.cancel_scope.cancel()
    status = target.status() or {}
    log = attack.pop("log")
    #: The replica's count: connections served at once at most, and closed unserved at its cap.
    served = status.get("connections", {})
    return {
        "replica": settings.replica,
        "alive": target.running and status.get("status") not in (None, "exited", "stopped"),
        "baseline_s": settings.baseline_s,
        "baseline_ops": baseline_ops,
        "baseline_ops_per_s": round(baseline_ops / settings.baseline_s, 1),
        "attack_ops": attack_ops,
        "attack_ops_per_s": round(attack_ops / attack["duration_s"], 1),
        "after_ops": after_ops,
        "rss_mb": {**attack.pop("rss_mb"), "after": _rss(pid)},
        "replica_connections_peak": served.get("peak"),
        "replica_connections_refused": served.get("refused"),
        **attack,
        **_log_figures(log),
    }


async def _attack(
    files: ClusterFiles,
    settings: HostileSettings,
    pid: int,
    log_path: Path,
    done: list[int],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    attacker_client = len(files.config.client_keys) - 1
    attacker = SocketAttacker(
        files.config, files.address(settings.replica), settings.replica, attacker_client,
        files.load_signer("client", attacker_client),
        max_frame_bytes=max_frame_bytes(files.params), connections=settings.connections,
        workers_per_kind=settings.workers_per_kind,
    )  # fmt: skip
    before = _rss(pid)
    peak = before
    log_offset = log_path.stat().st_size
    ops_before = done[0]
    cpu_before = (process_cpu_seconds(pid) or 0.0, time.process_time())
    started = time.monotonic()
    next_line = started + 1.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker.run, settings.kinds)
        while (now := time.monotonic()) < started + settings.duration_s:
            peak = max(peak, _rss(pid))
            if now >= next_line:
                next_line += 1.0
                elapsed = now - started
                progress(
                    f"{elapsed:5.1f}/{settings.duration_s:g} s  {attacker.total:,} hostile inputs "
                    f"({attacker.total / elapsed:,.0f}/s)  {attacker.open_connections} connections "
                    f"open (peak {attacker.peak_connections})  RSS {peak:.1f} MB peak  "
                    f"{done[0] - ops_before} ops"
                )
            await trio.sleep(SAMPLE_SECONDS)
        nursery.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    replica_cpu = (process_cpu_seconds(pid) or 0.0) - cpu_before[0]
    attacker_cpu = time.process_time() - cpu_before[1]
    with log_path.open("rb") as log_file:
        log_file.seek(log_offset)
        log = log_file.read().decode(errors="replace")
    return {
        "duration_s": round(elapsed, 2),
        "hostile_inputs": attacker.total,
        "hostile_inputs_per_s": round(attacker.total / elapsed, 1),
        "by_kind": {kind: attacker.sent[kind] for kind in KINDS},
        "connections_peak": attacker.peak_connections,
        "connect_failures": attacker.connect_failures,
        "rss_mb": {"before": before, "peak": peak},
        #: Share of one core the attacked replica, and this process (attacker and
        #: workload), used during the attack.
        "cpu_percent": {
            "replica": round(100 * replica_cpu / elapsed, 1),
            "attacker_and_workload": round(100 * attacker_cpu / elapsed, 1),
        },
        "log": log,
    }


def _rss(pid: int) -> float:
    return round(resident_mb(pid) or 0.0, 1)


def _log_figures(log: str) -> dict[str, Any]:
    """Lines the replica wrote during the attack, and how many of them were refusals."""
    lines = log.splitlines()
    counts = {event: sum(f": {event} " in line + " " for line in lines) for event in
              REJECTION_EVENTS}  # fmt: skip
    return {"log_lines": len(lines), "log_lines_by_event": counts, "log_sample": lines[:20]}
