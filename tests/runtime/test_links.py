"""Peer links and accepted connections: over real loopback TCP, and over memory streams
with a mock clock where reconnection timing matters."""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from pbft.config import ClusterConfig
from pbft.crypto import Signer
from pbft.runtime.channel import TAG_BYTES
from pbft.runtime.framing import DEFAULT_MAX_FRAME_BYTES, FramedStream
from pbft.runtime.handshake import Identity, dial_handshake
from pbft.runtime.links import Backoff, PeerLink, serve_connection
from pbft.simnet import derive_signer

SEED = 5
LOCALHOST = "127.0.0.1"
CONFIG = ClusterConfig(
    cluster_id="links-test",
    f=1,
    replica_keys=tuple(derive_signer(SEED, "replica", i).public_key for i in range(4)),
    client_keys=tuple(derive_signer(SEED, "client", c).public_key for c in range(2)),
)


def signer(identity: Identity) -> Signer:
    return derive_signer(SEED, identity[0], identity[1])


def fast_backoff() -> Backoff:
    return Backoff(base_seconds=0.005, cap_seconds=0.05, rng=random.Random(SEED))


class Server:
    """Replica ``index``'s acceptor side: records frames, connects and disconnects."""

    def __init__(
        self,
        index: int = 1,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_client_frame_bytes: int | None = None,
    ) -> None:
        self.me: Identity = ("replica", index)
        self.max_frame_bytes = max_frame_bytes
        self.max_client_frame_bytes = max_client_frame_bytes
        self.frames: list[tuple[Identity, bytes]] = []
        self.connections: dict[Identity, FramedStream] = {}
        self.connects: list[Identity] = []
        self.disconnects: list[Identity] = []
        self._changed = trio.Event()

    async def serve(self, stream: trio.abc.Stream) -> None:
        await serve_connection(
            stream,
            CONFIG,
            self.me,
            signer(self.me),
            self.on_frame,
            self.on_connect,
            self.on_disconnect,
            self.max_frame_bytes,
            max_client_frame_bytes=self.max_client_frame_bytes,
        )

    def on_frame(self, identity: Identity, frame: bytes) -> None:
        self.frames.append((identity, frame))
        self._changed.set()

    def on_connect(self, identity: Identity, framed: FramedStream) -> None:
        self.connects.append(identity)
        self.connections[identity] = framed
        self._changed.set()

    def on_disconnect(self, identity: Identity) -> None:
        self.disconnects.append(identity)
        self._changed.set()

    def frames_from(self, identity: Identity) -> list[bytes]:
        return [frame for sender, frame in self.frames if sender == identity]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(10):
            while not condition():
                self._changed = trio.Event()
                await self._changed.wait()


