"""Handshakes in progress are capped: beyond the cap a dialer is refused as busy, at no
cryptographic cost, and backs off (full jitter) instead of giving up."""

# The ``cluster`` fixture is imported from test_handshake.py, and tests name it as a parameter.
# ruff: noqa: F811

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from pbft.runtime.client import RemoteClient
from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import (
    BUSY_REASON,
    HandshakeBusy,
    HandshakeError,
    HandshakeEvicted,
    HandshakeRefused,
    Identity,
    accept_handshake,
    dial_handshake,
)
from pbft.runtime.handshake_slots import DEFAULT_MIN_AGE_SECONDS, HandshakeSlots, Slot
from pbft.runtime.links import Backoff, PeerLink, serve_connection
from pbft.runtime.metrics import handshake_failure_reason
from tests.runtime.test_handshake import (  # noqa: F401
    CLUSTER_ID,
    Cluster,
    CountingSigner,
    cluster,
    dialer,
    hello,
    make_config,
    run_pair,
)

CLIENT: Identity = ("client", 0)
REPLICA: Identity = ("replica", 0)
ACCEPTOR: Identity = ("replica", 3)


def test_a_claim_counts_only_against_its_own_pools_and_evicts_their_oldest() -> None:
    slots = HandshakeSlots(max_in_progress=3, max_per_host=2, max_per_principal=2)
    a0 = slots.acquire("a", ("client", 0), now=0.0)
    a1 = slots.acquire("a", ("client", 1), now=0.01)
    assert a0 and a1
    assert slots.acquire("a", ("client", 2), now=0.02) is None, "host a is full, all too young"
    b2 = slots.acquire("b", ("client", 2), now=0.02)
    assert b2
    assert slots.acquire("c", ("client", 3), now=0.03) is None, "all clients, too young"
    # Replica claims have pools of their own, per replica: the clients' do not touch them.
    r1 = [slots.acquire("a", ("replica", 1), now=0.03) for _ in range(2)]
    assert all(r1) and slots.acquire("a", ("replica", 1), now=0.04) is None
    assert slots.acquire("a", ("replica", 2), now=0.04) is not None
    assert (slots.in_progress, slots.peak, slots.refused, slots.evicted) == (6, 6, 3, 0)
    # Old enough: a full pool gives its oldest unproven handshake's slot to the newcomer.
    c3 = slots.acquire("c", ("client", 3), now=0.05)
    assert c3 and a0.evicted and a0.scope.cancel_called
    assert not (a1.evicted or b2.evicted or any(r.evicted for r in r1 if r))
    assert slots.acquire("a", ("replica", 1), now=1.0) is not None and r1[0] and r1[0].evicted
    # The pool of all clients is full: its oldest goes, whoever it claimed to be.
    assert slots.acquire("d", ("client", 1), now=1.0) and a1.evicted
    assert (slots.in_progress, slots.evicted) == (6, 3)
    a0.release()  # an evicted handshake gives back nothing twice
    b2.release()
    b2.release()
    assert slots.in_progress == 5 and "2 of 3 for all clients" in slots.describe("x", CLIENT)
    # At most max_per_principal unproven handshakes per claimed client, from any host.
    roomy = HandshakeSlots(max_per_principal=2)
    first, second = roomy.acquire("a", CLIENT, now=0.0), roomy.acquire("b", CLIENT, now=0.0)
    assert roomy.acquire("c", CLIENT, now=0.01) is None
    assert roomy.acquire("c", CLIENT, now=0.1) and first and first.evicted
    assert second and not second.evicted and roomy.in_progress == 2
    assert HandshakeSlots(1, max_per_host=None).acquire("x", CLIENT, now=0.0)


@pytest.mark.parametrize(
    "settings",
    [
        dict(max_in_progress=0),
        dict(max_per_host=0),
        dict(max_per_principal=0),
        dict(min_age_seconds=-1),
    ],
)
def test_impossible_slot_settings_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        HandshakeSlots(**settings)


def full_slots(dialer_: Identity) -> tuple[HandshakeSlots, Slot]:
    """Slots whose pool for ``dialer_`` is full, of a handshake that is never old enough
    to evict."""
    slots = HandshakeSlots(max_in_progress=1, max_per_principal=1, min_age_seconds=math.inf)
    slot = slots.acquire("elsewhere", dialer_)
    assert slot is not None
    return slots, slot


