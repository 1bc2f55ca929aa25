"""Mutual authentication of a new connection, and its session keys.

The handshake lets the transport *attribute* each connection to one principal
(replica ``i`` or client ``c``) without trusting any id a peer merely claims,
and agrees the keys of the connection's frame MACs
(:mod:`pbft.runtime.channel`). That lets a replica send REPLYs back over a
client's own connection, keep one connection per peer, cut off a peer that
misbehaves, and send point-to-point messages without signatures.

Theory of operation
-------------------
The *dialer* opened the connection; the *acceptor* (always a replica) took
it. Each message is one frame holding a MessagePack array::

    1. dialer   -> acceptor  HELLO   ["pbft-hello", 2, cluster_id, role, id, nonce_d, x_d]
    2. acceptor -> dialer    WELCOME ["pbft-welcome", 2, cluster_id, "replica", id, nonce_a,
                                      x_a, sig_a]
    3. dialer   -> acceptor  PROOF   ["pbft-proof", sig_d]

    2'. acceptor -> dialer   REFUSED ["pbft-refused", reason]   (instead of WELCOME)

    sig_a = sign_a(prefix | "acceptor|" | HELLO bytes | packed WELCOME without sig_a)
    sig_d = sign_d(prefix | "dialer|" | HELLO bytes | WELCOME bytes)
    prefix = signing_prefix(cluster_id, "HANDSHAKE")

``x_d`` and ``x_a`` are ephemeral X25519 public keys, fresh for every
connection. Once PROOF is sent (dialer) or checked (acceptor), both ends derive
the session keys from X25519(x_d, x_a) and the transcript (HELLO and WELCOME),
and every later frame carries a MAC (:meth:`FramedStream.protect
<pbft.runtime.framing.FramedStream.protect>`).

Why this is enough:

* *Freshness*: each side signs the other side's 32 random nonce bytes, so a
  signature recorded from an earlier session is worthless in a new one.
* *Binding*: each signature covers the whole transcript so far, including
  both claimed identities, both ephemeral keys and the cluster id, so a man
  in the middle cannot splice two sessions together, change who is who, or
  swap in an ephemeral key of its own (it would then share the session keys).
* *Direction*: the ``acceptor|`` and ``dialer|`` labels keep a signature made
  in one role from being reflected back as the other role's proof; each
  direction of the channel has its own key.
* *Domain separation*: the ``HANDSHAKE`` prefix keeps handshake signatures
  from ever verifying as protocol messages, and the reverse.

The channel authenticates but does not encrypt: PBFT messages need
integrity, not secrecy.

A well-formed HELLO from a dialer the acceptor cannot serve (another
cluster's id, or a principal its configuration does not list) is answered
with REFUSED and its reason before the connection closes, so that a client
pointed at the wrong cluster can say why instead of only that the connection
closed; the dialer raises :class:`HandshakeRefused`. The reason is
unauthenticated, a hint for people and nothing more: the dialer treats it as
the failure it is anyway. Garbage and malformed HELLOs still get no answer at
all, and a failed PROOF only a closed connection (the dialer has already
finished its side by then).

Every field is validated strictly (type, length, canonical encoding), and the
frames of an unauthenticated peer are limited to :data:`HANDSHAKE_MAX_FRAME_BYTES`.
Any failure, including a timeout after :data:`HANDSHAKE_TIMEOUT_SECONDS`, a
closed connection or a transport error, raises :class:`HandshakeError`;
calling with an impossible local identity raises :class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import trio

from pbft.config import ClusterConfig
from pbft.crypto import SIGNATURE_BYTES, Signer, Verifier, make_verifier, signing_prefix
from pbft.runtime.channel import CHANNEL_KEY_BYTES, ChannelKeyError, EphemeralKey, FrameMac
from pbft.runtime.framing import ConnectionClosed, FramedStream, FrameError

#: A principal: ``("replica", i)`` or ``("client", c)``.
Identity = tuple[str, int]

REPLICA = "replica"
CLIENT = "client"
ROLES = (REPLICA, CLIENT)

HELLO_TAG = "pbft-hello"
WELCOME_TAG = "pbft-welcome"
PROOF_TAG = "pbft-proof"
REFUSED_TAG = "pbft-refused"
#: 2 added the ephemeral channel keys and the frame MACs.
HANDSHAKE_VERSION = 2
NONCE_BYTES = 32
#: How long either side waits for the whole handshake to finish.
HANDSHAKE_TIMEOUT_SECONDS = 5.0
#: Largest frame accepted during the handshake; real handshake frames are about 200 bytes.
HANDSHAKE_MAX_FRAME_BYTES = 1024
#: Largest principal index accepted on the wire, before it is looked up in the config.
MAX_PRINCIPAL_INDEX = 2**32 - 1
#: A REFUSED reason is cut to this many characters; it is a hint for people.
MAX_REFUSAL_CHARACTERS = 300


class HandshakeError(Exception):
    """The handshake failed: the peer is not who it claims, misbehaved, went silent or left."""


class HandshakeRefused(HandshakeError):
    """The acceptor answered HELLO with REFUSED; ``reason`` is what it said (unauthenticated)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the replica refused the handshake: {reason}")
        self.reason = reason


