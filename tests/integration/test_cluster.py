"""A 4-replica cluster of real processes over loopback TCP (the runtime issue's scenarios)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import trio

from pbft import service as kv
from pbft.runtime.processes import LocalCluster
from pbft.runtime.storage import read_history
from tests.integration.conftest import connected_clients, wait_for


def executed(statuses, replicas):  # type: ignore[no-untyped-def]
    return [statuses[r]["last_executed"] for r in replicas if statuses[r] is not None]


async def put_all(clients, prefix: str, count: int, timeout: float = 20.0) -> dict[str, str]:  # type: ignore[no-untyped-def]
    written: dict[str, str] = {}

    async def writer(client) -> None:  # type: ignore[no-untyped-def]
        for i in range(count):
            key, value = f"{prefix}-{client.id}-{i}", f"v{i}"
            result = await client.execute(kv.put(key, value), timeout=timeout)
            assert kv.decode_result(result) is True
            written[key] = value

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(writer, client)
    return written


async def read_all(client, written: dict[str, str], timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    for key, value in written.items():
        assert kv.decode_result(await client.execute(kv.get(key), timeout=timeout)) == value


async def test_commits_writes_from_several_clients(cluster: LocalCluster) -> None:
    async with trio.open_nursery() as nursery:
        clients = await connected_clients(cluster.files, nursery, 3)
        written = await put_all(clients, "a", 15)
        await read_all(clients[0], written)
        nursery.cancel_scope.cancel()
    statuses = await wait_for(cluster, lambda s: len(set(executed(s, range(4)))) == 1)
    assert all(s["view"] == 0 for s in statuses.values())
    cluster.stop()
    histories = [read_history(p.data_dir / "replica.db") for p in cluster.processes.values()]
    assert all(history == histories[0] for history in histories)
    assert len(histories[0]) >= 1


async def test_one_backup_killed_and_the_cluster_goes_on_then_it_catches_up(
    cluster: LocalCluster,
) -> None:
    async with trio.open_nursery() as nursery:
        clients = await connected_clients(cluster.files, nursery, 2)
        await put_all(clients, "before", 5)
        cluster.processes[3].kill()
        written = await put_all(clients, "after", 20)
        # Restarted, it recovers from its database and catches up from its peers.
        cluster.processes[3].start()
        await put_all(clients, "later", 10)
        statuses = await wait_for(
            cluster, lambda s: s[3] is not None and len(set(executed(s, range(4)))) == 1
        )
        assert statuses[3]["status"] == "normal"
        await read_all(clients[0], written)
        nursery.cancel_scope.cancel()


async def test_primary_killed_a_view_change_restores_service(cluster: LocalCluster) -> None:
    async with trio.open_nursery() as nursery:
        clients = await connected_clients(cluster.files, nursery, 2)
        await put_all(clients, "before", 5)
        cluster.processes[0].kill()
        written = await put_all(clients, "after", 10, timeout=30)
        # Status files are rewritten a few times a second: wait for them to show it.
        await wait_for(cluster, lambda s: all(s[r] and s[r]["view"] >= 1 for r in (1, 2, 3)))
        await read_all(clients[1], written)
        nursery.cancel_scope.cancel()


async def test_all_replicas_killed_and_restarted_keep_acknowledged_writes(
    cluster: LocalCluster,
) -> None:
    async with trio.open_nursery() as nursery:
        clients = await connected_clients(cluster.files, nursery, 3)
        written = await put_all(clients, "durable", 12)
        nursery.cancel_scope.cancel()
    for process in cluster.processes.values():
        process.signal(signal.SIGKILL)
    for process in cluster.processes.values():
        process.wait(5)
    cluster.start()
    assert cluster.wait_connected(timeout=30)
    async with trio.open_nursery() as nursery:
        (client,) = await connected_clients(cluster.files, nursery, 1)
        await read_all(client, written, timeout=30)
        nursery.cancel_scope.cancel()


def test_the_client_command_reads_and_writes_across_invocations(cluster: LocalCluster) -> None:
    directory = str(cluster.files.directory)

    def pbft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pbft", "client", directory, *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert pbft("put", "colour", "blue").returncode == 0
    assert pbft("--client", "2", "put", "colour", "green").returncode == 0
    got = pbft("get", "colour", "--json")  # options also after the operation
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["result"] == "green"
    assert pbft("delete", "colour").stdout.strip() == "deleted"
    assert pbft("get", "colour").stdout.strip() == "(absent)"
    refused = pbft("--client", "9", "get", "colour")
    assert refused.returncode == 2 and "clients 0..3" in refused.stderr
    for process in cluster.processes.values():
        process.kill()
    no_quorum = pbft("--timeout", "1", "get", "colour")
    assert no_quorum.returncode == 1
    assert "no 2 replicas agreed" in no_quorum.stderr