async def test_a_busy_acceptor_refuses_politely_without_any_signature(cluster: Cluster) -> None:
    slots, held = full_slots(CLIENT)
    acceptor_signer = CountingSigner(cluster.signer(("replica", 1)))
    dialer_signer = CountingSigner(cluster.signer(CLIENT))

    async def accept(framed: FramedStream) -> Identity:
        config, me = cluster.config, ("replica", 1)
        return await accept_handshake(framed, config, me, acceptor_signer, slots=slots, host="h")

    dialed, accepted = await run_pair(dialer(cluster, CLIENT, signer=dialer_signer), accept)
    assert isinstance(dialed, HandshakeRefused) and dialed.busy
    assert dialed.reason == BUSY_REASON
    assert isinstance(accepted, HandshakeBusy)
    assert "too many handshakes in progress" in str(accepted)
    assert (acceptor_signer.calls, dialer_signer.calls) == (0, 0)
    assert handshake_failure_reason(dialed) == handshake_failure_reason(accepted) == "busy"
    assert (slots.in_progress, slots.refused) == (1, 1)
    # Once a slot is free the same dialer gets in, and its slot is given back after.
    held.release()
    dialed, accepted = await run_pair(dialer(cluster, CLIENT), accept)
    assert (dialed, accepted) == (None, CLIENT)
    assert slots.in_progress == 0 and slots.peak == 1


async def test_a_failed_handshake_gives_its_slot_back(cluster: Cluster) -> None:
    slots = HandshakeSlots(max_in_progress=1)

    async def accept(framed: FramedStream) -> Identity:
        return await accept_handshake(
            framed, cluster.config, ("replica", 1), cluster.signer(("replica", 1)), slots=slots
        )

    impostor = dialer(cluster, CLIENT, signer=cluster.signer(("client", 1)))
    _, accepted = await run_pair(impostor, accept)
    assert isinstance(accepted, HandshakeError) and not isinstance(accepted, HandshakeBusy)
    assert slots.in_progress == 0


def test_other_refusals_are_not_busy() -> None:
    refused = HandshakeRefused("it serves cluster 'a', not 'b'")
    assert not refused.busy and handshake_failure_reason(refused) == "refused"


async def test_a_link_backs_off_with_full_jitter_while_the_peer_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config("ed25519", 4, 2, CLUSTER_ID)
    cluster = Cluster(config=config, outsiders=config, scheme="ed25519")
    slots, held = full_slots(REPLICA)
    attempts: list[float] = []
    failures: list[HandshakeError] = []
    connected = trio.Event()

    async with trio.open_nursery() as nursery:

        async def connect(host: str, port: int) -> trio.abc.Stream:
            attempts.append(trio.current_time())
            near, far = trio.testing.memory_stream_pair()
            nursery.start_soon(serve, far)
            return near

        async def serve(stream: trio.abc.Stream) -> None:
            await serve_connection(
                stream, cluster.config, ("replica", 1), cluster.signer(("replica", 1)),
                on_frame=lambda identity, frame: None,
                on_connect=lambda identity, framed: connected.set(),
                slots=slots, host="h",
            )  # fmt: skip

        link = PeerLink(
            cluster.config, REPLICA, cluster.signer(REPLICA), ("replica", 1), ("memory", 0),
            backoff=Backoff(0.1, 1.0, random.Random(3)), connect=connect,
            on_handshake_failure=failures.append,
        )  # fmt: skip
        nursery.start_soon(link.run)
        with trio.move_on_after(5):
            await connected.wait()
        assert not connected.is_set() and not link.statistics().connected
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert len(gaps) >= 5
        for attempt, gap in enumerate(gaps):
            assert 0 <= gap <= min(1.0, 0.1 * 2**attempt) + 1e-9
        assert all(isinstance(f, HandshakeRefused) and f.busy for f in failures)
        assert link.statistics().failures == len(attempts)
        # A slot frees up: the link gets in at its next try, within the cap.
        held.release()
        with trio.fail_after(1.0 + 1e-6):
            await connected.wait()
        nursery.cancel_scope.cancel()


async def test_a_client_retries_a_busy_replica_until_it_gets_in(tmp_path: Path) -> None:
    """Over loopback TCP: replica 0 refuses the client as busy three times, then serves it."""
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    host, port = files.address(0)
    refusals = 3
    refused: list[float] = []

    class Stingy(HandshakeSlots):
        def acquire(self, host: str, dialer: Identity, now: float | None = None) -> Slot | None:
            if len(refused) < refusals:
                refused.append(trio.current_time())
                return None
            return super().acquire(host, dialer, now)

    slots = Stingy()
    signer = files.load_signer("replica", 0)

    async def serve(stream: trio.abc.Stream) -> None:
        await serve_connection(
            stream, files.config, ("replica", 0), signer,
            on_frame=lambda identity, frame: None, slots=slots, host=host,
        )  # fmt: skip

    client = RemoteClient(files, 0)
    connection = client.connections[0]
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        nursery.start_soon(connection.run)
        with trio.fail_after(10):
            while not connection.connected:
                if refused and not connection.connected and connection.problem:
                    assert "busy" in connection.problem
                await trio.sleep(0.005)
        assert len(refused) == refusals
        assert slots.in_progress == 0
        nursery.cancel_scope.cancel()


