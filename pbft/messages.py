"""The protocol's messages, as small frozen value objects.

Names follow Castro & Liskov (OSDI '99 §4, TOCS 2002 §4): ``view`` is v,
``seq`` is n, ``digest`` is d. Every message that crosses the network is
wrapped in :class:`Signed`, which carries the canonical encoding of the message
(``payload``) and its sender's signature over the domain-separated payload. The
sender that signed a message is named inside the message itself (``sender`` for
replicas, ``client`` for requests): :mod:`pbft.auth` checks that the claimed
sender's key made the signature, so no envelope field can lie about it.

A null request (the paper's gap filler in NEW-VIEW, §4.4) is a PRE-PREPARE
whose ``batch`` is empty.

Each class declares its wire ``SCHEMA``: the ordered fields and their kinds.
:mod:`pbft.encoding` turns that into one canonical binary form.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Generic, TypeVar

import attrs

# Field kinds of the wire schema.
U64 = "u64"
BYTES = "bytes"


class _ListOf:
    __slots__ = ("kind",)

    def __init__(self, kind: object) -> None:
        self.kind = kind


class _SignedOf:
    __slots__ = ("message_type",)

    def __init__(self, message_type: type) -> None:
        self.message_type = message_type


M = TypeVar("M")


@attrs.frozen(slots=True)
class Signed(Generic[M]):
    """A message with its signature; ``payload`` is the message's canonical bytes.

    Two ``Signed`` values compare equal when they carry the same message; the
    signature bytes take no part in equality or hashing, because signatures are
    not unique and must never serve as identifiers.
    """

    message: M
    signature: bytes = attrs.field(eq=False, repr=lambda s: s[:4].hex() + "...")
    payload: bytes = attrs.field(eq=False, repr=False)


@attrs.frozen(slots=True)
class Request:
    """REQUEST(o, t, c): operation ``operation`` with timestamp ``timestamp`` from ``client``."""

    TAG: ClassVar[int] = 1
    TYPE: ClassVar[str] = "REQUEST"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("client", U64),
        ("timestamp", U64),
        ("operation", BYTES),
    )
    client: int
    timestamp: int
    operation: bytes


@attrs.frozen(slots=True)
class ReplyDigest:
    """A REPLY that carries SHA-256 of the result instead of the result (§5.1.1).

    With ``ProtocolParams.digest_replies``, only the designated replier of a request
    (:func:`designated_replier`) sends the result itself; the others send this.
    The client accepts a result once ``quorum`` replies match it, digests counted
    by the digest they carry and a full reply by the digest of its result, and it
    holds one full reply whose result has that digest.
    """

    TAG: ClassVar[int] = 14
    TYPE: ClassVar[str] = "REPLY-DIGEST"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("view", U64),
        ("timestamp", U64),
        ("client", U64),
        ("sender", U64),
        ("result_digest", BYTES),
    )
    view: int
    timestamp: int
    client: int
    sender: int
    result_digest: bytes


@attrs.frozen(slots=True)
class Read:
    """READ(o, t, c): a read-only operation, executed at once by every replica (§5.1.3).

    Never ordered and never part of a PRE-PREPARE: each replica executes it on
    the state it has (only committed batches are ever executed, so that state
    is a committed prefix) and replies. The client needs 2f+1 matching replies,
    and falls back to an ordered REQUEST with the same timestamp when it cannot
    get them. Only operations the service calls read-only are answered.
    """

    TAG: ClassVar[int] = 13
    TYPE: ClassVar[str] = "READ"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("client", U64),
        ("timestamp", U64),
        ("operation", BYTES),
    )
    client: int
    timestamp: int
    operation: bytes


@attrs.frozen(slots=True)
class PrePrepare:
    """PRE-PREPARE(v, n, d) with the batch of requests whose digest is d (§4.2)."""

    TAG: ClassVar[int] = 2
    TYPE: ClassVar[str] = "PRE-PREPARE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("view", U64),
        ("seq", U64),
        ("digest", BYTES),
        ("batch", _ListOf(_SignedOf(Request))),
        ("sender", U64),
    )
    view: int
    seq: int
    digest: bytes
    batch: tuple[Signed[Request], ...]
    sender: int


@attrs.frozen(slots=True)
class Prepare:
    """PREPARE(v, n, d, i) (§4.2)."""

    TAG: ClassVar[int] = 3
    TYPE: ClassVar[str] = "PREPARE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("view", U64),
        ("seq", U64),
        ("digest", BYTES),
        ("sender", U64),
    )
    view: int
    seq: int
    digest: bytes
    sender: int


@attrs.frozen(slots=True)
class Commit:
    """COMMIT(v, n, d, i) (§4.2)."""

    TAG: ClassVar[int] = 4
    TYPE: ClassVar[str] = "COMMIT"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = Prepare.SCHEMA
    view: int
    seq: int
    digest: bytes
    sender: int


@attrs.frozen(slots=True)
class Reply:
    """REPLY(v, t, c, i, r): the result of the client's request with timestamp t (§4.1)."""

    TAG: ClassVar[int] = 5
    TYPE: ClassVar[str] = "REPLY"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("view", U64),
        ("timestamp", U64),
        ("client", U64),
        ("sender", U64),
        ("result", BYTES),
    )
    view: int
    timestamp: int
    client: int
    sender: int
    result: bytes