def format_identity(identity: Identity) -> str:
    """``("replica", 2)`` -> ``"replica 2"``, for messages and logs."""
    role, index = identity
    return f"{role} {index}"


# ---------------------------------------------------------------------------- dialer


async def dial_handshake(
    framed: FramedStream,
    config: ClusterConfig,
    me: Identity,
    signer: Signer,
    expected: Identity,
    verifier: Verifier | None = None,
    *,
    timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS,
) -> None:
    """Prove to the acceptor that we are ``me``; check that it is the replica ``expected``."""
    check_member(config, me, "me")
    acceptor_key = check_member(config, expected, "expected")
    if expected[0] != REPLICA:
        raise ValueError(f"only replicas accept connections, not {format_identity(expected)}")
    verifier = verifier or make_verifier(config.scheme)
    prefix = signing_prefix(config.cluster_id, "HANDSHAKE")
    ephemeral = EphemeralKey()
    with _handshake_failures(timeout_seconds):
        hello = _pack([HELLO_TAG, HANDSHAKE_VERSION, config.cluster_id, me[0], me[1], _nonce(),
                       ephemeral.public])  # fmt: skip
        await framed.send_frame(hello)
        welcome = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
        _raise_if_refused(welcome)
        body, channel_key_a, signature_a = _parse_welcome(welcome, config, expected)
        if not verifier.verify(acceptor_key, signature_a, prefix + b"acceptor|" + hello + body):
            raise HandshakeError(
                f"the acceptor's signature does not verify: "
                f"it does not hold the key of {format_identity(expected)}"
            )
        material = _session_keys(ephemeral, channel_key_a, hello + welcome, config)
        signature_d = signer.sign(prefix + b"dialer|" + hello + welcome)
        await framed.send_frame(_pack([PROOF_TAG, signature_d]))
        framed.protect(FrameMac.for_dialer(material))


def _parse_welcome(
    welcome: bytes, config: ClusterConfig, expected: Identity
) -> tuple[bytes, bytes, bytes]:
    """Validate WELCOME; return the packed body its signature covers, the acceptor's
    channel key and the signature."""
    fields = _unpack(welcome, WELCOME_TAG, 8)
    _, version, cluster_id, role, index, nonce_a, channel_key_a, signature_a = fields
    _check_version(version)
    _check_cluster_id(cluster_id, config)
    acceptor = _check_identity(role, index)
    _check_bytes(nonce_a, NONCE_BYTES, "nonce")
    _check_bytes(channel_key_a, CHANNEL_KEY_BYTES, "channel key")
    _check_bytes(signature_a, SIGNATURE_BYTES[config.scheme], "signature")
    if acceptor != expected:
        raise HandshakeError(
            f"expected {format_identity(expected)} but {format_identity(acceptor)} answered"
        )
    return _pack(fields[:7]), channel_key_a, signature_a


