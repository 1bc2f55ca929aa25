"""A connection flood costs connections, never the replica (pbft.runtime.descriptors).

Regression: a replica whose descriptor limit a flood of idle connections reached
(2,000 held open against a soft limit of 1,024) failed to open its status file,
and the OSError ended the node; until then trio's listener logged a traceback
ten times a second.
"""

from __future__ import annotations

import errno
import io
import json
import socket
from pathlib import Path

import pytest
import trio

from pbft.runtime.descriptors import (
    RESERVED_DESCRIPTORS,
    ConnectionSlots,
    connection_budget,
    reserved_descriptors,
)
from pbft.runtime.eventlog import EventLog
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.framing import ConnectionClosed, FramedStream, FrameError
from pbft.runtime.handshake import Identity, dial_handshake
from pbft.runtime.limits import client_frame_bytes, max_frame_bytes
from pbft.runtime.node import ReplicaNode


def test_slots_cap_connections_and_count_refusals() -> None:
    slots = ConnectionSlots(2)
    assert slots.acquire() and slots.acquire()
    assert not slots.acquire()
    slots.release()
    assert slots.acquire()
    assert (slots.in_use, slots.peak, slots.refused) == (2, 2, 1)


def test_the_budget_leaves_descriptors_for_the_journal_and_status_files() -> None:
    assert connection_budget(1024) == 1024 - RESERVED_DESCRIPTORS


