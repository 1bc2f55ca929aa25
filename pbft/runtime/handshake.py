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

    1. dialer   -> acceptor  HELLO   ["pbft-hello", 3, cluster_id, role, id, nonce_d, x_d]
    2. acceptor -> dialer    WELCOME ["pbft-welcome", 3, cluster_id, "replica", id, nonce_a, x_a]
    3. dialer   -> acceptor  PROOF   ["pbft-proof", sig_d]
    4. acceptor -> dialer    CONFIRM ["pbft-confirm", sig_a]

    2'. acceptor -> dialer   REFUSED ["pbft-refused", reason]   (instead of WELCOME)

    sig_d = sign_d(prefix | "dialer|" | HELLO bytes | WELCOME bytes)
    sig_a = sign_a(prefix | "acceptor|" | HELLO bytes | WELCOME bytes | PROOF bytes)
    prefix = signing_prefix(cluster_id, "HANDSHAKE")

``x_d`` and ``x_a`` are ephemeral X25519 public keys, fresh for every
connection. Each end derives the session keys from X25519(x_d, x_a) and the
transcript (HELLO and WELCOME) as soon as it has both keys, before PROOF (so
that a key giving no shared secret is refused before anyone signs), but uses
them only once CONFIRM is sent (acceptor) or checked (dialer): from then on
every frame carries a MAC (:meth:`FramedStream.protect
<pbft.runtime.framing.FramedStream.protect>`).

*The dialer proves itself first*: WELCOME is an unsigned challenge, and the
acceptor signs nothing until PROOF verified under the key its configuration
lists for the principal HELLO claims (one it does not list is refused before
any cryptography). So a reconnect storm, or anyone who can open connections,
costs a replica one X25519 key and one verification per connection at most;
it signs only for a member. The dialer signs before it knows who answered,
which gives nothing away: ``sig_d`` binds the replica it expected and both
ephemeral keys, so it opens a session only with the holder of ``x_a``'s secret.

Why this is enough:

* *Freshness*: each side signs the other side's 32 random nonce bytes
  (``sig_d`` covers ``nonce_a`` in WELCOME, ``sig_a`` ``nonce_d`` in HELLO),
  so a signature recorded from an earlier session is worthless in a new one.
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
handshake version, another cluster's id, a principal its configuration does
not list, or no free slot: ``slots``, :mod:`pbft.runtime.handshake_slots`)
is answered with REFUSED and its reason before the connection closes, so
that a client pointed at the wrong cluster, or a node of another version
during a rolling upgrade, can say why; the dialer raises
:class:`HandshakeRefused`. The reason :data:`BUSY_REASON` asks it to back off
and retry, not to give up (:attr:`HandshakeRefused.busy`). An unproven
handshake may also be evicted for a newer one, and must send PROOF within
:data:`~pbft.runtime.handshake_slots.PROOF_TIMEOUT_SECONDS` of WELCOME. A
reason is unauthenticated, a hint and nothing more: the dialer treats it as
the failure it is anyway. Garbage and malformed HELLOs get no answer at all,
a failed PROOF a closed connection.

Every field is validated strictly (type, length, canonical encoding), and the
frames of an unauthenticated peer are limited to :data:`HANDSHAKE_MAX_FRAME_BYTES`.
Any failure, including a timeout after :data:`HANDSHAKE_TIMEOUT_SECONDS`, a
closed connection or a transport error, raises :class:`HandshakeError`, whose
``label`` is a fixed reason for the metrics (:mod:`pbft.runtime.handshake_types`);
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
from pbft.runtime.handshake_slots import HandshakeSlots, awaiting_proof
from pbft.runtime.handshake_types import (
    BUSY_REASON,
    REPLICA,
    ROLES,
    HandshakeBusy,
    HandshakeError,
    HandshakeProofRejected,
    HandshakeRefused,
    Identity,
)
from pbft.runtime.handshake_types import CLIENT as CLIENT
from pbft.runtime.handshake_types import HandshakeEvicted as HandshakeEvicted