def _session_keys(
    ephemeral: EphemeralKey, peer_key: bytes, transcript: bytes, config: ClusterConfig
) -> bytes:
    try:
        return ephemeral.session_keys(peer_key, transcript, config.cluster_id.encode())
    except ChannelKeyError as error:
        raise HandshakeError(str(error)) from None


# -------------------------------------------------------------------------- acceptor


async def accept_handshake(
    framed: FramedStream,
    config: ClusterConfig,
    me: Identity,
    signer: Signer,
    verifier: Verifier | None = None,
    *,
    timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS,
) -> Identity:
    """Prove to the dialer that we are the replica ``me``; return the identity it proved."""
    check_member(config, me, "me")
    if me[0] != REPLICA:
        raise ValueError(f"only replicas accept connections, not {format_identity(me)}")
    verifier = verifier or make_verifier(config.scheme)
    prefix = signing_prefix(config.cluster_id, "HANDSHAKE")
    ephemeral = EphemeralKey()
    with _handshake_failures(timeout_seconds):
        hello = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
        dialer, channel_key_d, cluster_id = _parse_hello(hello)
        if cluster_id != config.cluster_id:
            await _refuse(framed, f"it serves cluster {config.cluster_id!r}, not {cluster_id!r}")
            raise HandshakeError(
                f"the peer belongs to cluster {cluster_id!r}, not {config.cluster_id!r}"
            )
        try:
            dialer_key = _public_key(config, dialer)
        except HandshakeError:
            await _refuse(
                framed,
                f"its cluster.toml (cluster {config.cluster_id!r}) does not list "
                f"{format_identity(dialer)}",
            )
            raise
        body = [WELCOME_TAG, HANDSHAKE_VERSION, config.cluster_id, REPLICA, me[1], _nonce(),
                ephemeral.public]  # fmt: skip
        signature_a = signer.sign(prefix + b"acceptor|" + hello + _pack(body))
        welcome = _pack([*body, signature_a])
        material = _session_keys(ephemeral, channel_key_d, hello + welcome, config)
        await framed.send_frame(welcome)
        proof = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
        _, signature_d = _unpack(proof, PROOF_TAG, 2)
        _check_bytes(signature_d, SIGNATURE_BYTES[config.scheme], "signature")
        if not verifier.verify(dialer_key, signature_d, prefix + b"dialer|" + hello + welcome):
            raise HandshakeError(
                f"the dialer's signature does not verify: "
                f"it does not hold the key of {format_identity(dialer)}"
            )
        framed.protect(FrameMac.for_acceptor(material))
        return dialer


def _parse_hello(hello: bytes) -> tuple[Identity, bytes, str]:
    """Validate HELLO's shape; return the identity the dialer claims (not yet proven), its
    channel key and the cluster id it names (not yet compared with ours)."""
    _, version, cluster_id, role, index, nonce_d, channel_key_d = _unpack(hello, HELLO_TAG, 7)
    _check_version(version)
    if type(cluster_id) is not str:
        raise HandshakeError("the cluster id must be a string")
    dialer = _check_identity(role, index)
    _check_bytes(nonce_d, NONCE_BYTES, "nonce")
    _check_bytes(channel_key_d, CHANNEL_KEY_BYTES, "channel key")
    return dialer, channel_key_d, cluster_id


async def _refuse(framed: FramedStream, reason: str) -> None:
    """Tell a dialer we cannot serve why, if the connection still takes it; never raises
    for the connection's sake (the caller is refusing the peer anyway)."""
    with contextlib.suppress(FrameError, trio.BrokenResourceError, trio.ClosedResourceError,
                             OSError):  # fmt: skip
        await framed.send_frame(_pack([REFUSED_TAG, reason[:MAX_REFUSAL_CHARACTERS]]))


