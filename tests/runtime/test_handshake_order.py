"""The dialer proves itself first: the acceptor signs nothing before a PROOF verified.

A reconnect storm, or anyone who can open TCP connections, must not make a
replica sign: WELCOME is an unsigned challenge, and the acceptor's signature
comes in CONFIRM, once the dialer's PROOF verified. The dialer in turn signs
only a WELCOME from the replica it dialed, and accepts only a CONFIRM of this
very transcript.
"""

# The ``cluster`` fixture is imported from test_handshake.py, and tests name it as a parameter.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import (
    CONFIRM_TAG,
    HANDSHAKE_TIMEOUT_SECONDS,
    PROOF_TAG,
    HandshakeError,
    HandshakeProofRejected,
)
from pbft.runtime.handshake_slots import PROOF_TIMEOUT_SECONDS
from pbft.runtime.metrics import handshake_failure_reason
from tests.runtime.test_handshake import (  # noqa: F401
    Cluster,
    CountingSigner,
    Side,
    acceptor,
    cluster,
    dialer,
    frame,
    hello,
    run_pair,
    welcome,
)


def scripted_dialer(cluster: Cluster, *after_welcome: bytes, **hello_changes: Any) -> Side:
    """A dialer that sends a well-formed HELLO of client 0, reads WELCOME, then sends the
    raw bytes ``after_welcome`` and waits for the acceptor to hang up."""

    async def dial(framed: FramedStream) -> None:
        await framed.send_frame(msgpack.packb(hello(cluster, **hello_changes)))
        await framed.receive_frame()
        for chunk in after_welcome:
            await framed.stream.send_all(chunk)
        while await framed.stream.receive_some():
            pass

    return dial


async def test_the_acceptor_signs_nothing_before_a_valid_proof(cluster: Cluster) -> None:
    signature_bytes = len(cluster.signer(("client", 0)).sign(b"x"))
    attempts = {
        "HELLO only, then hang up": scripted_dialer(cluster),
        "a garbage PROOF": scripted_dialer(cluster, frame(b"\xc1 garbage")),
        "a PROOF of zeros": scripted_dialer(
            cluster, frame(msgpack.packb([PROOF_TAG, bytes(signature_bytes)]))
        ),
        "a PROOF signed with another client's key": dialer(
            cluster, ("client", 0), signer=cluster.signer(("client", 1))
        ),
        "a HELLO from a principal it does not know": dialer(
            cluster, ("client", 2), config=cluster.outsiders
        ),
    }
    for name, attempt in attempts.items():
        counting = CountingSigner(cluster.signer(("replica", 1)))
        _, accepted = await run_pair(attempt, acceptor(cluster, signer=counting))
        assert isinstance(accepted, HandshakeError), name
        assert counting.calls == 0, f"{name}: the acceptor signed before the dialer proved"
    counting = CountingSigner(cluster.signer(("replica", 1)))
    dialing = CountingSigner(cluster.signer(("client", 0)))
    dialed, accepted = await run_pair(
        dialer(cluster, ("client", 0), signer=dialing), acceptor(cluster, signer=counting)
    )
    assert (dialed, accepted) == (None, ("client", 0))
    assert (dialing.calls, counting.calls) == (1, 1)


async def test_a_silent_dialer_after_hello_costs_no_signature(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    """One that takes WELCOME and never sends PROOF times out, after the PROOF deadline
    (shorter than the whole handshake's); nothing was signed."""

    async def stall(framed: FramedStream) -> None:
        await framed.send_frame(msgpack.packb(hello(cluster)))
        await framed.receive_frame()
        await trio.sleep_forever()

    counting = CountingSigner(cluster.signer(("replica", 1)))
    async with trio.open_nursery() as nursery:
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(stall, FramedStream(left))
        start = trio.current_time()
        try:
            await acceptor(cluster, signer=counting)(FramedStream(right))
        except HandshakeError as error:
            assert "timed out: no PROOF within 2 s of WELCOME" in str(error)
            assert handshake_failure_reason(error) == "timeout"
            assert trio.current_time() - start == pytest.approx(PROOF_TIMEOUT_SECONDS)
            assert PROOF_TIMEOUT_SECONDS < HANDSHAKE_TIMEOUT_SECONDS
        else:
            raise AssertionError("a dialer that never proved itself was accepted")
        nursery.cancel_scope.cancel()
    assert counting.calls == 0


async def test_a_dialer_whose_proof_does_not_verify_hears_it_from_the_hang_up(
    cluster: Cluster,
) -> None:
    """The acceptor closes instead of confirming: the likely cause is another key for us."""
    wrong_key = dialer(cluster, ("client", 0), signer=cluster.signer(("client", 1)))
    dialed, accepted = await run_pair(wrong_key, acceptor(cluster))
    assert isinstance(dialed, HandshakeProofRejected)
    assert "did not accept our proof" in str(dialed)
    assert "does not hold the key of client 0" in str(accepted)


async def test_a_replayed_confirm_does_not_fool_the_dialer(cluster: Cluster) -> None:
    """Freshness for the dialer: CONFIRM signs its nonce and key, new in every HELLO."""
    left, right = trio.testing.memory_stream_pair()
    recorded: list[bytes] = []
    original_send_all = right.send_all

    async def recording_send_all(data: bytes | bytearray | memoryview) -> None:
        recorded.append(bytes(data))
        await original_send_all(data)

    right.send_all = recording_send_all  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor(cluster), FramedStream(right))
        await dialer(cluster, ("client", 0))(FramedStream(left))
    welcome_wire, confirm_wire = recorded

    async def replay(framed: FramedStream) -> None:
        await framed.receive_frame()
        await framed.stream.send_all(welcome_wire)
        await framed.receive_frame()
        await framed.stream.send_all(confirm_wire)

    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), replay)
    assert isinstance(dialed, HandshakeError)
    assert "does not hold the key of replica 1" in str(dialed)


async def test_a_proof_reflected_as_a_confirm_is_refused(cluster: Cluster) -> None:
    """Direction: the dialer's own signature, sent back as CONFIRM, never verifies as the
    acceptor's, even where one principal were both (labels and transcripts differ)."""

    async def reflect(framed: FramedStream) -> None:
        await framed.receive_frame()
        await framed.send_frame(welcome(cluster))
        _, signature = msgpack.unpackb(await framed.receive_frame())
        await framed.send_frame(msgpack.packb([CONFIRM_TAG, signature]))

    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), reflect)
    assert isinstance(dialed, HandshakeError)
    assert "signature does not verify" in str(dialed)


async def test_a_confirm_that_is_not_one_is_refused(cluster: Cluster) -> None:
    async def garble(framed: FramedStream) -> None:
        await framed.receive_frame()
        await framed.send_frame(welcome(cluster))
        await framed.receive_frame()
        await framed.send_frame(msgpack.packb([CONFIRM_TAG, "not a signature"]))

    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), garble)
    assert isinstance(dialed, HandshakeError)
    assert "the signature must be" in str(dialed)