@attrs.define
class Listening:
    """A running TCP server; :meth:`stop` returns once its port is free again."""

    port: int
    scope: trio.CancelScope
    stopped: trio.Event

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def listen(nursery: trio.Nursery, server: Server, port: int = 0) -> Listening:
    scope, stopped = trio.CancelScope(), trio.Event()

    async def run(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        try:
            with scope:
                listeners = await trio.open_tcp_listeners(port, host=LOCALHOST)
                await trio.serve_listeners(server.serve, listeners, task_status=task_status)
        finally:
            stopped.set()

    listeners = await nursery.start(run)
    return Listening(listeners[0].socket.getsockname()[1], scope, stopped)


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts ``send_all`` calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.send_calls = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.send_calls += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def closed_by_peer(stream: trio.abc.Stream) -> bool:
    """Read until the peer closes the connection (EOF or reset), then close our end."""
    async with stream:
        with trio.fail_after(5):
            try:
                while await stream.receive_some():
                    pass
            except trio.BrokenResourceError:
                pass
    return True


# ------------------------------------------------------------------- over real TCP


async def test_a_link_delivers_a_thousand_frames_in_order_with_coalesced_writes() -> None:
    server = Server()
    streams: list[CountingStream] = []

    async def connect(host: str, port: int) -> trio.abc.Stream:
        streams.append(CountingStream(await trio.open_tcp_stream(host, port)))
        return streams[-1]

    async with trio.open_nursery() as nursery:
        listening = await listen(nursery, server)
        link = PeerLink(
            CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", 1),
            (LOCALHOST, listening.port), connect=connect,
        )  # fmt: skip
        frames = [b"frame-%d" % i for i in range(1000)]
        assert all(link.send_nowait(frame) for frame in frames)
        nursery.start_soon(link.run)
        await server.wait_until(lambda: len(server.frames) == 1000)
        assert server.frames == [(("replica", 0), frame) for frame in frames]
        statistics = link.statistics()
        assert statistics.connected
        assert (statistics.frames_sent, statistics.frames_queued) == (1000, 0)
        assert (statistics.connects, statistics.failures, statistics.frames_dropped) == (1, 0, 0)
        # HELLO and PROOF, then 1,000 queued frames in two batches of at most 512.
        assert streams[0].send_calls == 4
        nursery.cancel_scope.cancel()


async def test_a_link_reconnects_after_the_server_restarts_on_the_same_port() -> None:
    first, second = Server(), Server()
    async with trio.open_nursery() as nursery:
        listening = await listen(nursery, first)
        link = PeerLink(
            CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", 1),
            (LOCALHOST, listening.port), backoff=fast_backoff(),
        )  # fmt: skip
        nursery.start_soon(link.run)
        for i in range(10):
            link.send_nowait(b"before-%d" % i)
        await first.wait_until(lambda: len(first.frames) == 10)

        await listening.stop()
        await listen(nursery, second, listening.port)
        await second.wait_until(lambda: second.connects == [("replica", 0)])
        for i in range(10):
            link.send_nowait(b"after-%d" % i)
        await second.wait_until(lambda: len(second.frames) == 10)

        assert first.frames_from(("replica", 0)) == [b"before-%d" % i for i in range(10)]
        assert second.frames_from(("replica", 0)) == [b"after-%d" % i for i in range(10)]
        assert link.statistics().connects == 2
        assert link.statistics().failures >= 1
        nursery.cancel_scope.cancel()


async def test_misbehaving_peers_lose_their_connection_and_others_are_still_served() -> None:
    server = Server(max_frame_bytes=64 * 1024)
    async with trio.open_nursery() as nursery:
        listening = await listen(nursery, server)
        good = PeerLink(
            CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", 1),
            (LOCALHOST, listening.port),
        )  # fmt: skip
        nursery.start_soon(good.run)
        good.send_nowait(b"request-0")
        await server.wait_until(lambda: len(server.frames) == 1)

        # A peer that fails the handshake: a well-formed frame of nonsense.
        stream = await trio.open_tcp_stream(LOCALHOST, listening.port)
        await stream.send_all(b"\x00\x00\x00\x0bhello there")
        assert await closed_by_peer(stream)
        good.send_nowait(b"request-1")

        # A peer that sends random bytes.
        stream = await trio.open_tcp_stream(LOCALHOST, listening.port)
        await stream.send_all(random.Random(SEED).randbytes(4096))
        assert await closed_by_peer(stream)
        good.send_nowait(b"request-2")

        # An authenticated client that announces a frame above the limit.
        stream = await trio.open_tcp_stream(LOCALHOST, listening.port)
        framed = FramedStream(stream)
        await dial_handshake(framed, CONFIG, ("client", 1), signer(("client", 1)), ("replica", 1))
        # (The length counts the frame's MAC tag too.)
        await stream.send_all((64 * 1024 + 1 + TAG_BYTES).to_bytes(4, "big") + bytes(1000))
        assert await closed_by_peer(stream)
        await server.wait_until(lambda: ("client", 1) in server.disconnects)
        good.send_nowait(b"request-3")

        await server.wait_until(lambda: len(server.frames) == 4)
        assert server.frames_from(("replica", 0)) == [b"request-%d" % i for i in range(4)]
        assert server.frames_from(("client", 1)) == []
        assert good.statistics().connects == 1
        assert good.statistics().failures == 0
        nursery.cancel_scope.cancel()


async def test_a_client_connection_reads_only_frames_within_the_client_bound() -> None:
    """Regression (A3): a client's frames were read up to the replica bound."""
    server = Server(max_frame_bytes=64 * 1024, max_client_frame_bytes=1000)
    async with trio.open_nursery() as nursery:
        listening = await listen(nursery, server)
        replica, client = [
            FramedStream(await trio.open_tcp_stream(LOCALHOST, listening.port)) for _ in range(2)
        ]
        for framed, identity in ((replica, ("replica", 2)), (client, ("client", 0))):
            await dial_handshake(framed, CONFIG, identity, signer(identity), ("replica", 1))
        await client.send_frames([bytes(1000), bytes(1000)])
        await replica.send_frames([bytes(50_000), bytes(50_000)])
        await server.wait_until(lambda: len(server.frames) == 4)
        await client.send_frame(bytes(1001))
        await server.wait_until(lambda: ("client", 0) in server.disconnects)
        await replica.send_frame(b"still served")
        await server.wait_until(lambda: len(server.frames) == 5)
        assert [len(frame) for frame in server.frames_from(("client", 0))] == [1000, 1000]
        assert server.disconnects == [("client", 0)]
        nursery.cancel_scope.cancel()


async def test_replies_travel_back_over_the_clients_own_connection() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        listening = await listen(nursery, server)
        framed = FramedStream(await trio.open_tcp_stream(LOCALHOST, listening.port))
        await dial_handshake(framed, CONFIG, ("client", 0), signer(("client", 0)), ("replica", 1))
        await server.wait_until(lambda: ("client", 0) in server.connections)
        to_client = server.connections[("client", 0)]

        async def reply_all() -> None:
            for i in range(100):
                await to_client.send_frame(b"reply-%d" % i)

        # The server replies from another task while serve_connection reads requests.
        nursery.start_soon(reply_all)
        for i in range(100):
            await framed.send_frame(b"request-%d" % i)
        replies = [await framed.receive_frame() for _ in range(100)]
        assert replies == [b"reply-%d" % i for i in range(100)]
        await server.wait_until(lambda: len(server.frames) == 100)
        assert server.frames_from(("client", 0)) == [b"request-%d" % i for i in range(100)]

        await framed.aclose()
        await server.wait_until(lambda: server.disconnects == [("client", 0)])
        nursery.cancel_scope.cancel()


# ------------------------------------------------------- over memory, with a mock clock

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]