def _raise_if_refused(frame: bytes) -> None:
    """Raise HandshakeRefused when the acceptor's answer is REFUSED rather than WELCOME."""
    try:
        fields = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception:  # not REFUSED, whatever it is: WELCOME's parser names the problem
        return
    if type(fields) is list and len(fields) == 2 and fields[0] == REFUSED_TAG:
        reason = fields[1] if type(fields[1]) is str else repr(fields[1])
        # Printable only: the text comes from an unauthenticated peer and ends up on a terminal.
        reason = "".join(c if c.isprintable() else "?" for c in reason[:MAX_REFUSAL_CHARACTERS])
        raise HandshakeRefused(reason)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _handshake_failures(timeout_seconds: float) -> Iterator[None]:
    """Apply the deadline, and turn every way the peer can fail us into HandshakeError."""
    try:
        with trio.fail_after(timeout_seconds):
            yield
    except trio.TooSlowError:
        raise HandshakeError("handshake timed out") from None
    except ConnectionClosed:
        raise HandshakeError("the peer closed the connection during the handshake") from None
    except (FrameError, trio.BrokenResourceError, OSError) as error:
        raise HandshakeError(f"the connection failed during the handshake: {error}") from error


def _nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def _pack(fields: list[Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _unpack(frame: bytes, tag: str, length: int) -> list[Any]:
    """Decode one handshake message: an array of ``length`` fields starting with ``tag``."""
    try:
        fields = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises many types for bad input; all mean malformed
        raise HandshakeError(f"malformed handshake message (expected {tag}): {error}") from None
    if type(fields) is not list or not fields or fields[0] != tag:
        raise HandshakeError(f"expected a {tag} message")
    if len(fields) != length:
        raise HandshakeError(f"a {tag} message has {length} fields, got {len(fields)}")
    # Only the canonical encoding is accepted: one message, one byte string.
    if any(type(field) not in (str, int, bytes) for field in fields) or _pack(fields) != frame:
        raise HandshakeError(f"a {tag} message is not canonically encoded")
    return fields


def _check_version(version: Any) -> None:
    if type(version) is not int or version != HANDSHAKE_VERSION:
        raise HandshakeError(
            f"unsupported handshake version {version!r} (this node speaks {HANDSHAKE_VERSION})"
        )


def _check_cluster_id(cluster_id: Any, config: ClusterConfig) -> None:
    if type(cluster_id) is not str:
        raise HandshakeError("the cluster id must be a string")
    if cluster_id != config.cluster_id:
        raise HandshakeError(
            f"the peer belongs to cluster {cluster_id!r}, not {config.cluster_id!r}"
        )


def _check_identity(role: Any, index: Any) -> Identity:
    """Check the shape of a claimed identity (not yet whether the config knows it)."""
    if type(role) is not str or role not in ROLES:
        raise HandshakeError(f"unknown role {role!r} (expected one of {ROLES})")
    if type(index) is not int or not 0 <= index <= MAX_PRINCIPAL_INDEX:
        raise HandshakeError(f"a principal id must be an integer in [0, 2**32), got {index!r}")
    return (role, index)


def _check_bytes(value: Any, length: int, name: str) -> None:
    if type(value) is not bytes or len(value) != length:
        raise HandshakeError(f"the {name} must be {length} bytes")


def _public_key(config: ClusterConfig, identity: Identity) -> bytes:
    """The public key of a principal of the cluster; HandshakeError for an unknown one."""
    role, index = identity
    keys = config.replica_keys if role == REPLICA else config.client_keys
    if not 0 <= index < len(keys):
        raise HandshakeError(f"{format_identity(identity)} is not a member of the cluster")
    return keys[index]


def check_member(config: ClusterConfig, identity: Identity, name: str = "identity") -> bytes:
    """The public key of a member; ValueError for a non-member passed by our own caller.

    A local mistake, unlike a peer's false claim, is a bug: it raises ValueError.
    """
    try:
        return _public_key(config, _check_identity(*identity))
    except (HandshakeError, TypeError, ValueError) as error:
        raise ValueError(f"{name} = {identity!r} is not a member of the cluster: {error}") from None
