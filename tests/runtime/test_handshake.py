"""The connection handshake: each end proves it holds the key of the principal it claims.

Run over memory streams for both signature schemes. A failed side closes its
stream, as the runtime does, so the other side sees the connection end. The
dialer proves itself first: the acceptor signs nothing before a PROOF verified.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import msgpack
import pytest
import trio
import trio.testing

from pbft.config import ClusterConfig
from pbft.crypto import SCHEMES, Signer
from pbft.runtime.channel import EphemeralKey
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import (
    HANDSHAKE_TIMEOUT_SECONDS,
    HANDSHAKE_VERSION,
    HandshakeError,
    Identity,
    accept_handshake,
    dial_handshake,
)
from pbft.simnet import derive_signer

SEED = 11
CLUSTER_ID = "handshake-test"
Side = Callable[[FramedStream], Awaitable[Any]]


@attrs.frozen
class Cluster:
    """Four replicas and two clients; ``outsiders`` also knows a fifth replica and third client."""

    config: ClusterConfig
    outsiders: ClusterConfig
    scheme: str

    def signer(self, identity: Identity) -> Signer:
        return derive_signer(SEED, identity[0], identity[1], self.scheme)


def make_config(scheme: str, replicas: int, clients: int, cluster_id: str) -> ClusterConfig:
    return ClusterConfig(
        cluster_id=cluster_id,
        f=1,
        replica_keys=tuple(
            derive_signer(SEED, "replica", i, scheme).public_key for i in range(replicas)
        ),
        client_keys=tuple(
            derive_signer(SEED, "client", c, scheme).public_key for c in range(clients)
        ),
        scheme=scheme,
    )


@pytest.fixture(params=SCHEMES)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    scheme = request.param
    return Cluster(
        config=make_config(scheme, 4, 2, CLUSTER_ID),
        outsiders=make_config(scheme, 5, 3, CLUSTER_ID),
        scheme=scheme,
    )


def dialer(
    cluster: Cluster,
    me: Identity,
    *,
    signer: Signer | None = None,
    expected: Identity = ("replica", 1),
    config: ClusterConfig | None = None,
) -> Side:
    signer = signer or cluster.signer(me)
    config = config or cluster.config
    return lambda framed: dial_handshake(framed, config, me, signer, expected)


def acceptor(cluster: Cluster, index: int = 1, *, signer: Signer | None = None) -> Side:
    me = ("replica", index)
    signer = signer or cluster.signer(me)
    return lambda framed: accept_handshake(framed, cluster.config, me, signer)


async def run_pair(dial: Side, accept: Side) -> tuple[Any, Any]:
    """Run both sides over a memory stream pair; each outcome is a result or a HandshakeError."""
    left, right = trio.testing.memory_stream_pair()
    outcomes: dict[str, Any] = {}

    async def side(name: str, function: Side, stream: trio.abc.Stream) -> None:
        framed = FramedStream(stream)
        try:
            outcomes[name] = await function(framed)
        except HandshakeError as error:
            outcomes[name] = error
            await trio.aclose_forcefully(framed)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "dialer", dial, left)
        nursery.start_soon(side, "acceptor", accept, right)
    return outcomes["dialer"], outcomes["acceptor"]


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def raw_sender(*chunks: bytes) -> Side:
    """A peer that writes ``chunks`` as they are; returns what it got before the other side
    hung up (nothing, when its HELLO was refused)."""

    async def send(framed: FramedStream) -> bytes:
        for chunk in chunks:
            await framed.stream.send_all(chunk)
        received = b""
        while data := await framed.stream.receive_some():
            received += data
        return received

    return send


def hello(cluster: Cluster, identity: Identity = ("client", 0), **changes: Any) -> list[Any]:
    fields = {
        "tag": "pbft-hello",
        "version": HANDSHAKE_VERSION,
        "cluster_id": cluster.config.cluster_id,
        "role": identity[0],
        "id": identity[1],
        "nonce": bytes(32),
        "channel_key": EphemeralKey().public,
    }
    fields.update(changes)
    return list(fields.values())


def welcome(cluster: Cluster, index: int = 1, **changes: Any) -> bytes:
    """A WELCOME (unsigned: the acceptor's challenge) from replica ``index``, some fields
    changed."""
    fields = {
        "tag": "pbft-welcome",
        "version": HANDSHAKE_VERSION,
        "cluster_id": cluster.config.cluster_id,
        "role": "replica",
        "id": index,
        "nonce": bytes(range(32)),
        "channel_key": EphemeralKey().public,
    }
    fields.update(changes)
    return msgpack.packb(list(fields.values()))


def answering_acceptor(welcome_bytes: bytes) -> Side:
    """A hand-written acceptor: reads HELLO, answers ``welcome_bytes``; returns the frames
    the dialer sent after it (its PROOF, if it signed one)."""

    async def accept(framed: FramedStream) -> bytes:
        await framed.receive_frame()
        await framed.send_frame(welcome_bytes)
        received = b""
        while data := await framed.stream.receive_some():
            received += data
        return received

    return accept


@attrs.define
class CountingSigner:
    """A signer that counts its signatures."""

    signer: Signer
    calls: int = 0

    @property
    def scheme(self) -> str:
        return self.signer.scheme

    def sign(self, data: bytes) -> bytes:
        self.calls += 1
        return self.signer.sign(data)


# ----------------------------------------------------------------------------- success


async def test_replicas_authenticate_each_other(cluster: Cluster) -> None:
    dialed, accepted = await run_pair(dialer(cluster, ("replica", 0)), acceptor(cluster, 1))
    assert dialed is None
    assert accepted == ("replica", 0)


async def test_a_client_authenticates_to_a_replica(cluster: Cluster) -> None:
    dialed, accepted = await run_pair(
        dialer(cluster, ("client", 1), expected=("replica", 3)), acceptor(cluster, 3)
    )
    assert dialed is None
    assert accepted == ("client", 1)


# ------------------------------------------------------------------ false identities


async def test_a_dialer_claiming_another_principal_is_refused(cluster: Cluster) -> None:
    impostor = dialer(cluster, ("replica", 2), signer=cluster.signer(("replica", 3)))
    _, accepted = await run_pair(impostor, acceptor(cluster))
    assert isinstance(accepted, HandshakeError)
    assert "does not hold the key of replica 2" in str(accepted)


async def test_a_client_claiming_to_be_a_replica_is_refused(cluster: Cluster) -> None:
    impostor = dialer(cluster, ("replica", 0), signer=cluster.signer(("client", 0)))
    _, accepted = await run_pair(impostor, acceptor(cluster))
    assert isinstance(accepted, HandshakeError)


async def test_an_acceptor_claiming_another_replica_is_refused(cluster: Cluster) -> None:
    impostor = acceptor(cluster, 1, signer=cluster.signer(("replica", 2)))
    dialed, accepted = await run_pair(dialer(cluster, ("client", 0)), impostor)
    assert isinstance(dialed, HandshakeError)
    assert "does not hold the key of replica 1" in str(dialed)
    # The impostor's side ended with CONFIRM; the dialer hung up on it and sends nothing.
    assert accepted == ("client", 0)


async def test_the_dialer_refuses_a_replica_it_did_not_dial(cluster: Cluster) -> None:
    dialed, _ = await run_pair(
        dialer(cluster, ("client", 0), expected=("replica", 2)), acceptor(cluster, 1)
    )
    assert isinstance(dialed, HandshakeError)
    assert "expected replica 2 but replica 1 answered" in str(dialed)


@pytest.mark.parametrize("identity", [("client", 2), ("replica", 4)])
async def test_a_principal_outside_the_cluster_is_refused(
    cluster: Cluster, identity: Identity
) -> None:
    # The outsider holds a real key and a configuration that lists it; ours does not.
    outsider = dialer(cluster, identity, config=cluster.outsiders)
    dialed, accepted = await run_pair(outsider, acceptor(cluster))
    assert isinstance(accepted, HandshakeError)
    assert "is not a member of the cluster" in str(accepted)
    assert isinstance(dialed, HandshakeError)


async def test_a_dialer_of_another_cluster_is_refused(cluster: Cluster) -> None:
    other = make_config(cluster.scheme, 4, 2, "another-cluster")
    dialed, accepted = await run_pair(
        dialer(cluster, ("replica", 0), config=other), acceptor(cluster)
    )
    assert isinstance(accepted, HandshakeError)
    assert "belongs to cluster 'another-cluster'" in str(accepted)
    assert isinstance(dialed, HandshakeError)


async def test_an_acceptor_of_another_cluster_is_refused(cluster: Cluster) -> None:
    other = answering_acceptor(welcome(cluster, cluster_id="another-cluster"))
    dialed, proof = await run_pair(dialer(cluster, ("client", 0)), other)
    assert isinstance(dialed, HandshakeError)
    assert "belongs to cluster 'another-cluster'" in str(dialed)
    assert proof == b"", "the dialer signed a PROOF for another cluster's replica"


async def test_a_replayed_proof_does_not_open_a_second_session(cluster: Cluster) -> None:
    """Freshness: the acceptor's nonce changes, so a recorded PROOF no longer verifies."""
    left, right = trio.testing.memory_stream_pair()
    recorded: list[bytes] = []
    original_send_all = left.send_all

    async def recording_send_all(data: bytes | bytearray | memoryview) -> None:
        recorded.append(bytes(data))
        await original_send_all(data)

    left.send_all = recording_send_all  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialer(cluster, ("replica", 0)), FramedStream(left))
        assert await acceptor(cluster)(FramedStream(right)) == ("replica", 0)
    hello_wire, proof_wire = recorded

    async def replay(framed: FramedStream) -> None:
        await framed.stream.send_all(hello_wire)
        await framed.receive_frame()
        await framed.stream.send_all(proof_wire)

    _, accepted = await run_pair(replay, acceptor(cluster))
    assert isinstance(accepted, HandshakeError)
    assert "does not hold the key of replica 0" in str(accepted)