@attrs.frozen(slots=True)
class Checkpoint:
    """CHECKPOINT(n, d, i): the state digest after executing sequence number n (§4.3)."""

    TAG: ClassVar[int] = 6
    TYPE: ClassVar[str] = "CHECKPOINT"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("seq", U64),
        ("state_digest", BYTES),
        ("sender", U64),
    )
    seq: int
    state_digest: bytes
    sender: int


@attrs.frozen(slots=True)
class PreparedCertificate:
    """A PRE-PREPARE and 2f matching PREPAREs from distinct backups (the paper's P_m, §4.4).

    Not a message of its own: it travels inside VIEW-CHANGE. It carries its view
    (that of the PRE-PREPARE) so that NEW-VIEW can choose the highest one.
    """

    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("pre_prepare", _SignedOf(PrePrepare)),
        ("prepares", _ListOf(_SignedOf(Prepare))),
    )
    pre_prepare: Signed[PrePrepare]
    prepares: tuple[Signed[Prepare], ...]

    @property
    def view(self) -> int:
        return self.pre_prepare.message.view

    @property
    def seq(self) -> int:
        return self.pre_prepare.message.seq


@attrs.frozen(slots=True)
class ViewChange:
    """VIEW-CHANGE(v+1, n, C, P, i) (§4.4).

    ``stable_seq`` is n, the sequence number of the sender's last stable
    checkpoint, ``checkpoint_proof`` is C (2f+1 CHECKPOINTs; empty for the
    initial checkpoint 0) and ``prepared`` is P (a certificate for each request
    prepared above n).
    """

    TAG: ClassVar[int] = 7
    TYPE: ClassVar[str] = "VIEW-CHANGE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("new_view", U64),
        ("stable_seq", U64),
        ("checkpoint_proof", _ListOf(_SignedOf(Checkpoint))),
        ("prepared", _ListOf(PreparedCertificate)),
        ("sender", U64),
    )
    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[Signed[Checkpoint], ...]
    prepared: tuple[PreparedCertificate, ...]
    sender: int


@attrs.frozen(slots=True)
class NewView:
    """NEW-VIEW(v+1, V, O) (§4.4): the view changes used and the re-issued PRE-PREPAREs."""

    TAG: ClassVar[int] = 8
    TYPE: ClassVar[str] = "NEW-VIEW"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("view", U64),
        ("view_changes", _ListOf(_SignedOf(ViewChange))),
        ("pre_prepares", _ListOf(_SignedOf(PrePrepare))),
        ("sender", U64),
    )
    view: int
    view_changes: tuple[Signed[ViewChange], ...]
    pre_prepares: tuple[Signed[PrePrepare], ...]
    sender: int


