"""Fuzz targets ``decoder`` and ``handshake``: a peer's bytes before it is trusted.

``decoder(data)``: ``data`` is one frame off the network. It goes through what
the runtime applies to a frame, in order: :func:`pbft.encoding.decode_signed`
under the replica's message limit, the replica's
:meth:`pbft.auth.Authenticator.decode` (accepted types, the channel's
principal), the type's size bound (:mod:`pbft.bounds`) and the signature
check, and the event log's description of it (the runtime's trace decodes
every frame again, a client's operation included). Decoding may only raise
``DecodeError``, and whatever decodes must be canonical: it re-encodes to the
very bytes received, nested payloads included. The same bytes are also tried
as an unsigned message and as a journal's prepared certificate.

``handshake(data)``: byte 0 picks the side; the rest is the whole byte stream
an unauthenticated peer sends (frame headers included). Even: we are the
acceptor and the stream is the dialer's (HELLO, PROOF); odd: we are a client
dialing replica 0 and the stream is the acceptor's (WELCOME or REFUSED, CONFIRM). The
handshake must end in :class:`HandshakeError` (or its ``HandshakeRefused``),
never another exception, and never succeed: no one can complete it without a
member's private key. Driving the public functions over an in-memory stream
keeps the target valid whatever order the messages come in.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import trio

from pbft.auth import Authenticator, Rejection
from pbft.bounds import message_bounds
from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import ED25519, Signer
from pbft.encoding import (
    DecodeError,
    decode_certificate,
    decode_message,
    decode_signed,
    encode_certificate,
    encode_message,
    encode_signed,
)
from pbft.messages import BYTES, U64, Signed, _ListOf, _SignedOf
from pbft.replica import REPLICA_ACCEPTS
from pbft.runtime.eventlog import _describe_frame as describe_frame
from pbft.runtime.eventlog import operation_fields
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import HandshakeError, accept_handshake, dial_handshake
from pbft.simnet import derive_signer

CLUSTER_ID = "fuzz"
#: The runtime's frame limit is far larger; a fuzz input is never near it.
MAX_MESSAGE_BYTES = 1 << 20
_CHANNELS: tuple[tuple[str, int] | None, ...] = (None, ("replica", 3), ("client", 0))


@cache
def keys() -> tuple[ClusterConfig, tuple[Signer, ...], tuple[Signer, ...]]:
    """An Ed25519 cluster (f=1) with two clients, deterministic keys."""
    replicas = tuple(derive_signer(0, "replica", i, ED25519) for i in range(4))
    clients = tuple(derive_signer(0, "client", c, ED25519) for c in range(2))
    config = ClusterConfig(
        cluster_id=CLUSTER_ID, f=1, scheme=ED25519,
        replica_keys=tuple(s.public_key for s in replicas),
        client_keys=tuple(s.public_key for s in clients),
    )  # fmt: skip
    return config, replicas, clients


@cache
def _authenticator() -> Authenticator:
    config, replicas, _ = keys()
    return Authenticator(config, replicas[0], max_message_bytes=MAX_MESSAGE_BYTES)


# ------------------------------------------------------------------------- decoder


def decoder(data: bytes) -> None:
    """The fuzz target for a frame from the network."""
    try:
        signed = decode_signed(data, MAX_MESSAGE_BYTES)
    except DecodeError:
        assert describe_frame(data) == {"type": "BYTES"}
    else:
        assert encode_signed(signed) == data, "decoded bytes are not canonical"
        _check_canonical(signed)
        assert describe_frame(data)["type"] == signed.message.TYPE
        operation = getattr(signed.message, "operation", None)
        if operation is not None:  # the event log shows a client's operation
            assert "op" in operation_fields(operation)
    try:
        message = decode_message(data, MAX_MESSAGE_BYTES)
    except DecodeError:
        pass
    else:
        assert encode_message(message) == data, "decoded message is not canonical"
    try:
        certificate = decode_certificate(data, MAX_MESSAGE_BYTES)
    except DecodeError:
        pass
    else:
        assert encode_certificate(certificate) == data, "decoded certificate is not canonical"
    _authenticate(data)


def _authenticate(data: bytes) -> None:
    auth = _authenticator()
    config = auth.config
    by_type = message_bounds(config, ProtocolParams()).by_type()
    for channel in _CHANNELS:
        decoded = auth.decode(data, REPLICA_ACCEPTS, channel)
        if type(decoded) is Rejection:
            assert decoded.reason in ("malformed", "wrong-recipient", "channel-mismatch")
            continue
        bound = by_type.get(decoded.message.TYPE)
        if bound is not None and len(decoded.payload) > bound:
            continue  # refused as too-large before the signature (pbft.replica_gate)
        reason = auth.verify(decoded, channel)
        assert reason in (None, "non-member", "bad-signature"), reason


def _check_canonical(signed: Signed[Any]) -> None:
    """Every nested signed message's payload is its message's canonical encoding."""
    message = signed.message
    assert encode_message(message) == signed.payload, f"{message.TYPE} payload not canonical"
    for name, kind in message.SCHEMA:
        _check_value(kind, getattr(message, name))


def _check_value(kind: Any, value: Any) -> None:
    if kind is U64:
        assert type(value) is int and 0 <= value < 2**63
    elif kind is BYTES:
        assert type(value) is bytes
    elif isinstance(kind, _ListOf):
        assert type(value) is tuple
        for item in value:
            _check_value(kind.kind, item)
    elif isinstance(kind, _SignedOf):
        assert type(value.message) is kind.message_type
        _check_canonical(value)
    else:
        for name, field_kind in kind.SCHEMA:
            _check_value(field_kind, getattr(value, name))


# ----------------------------------------------------------------------- handshake


class ScriptedStream(trio.abc.Stream):
    """A peer that sends ``script`` (then closes) and takes whatever we send."""

    def __init__(self, script: bytes) -> None:
        self.script = script
        self.sent = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        size = len(self.script) if max_bytes is None else max_bytes
        chunk, self.script = self.script[:size], self.script[size:]
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def handshake(data: bytes) -> None:
    """The fuzz target for an unauthenticated peer's side of the handshake."""
    if not data:
        return
    trio.run(_handshake, data[0] & 1 == 1, data[1:])


async def _handshake(dialing: bool, script: bytes) -> None:
    config, replicas, clients = keys()
    framed = FramedStream(ScriptedStream(script))
    try:
        if dialing:
            await dial_handshake(framed, config, ("client", 0), clients[0], ("replica", 0))
        else:
            await accept_handshake(framed, config, ("replica", 0), replicas[0])
    except HandshakeError:
        return
    raise AssertionError("the handshake succeeded with a peer holding no member's key")
