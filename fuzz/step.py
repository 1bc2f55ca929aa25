"""Fuzz target ``step``: any sequence of inputs through one replica's ``step``.

The input is a header byte and then records, each one event:

* ``0`` + u16: replay frame k of the *honest pool*: every frame delivered to
  a replica in one short simulated run (ordered requests, checkpoints, a
  replica catching up, a view change), over its sender's own channel, so
  honest signatures check;
* ``1`` + channel byte + u16 length + bytes: a message *forged* by the faulty
  replica (3) or a client: the bytes are decoded with
  :func:`pbft.encoding.decode_message` and the message, and every message
  nested in it, is signed with its signer's key when that signer is faulty
  (honest signatures cannot be forged, so nested honest parts must come from
  the pool's bytes); bytes that do not decode are delivered raw;
* ``2`` + byte: fire one of the timers the replica has set (as drivers do);
* ``3`` + channel byte + u16 length + bytes: deliver the bytes as they are;
* ``4`` + channel byte + u16 + one byte per integer field: frame k of the honest
  pool as a *template*: its integers (view, seq, sender, timestamp...) replaced
  (byte < 64: that value; < 128: moved by byte - 96; else kept), then forged as
  above, or sent with the old signature when its signer is honest. This gives the
  faulty replica well-formed messages with honest nested parts (a VIEW-CHANGE
  with the honest checkpoint proof and certificates) without the fuzzer having to
  find their encoding.

Header bit 0 selects the *trusting* mode: a verifier that accepts every
signature of the right length, so the fuzzer can forge whole quorums (more
than f faulty replicas); only crash freedom, well-formed effects, the window,
one view per slot and the byte bounds of the stores are then checked (not that
commits stay committed, nor that certificates convince other replicas). Header bit 1 makes the
replica under test the primary of view 0 (replica 0) instead of a backup (1).

After every step the simulator's :class:`faults.verification.invariants.StepInvariants`
(window, one view per slot, bounded stores, certificates checkable by other
honest replicas, honest messages within their bounds) must hold, and every
effect must be well formed. Any exception is a bug: ``step`` never raises
for a peer's input.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from faults.verification.invariants import StepInvariants
from pbft.auth import Authenticator
from pbft.config import ProtocolParams
from pbft.crypto import KEYED_HASH, SIGNATURE_BYTES
from pbft.encoding import (
    DecodeError,
    decode_message,
    decode_signed,
    encode_message,
    encode_signed,
)
from pbft.events import (
    CancelTimer,
    CheckpointStable,
    Committed,
    Dropped,
    EquivocationDetected,
    Executed,
    NewViewEntered,
    Prepared,
    Receive,
    SendToClient,
    SendToReplicas,
    SetTimer,
    StateTransferred,
    TimerFired,
    ViewChangeStarted,
)
from pbft.messages import BYTES, CLIENT_SIGNED, U64, Reply, ReplyDigest, Signed, _ListOf, _SignedOf
from pbft.replica import Replica
from pbft.service import put
from pbft.simnet import make_cluster

#: The faulty replica; every client is faulty too (clients are never trusted).
FAULTY = 3
CLIENTS = 2
#: Most events one input may make (bounds the time of one execution).
MAX_EVENTS = 48
#: Small windows and batches, so that a few events reach checkpoints, the window's
#: edge, full future buffers and an emptying verification cache.
PARAMS = ProtocolParams(
    checkpoint_interval=2, log_window=4, batch_size=2, max_inflight_batches=2,
    view_change_timeout_ticks=50, state_transfer_timeout_ticks=40, max_request_bytes=256,
    future_buffer_messages=16, future_buffer_bytes=4096, verified_cache_entries=16,
)  # fmt: skip

_NOTICES = (
    Prepared, Committed, Executed, CheckpointStable, ViewChangeStarted, NewViewEntered,
    StateTransferred, Dropped, EquivocationDetected,
)  # fmt: skip


class Reader:
    """Reads fuzz bytes as numbers and chunks; past the end, everything is zero/empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    @property
    def done(self) -> bool:
        return self.at >= len(self.data)

    def byte(self) -> int:
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def u16(self) -> int:
        return self.byte() << 8 | self.byte()

    def chunk(self) -> bytes:
        length = self.u16()
        piece = self.data[self.at : self.at + length]
        self.at += length
        return piece