HELLO_TAG = "pbft-hello"
WELCOME_TAG = "pbft-welcome"
PROOF_TAG = "pbft-proof"
CONFIRM_TAG = "pbft-confirm"
REFUSED_TAG = "pbft-refused"
#: 2 added the ephemeral channel keys and the frame MACs; 3 made the dialer prove itself
#: first (an unsigned WELCOME, the acceptor's signature in CONFIRM after PROOF verified).
HANDSHAKE_VERSION = 3
NONCE_BYTES = 32
#: How long either side waits for the whole handshake to finish.
HANDSHAKE_TIMEOUT_SECONDS = 5.0
#: Largest frame accepted during the handshake; real handshake frames are about 200 bytes.
HANDSHAKE_MAX_FRAME_BYTES = 1024
#: Largest principal index accepted on the wire, before it is looked up in the config.
MAX_PRINCIPAL_INDEX = 2**32 - 1
#: A REFUSED reason is cut to this many characters; it is a hint for people.
MAX_REFUSAL_CHARACTERS = 300


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
        channel_key_a = _parse_welcome(welcome, config, expected)
        # Before signing anything: a WELCOME whose key gives no shared secret is refused.
        material = _session_keys(ephemeral, channel_key_a, hello + welcome, config)
        proof = _pack([PROOF_TAG, signer.sign(prefix + b"dialer|" + hello + welcome)])
        await framed.send_frame(proof)
        try:
            confirm = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
        except ConnectionClosed:
            raise HandshakeProofRejected(
                "the peer closed the connection instead of confirming: it did not accept our proof"
            ) from None
        _, signature_a = _unpack(confirm, CONFIRM_TAG, 2)
        _check_bytes(signature_a, SIGNATURE_BYTES[config.scheme], "signature")
        transcript = prefix + b"acceptor|" + hello + welcome + proof
        if not verifier.verify(acceptor_key, signature_a, transcript):
            raise HandshakeError(
                f"the acceptor's signature does not verify: "
                f"it does not hold the key of {format_identity(expected)}",
                "bad-signature",
            )
        framed.protect(FrameMac.for_dialer(material))


def _parse_welcome(welcome: bytes, config: ClusterConfig, expected: Identity) -> bytes:
    """Validate WELCOME (the acceptor's unsigned challenge); return its channel key."""
    _, version, cluster_id, role, index, nonce_a, channel_key_a = _unpack(welcome, WELCOME_TAG, 7)
    _check_version(version)
    _check_cluster_id(cluster_id, config)
    acceptor = _check_identity(role, index)
    _check_bytes(nonce_a, NONCE_BYTES, "nonce")
    _check_bytes(channel_key_a, CHANNEL_KEY_BYTES, "channel key")
    if acceptor != expected:
        raise HandshakeError(
            f"expected {format_identity(expected)} but {format_identity(acceptor)} answered",
            "wrong-peer",
        )
    return channel_key_a


def _session_keys(
    ephemeral: EphemeralKey, peer_key: bytes, transcript: bytes, config: ClusterConfig
) -> bytes:
    try:
        return ephemeral.session_keys(peer_key, transcript, config.cluster_id.encode())
    except ChannelKeyError as error:
        raise HandshakeError(str(error), "malformed") from None


# -------------------------------------------------------------------------- acceptor