# ------------------------------------------------------------------------ bad input


async def test_garbage_bytes_are_refused(cluster: Cluster) -> None:
    garbage = [
        frame(b"hello, I am replica 0"),
        b"GET / HTTP/1.1\r\nHost: replica\r\n\r\n",
        random.Random(3).randbytes(2000),
        frame(bytes(2000)),  # above the handshake's frame limit
    ]
    for chunk in garbage:
        answer, accepted = await run_pair(raw_sender(chunk), acceptor(cluster))
        assert isinstance(accepted, HandshakeError), chunk
        assert answer == b"", "the acceptor answered garbage with a WELCOME"


async def test_an_unauthenticated_peer_cannot_announce_a_large_frame(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    """Until it has proven who it is, a peer gets 1 KiB frames, not the 4 MiB of a replica."""
    start = trio.current_time()
    answer, accepted = await run_pair(raw_sender((1 << 20).to_bytes(4, "big")), acceptor(cluster))
    assert isinstance(accepted, HandshakeError)
    assert "exceeds the limit of 1024" in str(accepted)
    assert trio.current_time() == start  # refused at once, without waiting for the body
    assert answer == b""


async def test_a_garbage_welcome_is_refused(cluster: Cluster) -> None:
    garbage = answering_acceptor(b"\xc1 not msgpack")
    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), garbage)
    assert isinstance(dialed, HandshakeError)
    assert "malformed" in str(dialed)