class TrustingVerifier:
    """Accepts every signature: lets the fuzzer forge quorums (trusting mode)."""

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        return True


@cache
def world() -> tuple[Any, tuple[tuple[tuple[str, int], bytes], ...]]:
    """The simulated cluster (keys, config) and its honest pool of (channel, frame).

    One run, so that honest replicas never seem to contradict one another:
    replica 1 is cut off while the others order requests and take checkpoints,
    then catches up (FETCH-STATE, STATE, FETCH-COMMITTED, COMMIT-CERTIFICATE);
    then the primary crashes and the rest change to view 1 and go on.
    """
    pool: dict[bytes, tuple[str, int]] = {}

    def keep(source: tuple[str, int], destination: tuple[str, int], data: bytes) -> None:
        if destination[0] == "replica" and data not in pool:
            pool[data] = source

    cluster = make_cluster(f=1, clients=CLIENTS, seed=0, params=PARAMS, scheme=KEYED_HASH)
    network = cluster.network
    network.on_deliver = keep

    def submit(value: str, count: int) -> None:
        for client in range(CLIENTS):
            network.submit(client, [put(f"k{client}", f"{value}{i}") for i in range(count)])
        network.run_until_idle(20000)

    network.isolate(1)
    submit("v", 8)
    network.heal(1)
    submit("w", 4)
    network.crash(("replica", 0))  # the primary: a view change to view 1
    submit("x", 3)
    return cluster, tuple((source, data) for data, source in pool.items())


def pool() -> tuple[tuple[tuple[str, int], bytes], ...]:
    return world()[1]


@cache
def _authenticators() -> dict[tuple[str, int], Authenticator]:
    cluster = world()[0]
    signers = {("replica", FAULTY): cluster.replica_signers[FAULTY]}
    signers.update({("client", c): cluster.client_signers[c] for c in range(CLIENTS)})
    return {who: Authenticator(cluster.config, signer) for who, signer in signers.items()}


def _signer_of(message: Any) -> tuple[str, int]:
    if isinstance(message, CLIENT_SIGNED):
        return ("client", message.client)
    return ("replica", message.sender)


def forge(message: Any) -> Signed[Any] | None:
    """Sign ``message`` and its nested messages where a faulty principal signs them."""
    message = _resign_fields(message)
    auth = _authenticators().get(_signer_of(message))
    return None if auth is None else auth.sign(message)


def _resign_fields(message: Any) -> Any:
    return type(message)(*[_resign(kind, getattr(message, name)) for name, kind in message.SCHEMA])


def _resign(kind: Any, value: Any) -> Any:
    if kind is U64 or kind is BYTES:
        return value
    if isinstance(kind, _ListOf):
        return tuple(_resign(kind.kind, item) for item in value)
    if isinstance(kind, _SignedOf):
        return forge(value.message) or value
    return _resign_fields(value)  # a nested structure (a prepared certificate)