def test_the_budget_never_promises_more_connections_than_descriptors() -> None:
    """Regression: below 144 descriptors the budget was 16 whatever the limit (20 -> 16)."""
    previous = 0
    for limit in (2, 3, 20, 100, 143, 144, 200, 255, 256, 257, 1024, 1 << 20):
        budget = connection_budget(limit)
        assert 1 <= budget <= limit - reserved_descriptors(limit), limit
        assert reserved_descriptors(limit) >= min(RESERVED_DESCRIPTORS, limit // 2)
        assert budget >= previous  # more descriptors never mean fewer connections
        previous = budget


def test_a_share_of_the_slots_is_kept_for_replicas() -> None:
    slots = ConnectionSlots(10, replica_reserve=4)
    assert all(slots.acquire() for _ in range(10)) and not slots.acquire()
    assert [slots.admit_client() for _ in range(7)] == [True] * 6 + [False]
    assert (slots.clients, slots.clients_refused) == (6, 1)
    slots.release_client()
    assert slots.admit_client()
    with pytest.raises(ValueError):
        ConnectionSlots(4, replica_reserve=4)  # clients need at least one slot


async def _open_idle(address: tuple[str, int], count: int) -> list[trio.SocketStream]:
    return [await trio.open_tcp_stream(*address) for _ in range(count)]


async def test_connections_beyond_the_cap_are_closed_and_the_replica_goes_on(
    tmp_path: Path,
) -> None:
    """40 idle connections against a cap of 8: 32 are closed at once, one line is
    logged for them, and the node still writes its status and serves."""
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    stream = io.StringIO()
    node = ReplicaNode(files, 0, tmp_path / "r0", log=EventLog("replica 0", stream=stream))
    node.connection_slots = ConnectionSlots(8)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        connections = await _open_idle(files.address(0), 40)
        closed = 0
        with trio.move_on_after(3):
            for connection in connections:
                with trio.move_on_after(0.2):
                    if await connection.receive_some(1) == b"":
                        closed += 1
        assert closed == 32
        assert node.connection_slots.peak == 8 and node.connection_slots.refused == 32
        await trio.sleep(0.3)
        status = json.loads(node.status_path.read_text())
        assert status["connections"]["refused"] == 32
        refusals = [line for line in stream.getvalue().splitlines() if "connection-refused" in line]
        assert len(refusals) == 1, refusals
        for connection in connections:
            await connection.aclose()
        nursery.cancel_scope.cancel()


async def test_a_status_file_that_cannot_be_written_does_not_stop_the_replica(
    tmp_path: Path,
) -> None:
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    stream = io.StringIO()
    node = ReplicaNode(files, 0, tmp_path / "r0", log=EventLog("replica 0", stream=stream))
    failures = [0]

    def out_of_descriptors(state: str | None = None) -> None:
        failures[0] += 1
        raise OSError(errno.EMFILE, "Too many open files")

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        node._write_status = out_of_descriptors  # type: ignore[method-assign]
        await trio.sleep(1.0)
        assert failures[0] >= 3  # still running, still trying
        with socket.create_connection(files.address(0), timeout=2):
            pass  # still accepting
        del node._write_status  # the class's again, for the "stopped" status
        nursery.cancel_scope.cancel()
    errors = [line for line in stream.getvalue().splitlines() if "status not written" in line]
    assert len(errors) == 1, errors


# ---------------------------------------------------------- authenticated connections


async def _dial(files: ClusterFiles, identity: Identity, replica: int = 0) -> FramedStream:
    stream = await trio.open_tcp_stream(*files.address(replica))
    framed = FramedStream(stream, max_frame_bytes(files.params))
    await dial_handshake(
        framed, files.config, identity, files.load_signer(*identity), ("replica", replica)
    )
    return framed


async def _closed_by_replica(framed: FramedStream, seconds: float = 1.0) -> bool:
    """True if the replica ends the connection within ``seconds`` (it never sends to us)."""
    with trio.move_on_after(seconds):
        try:
            await framed.receive_frame()
        except (ConnectionClosed, FrameError, trio.BrokenResourceError, OSError):
            return True
    return False


async def _node(tmp_path: Path, clients: int = 1) -> tuple[ClusterFiles, ReplicaNode, io.StringIO]:
    files = init_cluster(tmp_path / "c", f=1, clients=clients, ports=free_loopback_ports(4))
    stream = io.StringIO()
    node = ReplicaNode(files, 0, tmp_path / "r0", log=EventLog("replica 0", stream=stream))
    return files, node, stream


async def test_a_principal_holds_one_connection_the_newest(tmp_path: Path) -> None:
    """Regression (A3): a client or replica authenticating again left its older connection
    served, so one principal could hold the whole connection budget."""
    files, node, _ = await _node(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        newest = []
        for identity in (("client", 0), ("replica", 1)):
            connections = [await _dial(files, identity) for _ in range(3)]
            for older in connections[:-1]:
                assert await _closed_by_replica(older), identity
            assert not await _closed_by_replica(connections[-1], 0.3), identity
            newest.append(connections[-1])
        assert node.connection_slots.in_use == 2  # client 0 and replica 1, once each
        assert node.status()["clients_connected"] == [0]
        nursery.cancel_scope.cancel()


async def test_a_client_frame_is_capped_at_the_largest_request(tmp_path: Path) -> None:
    """Regression (A3): a client connection accepted frames up to the replica bound
    (64 MiB + 1 KiB by default), so each one could pin that much memory."""
    files, node, _ = await _node(tmp_path)
    bound = client_frame_bytes(files.params, files.config)
    assert bound < 16 * 1024 < max_frame_bytes(files.params)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = await _dial(files, ("client", 0))
        await client.send_frame(bytes(bound))  # a malformed request: dropped, still served
        assert not await _closed_by_replica(client, 0.3)
        await client.send_frame(bytes(bound + 1))
        assert await _closed_by_replica(client)
        replica = await _dial(files, ("replica", 1))
        await replica.send_frame(bytes(100_000))  # a replica's frames keep the replica bound
        assert not await _closed_by_replica(replica, 0.3)
        nursery.cancel_scope.cancel()


async def test_authenticated_clients_leave_the_replica_share_free(tmp_path: Path) -> None:
    """Regression (A3): clients could take every slot; now beyond the client share an
    authenticated client is closed and the replica reserve still takes replicas."""
    files, node, stream = await _node(tmp_path, clients=4)
    node.connection_slots = ConnectionSlots(4, replica_reserve=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        clients = [await _dial(files, ("client", c)) for c in range(3)]
        assert await _closed_by_replica(clients[2])
        replicas = [await _dial(files, ("replica", r)) for r in (1, 2)]
        for connection in clients[:2] + replicas:
            assert not await _closed_by_replica(connection, 0.2)
        assert node.connection_slots.in_use == 4 and node.connection_slots.clients == 2
        assert "reason=client-share-full" in stream.getvalue()
        nursery.cancel_scope.cancel()