# A well-formed HELLO of another version is answered REFUSED: test_handshake_refusal.py.
MALFORMED_HELLOS = {
    "short channel key": dict(channel_key=bytes(31)),
    "small-order channel key": dict(channel_key=bytes(32)),
    "version true": dict(version=True),
    "unknown role": dict(role="admin"),
    "boolean id": dict(id=True),
    "negative id": dict(id=-1),
    "string id": dict(id="0"),
    "short nonce": dict(nonce=bytes(31)),
    "string nonce": dict(nonce="0" * 32),
    "binary cluster id": dict(cluster_id=CLUSTER_ID.encode()),
    "wrong tag": dict(tag="pbft-welcome"),
}


@pytest.mark.parametrize("changes", MALFORMED_HELLOS.values(), ids=MALFORMED_HELLOS.keys())
async def test_a_malformed_hello_is_refused(cluster: Cluster, changes: dict[str, Any]) -> None:
    answer, accepted = await run_pair(
        raw_sender(frame(msgpack.packb(hello(cluster, **changes)))), acceptor(cluster)
    )
    assert isinstance(accepted, HandshakeError)
    assert answer == b"", "the acceptor answered a malformed HELLO with a WELCOME"


async def test_a_hello_of_the_wrong_shape_or_encoding_is_refused(cluster: Cluster) -> None:
    fields = hello(cluster)
    good = msgpack.packb(fields)
    bad_payloads = [
        msgpack.packb([*fields, b"extra"]),
        msgpack.packb(fields[:-1]),
        msgpack.packb(dict(enumerate(fields))),
        msgpack.packb([]),
        good + b"\x00",  # trailing bytes
        good.replace(b"hello\x03", b"hello\xce\x00\x00\x00\x03", 1),  # version 3, wider
    ]
    assert msgpack.unpackb(bad_payloads[-1]) == fields  # same values, other bytes
    for payload in bad_payloads:
        answer, accepted = await run_pair(raw_sender(frame(payload)), acceptor(cluster))
        assert isinstance(accepted, HandshakeError), payload
        assert answer == b"", payload


