"""Real replica processes on loopback TCP, for the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pbft.runtime.client import RemoteClient
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster

#: Fast view changes and small checkpoint intervals, so that tests see them.
PROTOCOL = {"view_change_timeout_ticks": 600, "checkpoint_interval": 8, "log_window": 16}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    files = init_cluster(
        tmp_path / "cluster", f=1, clients=4, ports=free_loopback_ports(4), protocol=PROTOCOL
    )
    local = LocalCluster(files, tmp_path / "data")
    local.start()
    try:
        assert local.wait_connected(timeout=30), f"replicas did not connect: {local.statuses()}"
        yield local
    finally:
        local.stop()


async def wait_for(
    cluster: LocalCluster,
    predicate: Callable[[dict[int, dict[str, Any] | None]], bool],
    timeout: float = 20.0,
) -> dict[int, dict[str, Any] | None]:
    with trio.fail_after(timeout):
        while True:
            statuses = cluster.statuses()
            if predicate(statuses):
                return statuses
            await trio.sleep(0.05)


async def connected_clients(
    files: ClusterFiles, nursery: trio.Nursery, count: int, replicas: int | None = None
) -> list[RemoteClient]:
    clients = [RemoteClient(files, c, retransmit_ticks=300) for c in range(count)]
    for client in clients:
        await nursery.start(client.run)
    for client in clients:
        await client.wait_connected(replicas, timeout=20)
    return clients
