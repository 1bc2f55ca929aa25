"""Authenticated channels: the handshake's session keys and the MAC on every frame."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from pbft.crypto import ED25519
from pbft.runtime.channel import TAG_BYTES, ChannelKeyError, EphemeralKey, FrameMac
from pbft.runtime.framing import FramedStream, FrameError
from pbft.runtime.handshake import accept_handshake, dial_handshake
from tests.runtime.test_handshake import CLUSTER_ID, Cluster, make_config

MATERIAL = os.urandom(64)


def sealed(mac: FrameMac, payload: bytes) -> bytes:
    """One frame as a protected sender puts it on the wire."""
    return (len(payload) + TAG_BYTES).to_bytes(4, "big") + payload + mac.seal(payload)


def protected_receiver() -> tuple[trio.testing.MemoryReceiveStream, FramedStream, FrameMac]:
    incoming = trio.testing.MemoryReceiveStream()
    framed = FramedStream(trio.StapledStream(trio.testing.MemorySendStream(), incoming), 1024)
    framed.protect(FrameMac.for_acceptor(MATERIAL))
    return incoming, framed, FrameMac.for_dialer(MATERIAL)


async def test_protected_frames_round_trip_in_order() -> None:
    incoming, framed, sender = protected_receiver()
    incoming.put_data(sealed(sender, b"one") + sealed(sender, b"") + sealed(sender, bytes(1024)))
    assert await framed.receive_frames() == [b"one", b"", bytes(1024)]


@pytest.mark.parametrize("defect", ["altered", "replayed", "dropped", "other key", "no tag"])
async def test_a_frame_that_fails_its_mac_ends_the_connection(defect: str) -> None:
    incoming, framed, sender = protected_receiver()
    first = sealed(sender, b"first")
    if defect == "altered":
        wire = first[:6] + bytes([first[6] ^ 1]) + first[7:]
    elif defect == "replayed":
        assert await _receive_one(incoming, framed, first) == b"first"
        wire = first
    elif defect == "dropped":
        wire = sealed(sender, b"second")  # counter 1 where 0 is expected
    elif defect == "other key":
        wire = sealed(FrameMac.for_dialer(os.urandom(64)), b"first")
    else:
        wire = (5).to_bytes(4, "big") + b"first"
    incoming.put_data(wire)
    with pytest.raises(FrameError):
        await framed.receive_frame()


async def _receive_one(
    incoming: trio.testing.MemoryReceiveStream, framed: FramedStream, wire: bytes
) -> bytes:
    incoming.put_data(wire)
    return await framed.receive_frame()


async def test_the_limit_counts_the_payload_not_the_tag() -> None:
    incoming, framed, sender = protected_receiver()
    incoming.put_data(sealed(sender, bytes(1024)) + sealed(sender, bytes(1025)))
    assert await framed.receive_frame() == bytes(1024)
    with pytest.raises(FrameError, match="frame of 1025 bytes exceeds the limit of 1024"):
        await framed.receive_frame()


def test_both_ends_derive_the_same_keys_and_a_small_order_key_is_refused() -> None:
    dialer, acceptor = EphemeralKey(), EphemeralKey()
    transcript = b"hello|welcome"
    one = dialer.session_keys(acceptor.public, transcript, b"c")
    assert one == acceptor.session_keys(dialer.public, transcript, b"c")
    assert one != dialer.session_keys(acceptor.public, transcript + b"x", b"c")
    assert one != dialer.session_keys(acceptor.public, transcript, b"other cluster")
    with pytest.raises(ChannelKeyError, match="no shared secret"):
        dialer.session_keys(bytes(32), transcript, b"c")


async def test_after_the_handshake_every_frame_both_ways_is_protected() -> None:
    cluster = Cluster(make_config(ED25519, 4, 2, CLUSTER_ID), make_config(ED25519, 5, 3,
                      CLUSTER_ID), ED25519)  # fmt: skip
    left, right = trio.testing.memory_stream_pair()
    near, far = FramedStream(left), FramedStream(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dial_handshake, near, cluster.config, ("client", 0),
                           cluster.signer(("client", 0)), ("replica", 1))  # fmt: skip
        assert await accept_handshake(far, cluster.config, ("replica", 1),
                                      cluster.signer(("replica", 1))) == ("client", 0)  # fmt: skip
    assert near.protected and far.protected
    await near.send_frames([b"request", b"again"])
    assert await far.receive_frames() == [b"request", b"again"]
    await far.send_frame(b"reply")
    assert await near.receive_frame() == b"reply"
    # Bytes written past the MAC (a man in the middle appending a frame) end the session.
    await left.send_all((3 + TAG_BYTES).to_bytes(4, "big") + b"bad" + bytes(TAG_BYTES))
    with pytest.raises(FrameError, match="MAC"):
        await far.receive_frame()
