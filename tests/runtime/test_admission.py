"""Admission control: a replica holds its client connections back while its core is full.

Issue 9, "overload without self-inflicted storms": a primary must neither drop
requests (it would look faulty to the backups whose timers run) nor read every
request offered. The gate (pbft.runtime.admission) holds back bursts from client
connections while ``Replica.requests_waiting`` is at the bound; replica
connections are never held, so agreement goes on and makes room.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from pbft import service as kv
from pbft.config import ConfigError, ProtocolParams
from pbft.runtime.admission import AdmissionGate
from pbft.runtime.client import RemoteClient
from pbft.runtime.files import free_loopback_ports, init_cluster, load_cluster
from pbft.runtime.node import ReplicaNode

# ------------------------------------------------------------------ the gate alone


class Core:
    """Stands in for the replica: a count of requests waiting that the test sets."""

    def __init__(self) -> None:
        self.waiting = 0


async def test_client_bursts_wait_at_the_bound_and_replica_bursts_never_do() -> None:
    core = Core()
    gate = AdmissionGate(2, lambda: core.waiting)
    admitted: list[int] = []

    async def client(number: int) -> None:
        await gate.admit(("client", number))
        admitted.append(number)
        core.waiting += 1  # the step that follows adds the client's request

    core.waiting = 2
    async with trio.open_nursery() as nursery:
        for number in range(4):
            nursery.start_soon(client, number)
        await trio.testing.wait_all_tasks_blocked()
        assert admitted == []
        assert gate.statistics().held == 4
        # A replica's frames are stepped even now: agreement must go on.
        with trio.testing.assert_no_checkpoints():
            await gate.admit(("replica", 1))

        core.waiting = 1  # one request executed: room for exactly one client
        gate.release()
        await trio.testing.wait_all_tasks_blocked()
        assert len(admitted) == 1
        assert gate.statistics().held == 3

        core.waiting = 0  # the bound is 2: two more, the last still held
        gate.release()
        await trio.testing.wait_all_tasks_blocked()
        assert len(admitted) == 3
        assert core.waiting == 2
        statistics = gate.statistics()
        assert (statistics.held, statistics.bound) == (1, 2)
        assert statistics.holds >= 4

        core.waiting = 0
        gate.release()
    assert sorted(admitted) == [0, 1, 2, 3]


async def test_a_release_without_room_wakes_no_one() -> None:
    core = Core()
    core.waiting = 3
    gate = AdmissionGate(3, lambda: core.waiting)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.admit, ("client", 0))
        await trio.testing.wait_all_tasks_blocked()
        gate.release()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.statistics().held == 1
        assert gate.statistics().peak_waiting == 3
        nursery.cancel_scope.cancel()


def test_the_bound_defaults_to_two_pipelines_and_must_be_positive(tmp_path: Path) -> None:
    assert ProtocolParams().admission_requests == 2 * 16 * 4
    assert ProtocolParams(batch_size=8, max_inflight_batches=2).admission_requests == 32
    with pytest.raises(ConfigError, match="admission_requests must be at least 1"):
        ProtocolParams(admission_requests=0)
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionGate(0, lambda: 0)
    init_cluster(tmp_path, f=1, clients=1, ports=free_loopback_ports(4),
                 protocol={"admission_requests": 7})  # fmt: skip
    assert load_cluster(tmp_path).params.admission_requests == 7


# ------------------------------------------------------- four replicas over loopback TCP

BOUND = 4
CLIENTS = 24
OPERATIONS_PER_CLIENT = 2
#: Small batches, one in flight: the primary orders slowly, so requests pile up.
PROTOCOL = {
    "admission_requests": BOUND,
    "batch_size": 2,
    "max_inflight_batches": 1,
    # No view change may interfere on a loaded machine: nothing here is faulty.
    "view_change_timeout_ticks": 60_000,
}


class Steps:
    """Wakes the test after every step of any node (the gate's ``release`` hook)."""

    def __init__(self, nodes: list[ReplicaNode]) -> None:
        self._changed = trio.Event()
        for node in nodes:
            release = node.admission.release

            def released(release: Callable[[], None] = release) -> None:
                release()
                self._changed.set()

            node.admission.release = released  # type: ignore[method-assign]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(30):
            while not condition():
                self._changed = trio.Event()
                await self._changed.wait()


async def test_the_primary_holds_clients_back_at_the_bound_and_executes_every_request(
    tmp_path: Path,
) -> None:
    """24 clients offer requests at once to a primary that admits 4: it never holds
    more than 4 (clients send only to the primary: no relays), clients are held back,
    agreement between the replicas goes on, and every request executes everywhere."""
    files = init_cluster(tmp_path / "cluster", f=1, clients=CLIENTS,
                         ports=free_loopback_ports(4), protocol=PROTOCOL)  # fmt: skip
    nodes = [ReplicaNode(files, i, tmp_path / f"r{i}") for i in range(4)]
    steps = Steps(nodes)
    # A retransmission would go to every replica; none may happen in this test.
    clients = [RemoteClient(files, c, retransmit_ticks=600_000) for c in range(CLIENTS)]
    results: list[bool] = []

    async def closed_loop(client: RemoteClient) -> None:
        for i in range(OPERATIONS_PER_CLIENT):
            operation = kv.put(f"k{client.id}-{i}", "v")
            results.append(kv.decode_result(await client.execute(operation, timeout=30)))

    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for client in clients:
            await nursery.start(client.run)
        for client in clients:
            await client.wait_connected(timeout=30)
        async with trio.open_nursery() as workload:
            for client in clients:
                workload.start_soon(closed_loop, client)
        assert len(results) == CLIENTS * OPERATIONS_PER_CLIENT and all(results)

        written = {f"k{c}-{i}" for c in range(CLIENTS) for i in range(OPERATIONS_PER_CLIENT)}
        await steps.wait_until(lambda: all(_keys(node) == written for node in nodes))
        primary = nodes[0].admission.statistics()
        assert primary.holds > 0, "the clients were never held back"
        assert primary.peak_waiting <= BOUND
        assert (primary.held, primary.waiting) == (0, 0)
        assert nodes[0].status()["admission"]["bound"] == BOUND
        for backup in nodes[1:]:
            # Nothing reached a backup from a client; their gates never closed.
            assert backup.admission.statistics().holds == 0
            assert backup.replica.counters.accepted.get("REQUEST", 0) == 0
        nursery.cancel_scope.cancel()


def _keys(node: ReplicaNode) -> set[str]:
    service = node.replica.service
    assert isinstance(service, kv.KeyValueStore)
    return set(service.data)


# ------------------------------------------------------------ real processes: pbft bench


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbft", "bench", *args],
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_bench_replicas_hold_clients_at_the_bound_without_a_timeout() -> None:
    """Eight closed-loop clients and replica processes that admit two requests each."""
    result = bench("--json", "--clients", "8", "--duration", "2", "--warmup", "0.5",
                   "--batch", "2", "--protocol", "admission_requests=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["operations"] > 0 and report["timeouts"] == 0
    assert report["admission"]["holds"] > 0
    # Two admitted, plus at most the few a backup relayed after a client's retransmission.
    assert report["admission"]["peak_waiting"] <= 2 + sum(
        count for replica, count in report["requests_accepted"].items() if replica != "0"
    )


def test_bench_refuses_a_bound_below_one_in_one_line() -> None:
    result = bench("--protocol", "admission_requests=0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pbft bench: error: --protocol: admission_requests must be at least 1 "
        "(requests a replica holds before it stops reading its clients)"
    )