async def accept_handshake(
    framed: FramedStream,
    config: ClusterConfig,
    me: Identity,
    signer: Signer,
    verifier: Verifier | None = None,
    *,
    timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS,
    slots: HandshakeSlots | None = None,
    host: str = "unknown",
) -> Identity:
    """Check the identity the dialer proves, then prove we are the replica ``me``; return it.

    Given ``slots``, a member's HELLO that finds no free slot (``host``: the dialer's
    address) is refused as :data:`BUSY_REASON`, without cryptography: :class:`HandshakeBusy`.
    """
    check_member(config, me, "me")
    if me[0] != REPLICA:
        raise ValueError(f"only replicas accept connections, not {format_identity(me)}")
    verifier = verifier or make_verifier(config.scheme)
    prefix = signing_prefix(config.cluster_id, "HANDSHAKE")
    with _handshake_failures(timeout_seconds):
        hello = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
        dialer, dialer_key, channel_key_d = await _admit_hello(framed, hello, config, slots, host)
        slot = None if slots is None else slots.acquire(host, dialer)
        if slots is not None and slot is None:
            await _refuse(framed, BUSY_REASON)
            raise HandshakeBusy(
                f"too many handshakes in progress ({slots.describe(host, dialer)}): refused as busy"
            )
        try:
            ephemeral = EphemeralKey()
            welcome = _pack([WELCOME_TAG, HANDSHAKE_VERSION, config.cluster_id, REPLICA, me[1],
                             _nonce(), ephemeral.public])  # fmt: skip
            # A HELLO whose key gives no shared secret is malformed: no answer at all.
            material = _session_keys(ephemeral, channel_key_d, hello + welcome, config)
            with awaiting_proof(slot):  # a newer HELLO may evict us; PROOF is due soon
                await framed.send_frame(welcome)
                proof = await framed.receive_frame(HANDSHAKE_MAX_FRAME_BYTES)
            if slot is not None:
                slot.release()  # no await from here to the verdict on PROOF
            _, signature_d = _unpack(proof, PROOF_TAG, 2)
            _check_bytes(signature_d, SIGNATURE_BYTES[config.scheme], "signature")
            if not verifier.verify(dialer_key, signature_d, prefix + b"dialer|" + hello + welcome):
                raise HandshakeError(
                    f"the dialer's signature does not verify: "
                    f"it does not hold the key of {format_identity(dialer)}",
                    "bad-signature",
                )
            # The dialer has proven who it is: now, and only now, we sign.
            signature_a = signer.sign(prefix + b"acceptor|" + hello + welcome + proof)
            await framed.send_frame(_pack([CONFIRM_TAG, signature_a]))
            framed.protect(FrameMac.for_acceptor(material))
        finally:
            if slot is not None:
                slot.release()
        return dialer


async def _admit_hello(
    framed: FramedStream,
    hello: bytes,
    config: ClusterConfig,
    slots: HandshakeSlots | None,
    host: str,
) -> tuple[Identity, bytes, bytes]:
    """Parse HELLO and refuse a dialer we cannot serve; return the identity it claims, that
    principal's key and its channel key."""
    fields = _unpack(hello, HELLO_TAG)
    version = fields[1] if len(fields) > 1 else None
    if type(version) is int and version != HANDSHAKE_VERSION:
        # Any well-formed HELLO of another version hears why, without cryptography.
        await _refuse(framed, f"version {version}, this replica speaks {HANDSHAKE_VERSION}")
        _check_version(version)
    dialer, channel_key_d, cluster_id = _parse_hello(fields)
    if cluster_id != config.cluster_id:
        await _refuse(framed, f"it serves cluster {config.cluster_id!r}, not {cluster_id!r}")
        raise HandshakeError(
            f"the peer belongs to cluster {cluster_id!r}, not {config.cluster_id!r}",
            "wrong-cluster",
        )
    try:
        dialer_key = _public_key(config, dialer)
    except HandshakeError:
        listed = f"cluster {config.cluster_id!r}"
        await _refuse(
            framed, f"its cluster.toml ({listed}) does not list {format_identity(dialer)}"
        )
        raise
    return dialer, dialer_key, channel_key_d