async def test_a_welcome_of_version_2_is_refused(cluster: Cluster) -> None:
    """Version 2's WELCOME carried the acceptor's signature: 8 fields, refused unsigned-for."""
    old = answering_acceptor(welcome(cluster, version=2))
    dialed, proof = await run_pair(dialer(cluster, ("client", 0)), old)
    assert isinstance(dialed, HandshakeError)
    assert "unsupported handshake version 2" in str(dialed)
    assert proof == b""


async def test_a_welcome_with_a_small_order_channel_key_is_refused(cluster: Cluster) -> None:
    """A WELCOME whose X25519 key gives no shared secret: refused before the dialer signs."""
    dialed, proof = await run_pair(
        dialer(cluster, ("client", 0)), answering_acceptor(welcome(cluster, channel_key=bytes(32)))
    )
    assert isinstance(dialed, HandshakeError)
    assert "no shared secret" in str(dialed)
    assert proof == b""


# ------------------------------------------------------------------- silence, misuse


async def test_a_silent_dialer_times_out(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    _, right = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeError, match="handshake timed out"):
        await acceptor(cluster)(FramedStream(right))
    assert trio.current_time() - start == pytest.approx(HANDSHAKE_TIMEOUT_SECONDS)


async def test_a_silent_acceptor_times_out(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    left, _ = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeError, match="handshake timed out"):
        await dialer(cluster, ("replica", 0))(FramedStream(left))
    assert trio.current_time() - start == pytest.approx(HANDSHAKE_TIMEOUT_SECONDS)


async def test_impossible_local_identities_are_local_errors(cluster: Cluster) -> None:
    left, right = trio.testing.memory_stream_pair()
    config, signer = cluster.config, cluster.signer(("client", 0))
    with pytest.raises(ValueError, match="only replicas accept"):
        await accept_handshake(FramedStream(right), config, ("client", 0), signer)
    with pytest.raises(ValueError, match="only replicas accept"):
        await dial_handshake(FramedStream(left), config, ("client", 0), signer, ("client", 1))
    with pytest.raises(ValueError, match="not a member"):
        await dial_handshake(FramedStream(left), config, ("client", 9), signer, ("replica", 0))