@attrs.frozen(slots=True)
class FetchState:
    """Ask a peer for the service state at a stable checkpoint of at least ``seq`` (§4.3)."""

    TAG: ClassVar[int] = 9
    TYPE: ClassVar[str] = "FETCH-STATE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (("seq", U64), ("sender", U64))
    seq: int
    sender: int


@attrs.frozen(slots=True)
class StateSnapshot:
    """The state at stable checkpoint ``seq``, with the 2f+1 CHECKPOINTs that prove it."""

    TAG: ClassVar[int] = 10
    TYPE: ClassVar[str] = "STATE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("seq", U64),
        ("snapshot", BYTES),
        ("checkpoint_proof", _ListOf(_SignedOf(Checkpoint))),
        ("sender", U64),
    )
    seq: int
    snapshot: bytes
    checkpoint_proof: tuple[Signed[Checkpoint], ...]
    sender: int


@attrs.frozen(slots=True)
class FetchCommitted:
    """Ask peers for proof of what committed at ``first_seq``..``last_seq``.

    A replica that missed the messages of some sequence numbers above its
    stable checkpoint (it restarted, or just finished a state transfer) asks
    for them instead of waiting for the next checkpoint or a view change.
    """

    TAG: ClassVar[int] = 11
    TYPE: ClassVar[str] = "FETCH-COMMITTED"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("first_seq", U64),
        ("last_seq", U64),
        ("sender", U64),
    )
    first_seq: int
    last_seq: int
    sender: int


@attrs.frozen(slots=True)
class CommitCertificate:
    """A PRE-PREPARE and 2f+1 matching COMMITs: proof that its batch committed at its seq.

    2f+1 replicas committed, so at least f+1 honest ones did, and no other batch
    can ever commit at that sequence number: the receiver may execute it.
    """

    TAG: ClassVar[int] = 12
    TYPE: ClassVar[str] = "COMMIT-CERTIFICATE"
    SCHEMA: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("pre_prepare", _SignedOf(PrePrepare)),
        ("commits", _ListOf(_SignedOf(Commit))),
        ("sender", U64),
    )
    pre_prepare: Signed[PrePrepare]
    commits: tuple[Signed[Commit], ...]
    sender: int


MESSAGE_TYPES: tuple[type, ...] = (
    Request,
    PrePrepare,
    Prepare,
    Commit,
    Reply,
    Checkpoint,
    ViewChange,
    NewView,
    FetchState,
    StateSnapshot,
    FetchCommitted,
    CommitCertificate,
    Read,
    ReplyDigest,
)
TYPE_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in MESSAGE_TYPES}

#: Messages signed by a client; every other type is signed by a replica.
CLIENT_SIGNED = (Request, Read)

Message = (
    Request
    | PrePrepare
    | Prepare
    | Commit
    | Reply
    | Checkpoint
    | ViewChange
    | NewView
    | FetchState
    | StateSnapshot
    | FetchCommitted
    | CommitCertificate
    | Read
    | ReplyDigest
)


def result_digest(result: bytes) -> bytes:
    """What a REPLY-DIGEST carries: SHA-256 of the result."""
    return hashlib.sha256(result).digest()


def designated_replier(client: int, timestamp: int, n: int) -> int:
    """The replica that sends the full result of a request under digest replies.

    It changes with every request, so a faulty replica is designated for 1/n of a
    client's requests; when it fails to reply, the client's retransmission gets
    full results from everyone (a replica resends a cached reply in full).
    """
    return (client + timestamp) % n


def request_digest(request: Signed[Request]) -> bytes:
    """Digest of a request: SHA-256 over its canonical bytes (never its signature)."""
    return hashlib.sha256(request.payload).digest()


def batch_digest(batch: tuple[Signed[Request], ...]) -> bytes:
    """The digest d of a PRE-PREPARE: over the digests of its requests, in order."""
    hasher = hashlib.sha256(b"pbft/1|batch|")
    for request in batch:
        hasher.update(hashlib.sha256(request.payload).digest())
    return hasher.digest()


NULL_DIGEST = batch_digest(())