def memory_connector(
    nursery: trio.Nursery, server: Server, refusals: int = 0
) -> tuple[Connect, list[float]]:
    """A ``connect`` that refuses ``refusals`` times, then serves each attempt in memory."""
    attempts: list[float] = []

    async def connect(host: str, port: int) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        if len(attempts) <= refusals:
            raise ConnectionRefusedError("connection refused")
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.serve, server_end)
        return client_end

    return connect, attempts


def memory_link(connect: Connect, backoff: Backoff | None = None, peer: int = 1) -> PeerLink:
    return PeerLink(
        CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", peer), ("memory", 0),
        backoff=backoff, connect=connect,
    )  # fmt: skip


async def test_failed_connects_are_retried_after_full_jitter_delays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        connect, attempts = memory_connector(nursery, server, refusals=6)
        link = memory_link(connect, Backoff(0.1, 1.0, random.Random(SEED)))
        nursery.start_soon(link.run)
        link.send_nowait(b"finally")
        await server.wait_until(lambda: len(server.frames) == 1)
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert len(gaps) == 6
        for attempt, gap in enumerate(gaps):
            assert 0 <= gap <= min(1.0, 0.1 * 2**attempt) + 1e-9
        assert (link.statistics().connects, link.statistics().failures) == (1, 6)
        nursery.cancel_scope.cancel()