def _parse_hello(fields: list[Any]) -> tuple[Identity, bytes, str]:
    """Validate HELLO's fields; return the identity the dialer claims (not yet proven), its
    channel key and the cluster id it names (not yet compared with ours)."""
    if len(fields) != 7:
        raise HandshakeError(f"a {HELLO_TAG} message has 7 fields, got {len(fields)}", "malformed")
    _, version, cluster_id, role, index, nonce_d, channel_key_d = fields
    _check_version(version)
    if type(cluster_id) is not str:
        raise HandshakeError("the cluster id must be a string", "malformed")
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
        raise HandshakeError("handshake timed out", "timeout") from None
    except ConnectionClosed:
        raise HandshakeError(
            "the peer closed the connection during the handshake", "closed"
        ) from None
    except (FrameError, trio.BrokenResourceError, OSError) as error:
        raise HandshakeError(
            f"the connection failed during the handshake: {error}", "connection-failed"
        ) from error


def _nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def _pack(fields: list[Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _unpack(frame: bytes, tag: str, length: int | None = None) -> list[Any]:
    """Decode one handshake message: an array of ``length`` (None: any number of) fields
    starting with ``tag``."""
    try:
        fields = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises many types for bad input; all mean malformed
        raise HandshakeError(
            f"malformed handshake message (expected {tag}): {error}", "malformed"
        ) from None
    if type(fields) is not list or not fields or fields[0] != tag:
        raise HandshakeError(f"expected a {tag} message", "malformed")
    # Only the canonical encoding is accepted: one message, one byte string.
    if any(type(field) not in (str, int, bytes) for field in fields) or _pack(fields) != frame:
        raise HandshakeError(f"a {tag} message is not canonically encoded", "malformed")
    if length is not None and len(fields) != length:
        raise HandshakeError(f"a {tag} message has {length} fields, got {len(fields)}", "malformed")
    return fields


def _check_version(version: Any) -> None:
    if type(version) is not int or version != HANDSHAKE_VERSION:
        raise HandshakeError(
            f"unsupported handshake version {version!r} (this node speaks {HANDSHAKE_VERSION})",
            "version",
        )


def _check_cluster_id(cluster_id: Any, config: ClusterConfig) -> None:
    if type(cluster_id) is not str:
        raise HandshakeError("the cluster id must be a string", "malformed")
    if cluster_id != config.cluster_id:
        raise HandshakeError(
            f"the peer belongs to cluster {cluster_id!r}, not {config.cluster_id!r}",
            "wrong-cluster",
        )


def _check_identity(role: Any, index: Any) -> Identity:
    """Check the shape of a claimed identity (not yet whether the config knows it)."""
    if type(role) is not str or role not in ROLES:
        raise HandshakeError(f"unknown role {role!r} (expected one of {ROLES})", "malformed")
    if type(index) is not int or not 0 <= index <= MAX_PRINCIPAL_INDEX:
        raise HandshakeError(
            f"a principal id must be an integer in [0, 2**32), got {index!r}", "malformed"
        )
    return (role, index)


def _check_bytes(value: Any, length: int, name: str) -> None:
    if type(value) is not bytes or len(value) != length:
        raise HandshakeError(f"the {name} must be {length} bytes", "malformed")


def _public_key(config: ClusterConfig, identity: Identity) -> bytes:
    """The public key of a principal of the cluster; HandshakeError for an unknown one."""
    role, index = identity
    keys = config.replica_keys if role == REPLICA else config.client_keys
    if not 0 <= index < len(keys):
        raise HandshakeError(
            f"{format_identity(identity)} is not a member of the cluster", "unknown-principal"
        )
    return keys[index]


def check_member(config: ClusterConfig, identity: Identity, name: str = "identity") -> bytes:
    """The public key of a member; ValueError for a non-member passed by our own caller.

    A local mistake, unlike a peer's false claim, is a bug: it raises ValueError.
    """
    try:
        return _public_key(config, _check_identity(*identity))
    except (HandshakeError, TypeError, ValueError) as error:
        raise ValueError(f"{name} = {identity!r} is not a member of the cluster: {error}") from None