# ------------------------------------------------ claims that stall: no one is locked out


def accepting(
    nursery: trio.Nursery, cluster: Cluster, slots: HandshakeSlots, host: str, ended: list[Any]
) -> FramedStream:
    """A connection to replica 3 (served with ``slots``, from ``host``); its outcome, an
    identity or a HandshakeError, goes to ``ended``."""
    left, right = trio.testing.memory_stream_pair()

    async def accept() -> None:
        framed = FramedStream(right)
        try:
            signer = cluster.signer(ACCEPTOR)
            ended.append(
                await accept_handshake(
                    framed, cluster.config, ACCEPTOR, signer, slots=slots, host=host
                )
            )
        except HandshakeError as error:
            ended.append(error)
        finally:
            await trio.aclose_forcefully(framed)

    nursery.start_soon(accept)
    return FramedStream(left)


async def stall(framed: FramedStream, hello_fields: list[Any], answers: list[str]) -> None:
    """Send HELLO, read the answer's tag, never send PROOF; wait for the acceptor to hang up."""
    await framed.send_frame(msgpack.packb(hello_fields))
    answers.append(msgpack.unpackb(await framed.receive_frame())[0])
    while await framed.stream.receive_some():
        pass


async def test_unproven_claims_of_one_replica_do_not_keep_another_out(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    """150 HELLOs claiming replica 1 that never prove it: replica 2 gets in at once, from the
    same host; replica 1 itself too, once the claims are 50 ms old (it evicts the oldest)."""
    slots = HandshakeSlots()
    ended: list[Any] = []
    answers: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(150):
            framed = accepting(nursery, cluster, slots, "mallory", ended)
            nursery.start_soon(stall, framed, hello(cluster, ("replica", 1)), answers)
            await trio.sleep(0.01)
        assert slots.in_progress <= 2, "claims of one replica hold two slots at most"
        for genuine in [("replica", 2), ("replica", 1)]:
            await trio.sleep(0 if genuine == ("replica", 2) else DEFAULT_MIN_AGE_SECONDS)
            framed = accepting(nursery, cluster, slots, "mallory", ended)
            expected = ACCEPTOR
            await dial_handshake(framed, cluster.config, genuine, cluster.signer(genuine), expected)
            await trio.sleep(0)  # the acceptor's side finishes too
            assert ended[-1] == genuine
        nursery.cancel_scope.cancel()
    evicted = [e for e in ended if isinstance(e, HandshakeEvicted)]
    assert evicted and all(handshake_failure_reason(e) == "evicted" for e in evicted)
    assert slots.evicted == len(evicted) and slots.in_progress == 0


async def test_stalled_client_claims_from_one_host_do_not_keep_honest_clients_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200 stalled handshakes claiming clients, 100 a second from one host (no per-host cap):
    every attempt of an honest client gets in; every stalled one ends within 2 s."""
    config = make_config("ed25519", 4, 202, CLUSTER_ID)
    cluster = Cluster(config=config, outsiders=config, scheme="ed25519")
    slots = HandshakeSlots(max_per_host=None)
    ended: list[Any] = []
    answers: list[str] = []
    honest: list[float] = []
    async with trio.open_nursery() as nursery:

        async def attack() -> None:
            for index in range(2, 202):
                framed = accepting(nursery, cluster, slots, "mallory", ended)
                nursery.start_soon(stall, framed, hello(cluster, ("client", index)), answers)
                await trio.sleep(0.01)

        nursery.start_soon(attack)
        for when in [0.7, 1.0, 1.5, 1.99]:
            await trio.sleep_until(when)
            assert slots.in_progress == 64, "the clients' pool is full of stalled handshakes"
            framed = accepting(nursery, cluster, slots, "honest", ended)
            await dial_handshake(framed, config, CLIENT, cluster.signer(CLIENT), ACCEPTOR)
            honest.append(trio.current_time())
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert len(honest) == 4 and answers.count("pbft-welcome") == 200
    stalled = [e for e in ended if not isinstance(e, tuple)]
    assert len(stalled) == 200 and all(isinstance(e, HandshakeError) for e in stalled)
    assert sum(isinstance(e, HandshakeEvicted) for e in stalled) >= 100
    assert slots.in_progress == 0