def _channel(reader: Reader) -> tuple[str, int] | None:
    choice = reader.byte()
    if choice % 3 == 0:
        return None
    if choice % 3 == 1:
        return ("replica", FAULTY)
    return ("client", (choice // 3) % CLIENTS)


def _template(reader: Reader) -> bytes:
    honest = pool()
    signed = decode_signed(honest[reader.u16() % len(honest)][1])
    values = []
    for name, kind in signed.message.SCHEMA:
        value = getattr(signed.message, name)
        if kind is U64:
            choice = reader.byte()
            if choice < 64:
                value = choice
            elif choice < 128:
                value = max(0, value + choice - 96)
        values.append(value)
    message = type(signed.message)(*values)
    forged = forge(message)
    if forged is None:
        forged = Signed(message, signed.signature, encode_message(message))
    return encode_signed(forged)


def _next_event(reader: Reader, armed: set[str]) -> Receive | TimerFired | None:
    op = reader.byte() % 5
    if op == 0:
        honest = pool()
        source, frame = honest[reader.u16() % len(honest)]
        return Receive(frame, channel=source)
    if op == 2:
        if not armed:
            return None
        name = sorted(armed)[reader.byte() % len(armed)]
        armed.discard(name)
        return TimerFired(name)
    channel = _channel(reader)
    if op == 4:
        return Receive(_template(reader), channel=channel)
    data = reader.chunk()
    if op == 1:
        try:
            signed = forge(decode_message(data))
        except DecodeError:
            signed = None
        if signed is not None:
            data = encode_signed(signed)
    return Receive(data, channel=channel)


def step(data: bytes) -> None:
    """The fuzz target: step one replica through the events ``data`` describes."""
    cluster = world()[0]
    reader = Reader(data)
    header = reader.byte()
    trusting = bool(header & 1)
    replica_id = 0 if header & 2 else 1
    replica = Replica(
        replica_id, cluster.config, cluster.replica_signers[replica_id], PARAMS,
        verifier=TrustingVerifier() if trusting else None,
    )  # fmt: skip
    observer = None if trusting else Authenticator(cluster.config)
    checker = None if observer is None else (observer, cluster.config, PARAMS)
    invariants = StepInvariants({FAULTY}, PARAMS.log_window, store_every=1, checker=checker)
    armed: set[str] = set()
    for _ in range(MAX_EVENTS):
        if reader.done:
            break
        event = _next_event(reader, armed)
        if event is None:
            continue
        effects = replica.step(event)
        _check_effects(replica, observer, effects, armed)
        if trusting:  # forged quorums may overturn a commit: that is the f+1-th traitor's doing
            effects = [effect for effect in effects if type(effect) is not Committed]
        invariants.after_step(replica_id, replica, effects)
        if invariants.violations:
            raise AssertionError("; ".join(invariants.violations))


def _check_effects(
    replica: Replica, observer: Authenticator | None, effects: list[Any], armed: set[str]
) -> None:
    n, clients = replica.config.n, len(replica.config.client_keys)
    for effect in effects:
        kind = type(effect)
        if kind is SendToReplicas:
            assert effect.replicas, "a send to no replica"
            assert all(0 <= i < n and i != replica.id for i in effect.replicas), effect.replicas
            _check_sent(replica, observer, effect.message)
        elif kind is SendToClient:
            assert 0 <= effect.client < clients, f"a send to unknown client {effect.client}"
            _check_sent(replica, observer, effect.message)
        elif kind is SetTimer:
            assert effect.ticks >= 1, f"timer {effect.name} set for {effect.ticks} ticks"
            armed.add(effect.name)
        elif kind is CancelTimer:
            armed.discard(effect.name)
        else:
            assert kind in _NOTICES, f"an honest replica emitted {kind.__name__}"


def _check_sent(replica: Replica, observer: Authenticator | None, signed: Signed[Any]) -> None:
    """A message the replica sends is canonical; its own are signed by it, and what it
    relays (a NEW-VIEW, a client's request) it verified (unless trusting)."""
    assert type(signed) is Signed, type(signed)
    assert encode_message(signed.message) == signed.payload, "payload is not the message"
    message = signed.message
    own = _signer_of(message) == ("replica", replica.id)
    if type(message) in (Reply, ReplyDigest):
        assert own, f"a {message.TYPE} sent as {_signer_of(message)}"
        if not signed.signature:
            return  # point to point: the client's channel authenticates it
    if own or observer is not None:
        assert len(signed.signature) == SIGNATURE_BYTES[replica.config.scheme]
        reason = Authenticator(replica.config).verify(signed) if own else observer.verify(signed)
        assert reason is None, f"sent a {message.TYPE} of {_signer_of(message)}: {reason}"