async def test_a_failed_handshake_is_retried_and_never_counts_as_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(index=1)
    async with trio.open_nursery() as nursery:
        connect, attempts = memory_connector(nursery, server)
        link = memory_link(connect, peer=2)  # replica 1 answers where 2 was expected
        with trio.move_on_after(10):
            await link.run()
        statistics = link.statistics()
        assert not statistics.connected
        assert statistics.connects == 0
        assert statistics.failures == len(attempts) >= 5
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["peer closes", "peer sends bytes"])
async def test_the_link_reconnects_when_the_peer_hangs_up_or_talks_back(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        connect, _ = memory_connector(nursery, server)
        link = memory_link(connect)
        nursery.start_soon(link.run)
        await server.wait_until(lambda: len(server.connects) == 1)
        connection = server.connections[("replica", 0)]
        if how == "peer closes":
            await connection.aclose()
        else:
            await connection.send_frame(b"a send-only link must not receive this")
        # No frame is queued: the link notices from its reader, not from a failed write.
        await server.wait_until(lambda: len(server.connects) == 2)
        link.send_nowait(b"after")
        await server.wait_until(lambda: len(server.frames) == 1)
        assert link.statistics().connects == 2
        assert link.statistics().failures == 1
        nursery.cancel_scope.cancel()


async def test_cancelling_run_closes_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        connect, _ = memory_connector(nursery, server)
        link = memory_link(connect)
        async with trio.open_nursery() as link_nursery:
            link_nursery.start_soon(link.run)
            await server.wait_until(lambda: len(server.connects) == 1)
            # The acceptor counts the connection once the dialer's PROOF checks out; the
            # dialer, once the acceptor's CONFIRM does, a moment later (mock time).
            with trio.fail_after(10):
                while not link.statistics().connected:
                    await trio.sleep(0.001)
            link_nursery.cancel_scope.cancel()
        await server.wait_until(lambda: server.disconnects == [("replica", 0)])
        assert not link.statistics().connected


# ------------------------------------------------------------------- queue and backoff


def test_a_full_queue_drops_and_counts_frames() -> None:
    link = PeerLink(
        CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", 1), ("memory", 0),
        queue_frames=3,
    )  # fmt: skip
    assert [link.send_nowait(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
    statistics = link.statistics()
    assert (statistics.frames_queued, statistics.frames_dropped) == (3, 2)
    with pytest.raises(ValueError, match="refusing to queue"):
        link.send_nowait(bytes(DEFAULT_MAX_FRAME_BYTES + 1))


def test_a_link_to_a_non_replica_is_a_local_error() -> None:
    me = ("replica", 0)
    for peer in [("client", 0), ("replica", 4)]:
        with pytest.raises(ValueError):
            PeerLink(CONFIG, me, signer(me), peer, ("memory", 0))


def test_backoff_delays_stay_within_the_full_jitter_bounds() -> None:
    backoff = Backoff(base_seconds=0.05, cap_seconds=2.0, rng=random.Random(SEED))
    delays = [backoff.next_delay() for _ in range(200)]
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(2.0, 0.05 * 2**attempt)
    # Full jitter spreads the capped delays over the whole range, not near the cap only.
    capped = delays[10:]
    assert min(capped) < 0.5 and max(capped) > 1.5
    assert 0.8 < sum(capped) / len(capped) < 1.2
    backoff.reset()
    assert backoff.ceiling_seconds() == 0.05
    assert backoff.next_delay() <= 0.05


def test_backoff_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError):
        Backoff(base_seconds=0)
    with pytest.raises(ValueError):
        Backoff(base_seconds=3.0, cap_seconds=2.0)
