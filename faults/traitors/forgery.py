"""What a set of faulty keys can sign: keyrings, a pool of seen messages, a schema mutator.

Theory of operation
-------------------
The Byzantine model of Castro & Liskov (§2) is not a list of misbehaviours:
a faulty node may send *any* message its key can sign, to anyone, at any
time, and faulty nodes may collude. It cannot sign for a correct node. This
module is the toolbox of a traitor that takes the model at its word:

* :class:`Keyring` holds the :class:`pbft.auth.Authenticator` of every faulty
  principal of the run (the traitor's own replica key, the colluding
  replicas' keys, faulty clients' keys). :meth:`Keyring.resign` signs a
  message as one of them, setting the ``sender`` (or ``client``) field to the
  principal whose key signs; it can also leave an honest sender named and sign
  with a faulty key (a bad signature), name a non-member, or zero the
  signature. Nothing here ever holds an honest key.
* :class:`MessagePool` keeps a bounded sample (by bytes, per message type) of
  what the traitor received and sent, and of the signed messages nested in
  them (requests inside PRE-PREPAREs, checkpoints inside proofs, prepared
  certificates inside VIEW-CHANGEs): honest signatures the traitor may replay
  or embed (the ByzzFuzz idea of mutating real traffic instead of noise).
* :class:`Mutator` walks a message along its wire ``SCHEMA``
  (:mod:`pbft.messages`) and changes one thing at a random nesting level:
  numbers to their boundary values (off by one, zero, the watermarks, far
  future, up to 2^63 - 1, the largest the wire form takes), byte
  strings to other digests, nothing, junk or padding; lists dropped,
  duplicated, reordered, truncated or padded with pooled items; nested signed
  messages zeroed, swapped for another of their type, re-signed by a faulty
  key, or changed under their old signature. Every result is re-encoded
  canonically (:func:`pbft.encoding.encode_message`), so receivers see
  well-formed messages whose *content* is wrong, which is where protocol bugs
  live.

All randomness comes from the ``random.Random`` handed in (the traitor's
seeded one), and every choice iterates deterministic structures, so a run is
reproducible from its seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from pbft.auth import Authenticator
from pbft.crypto import SIGNATURE_BYTES
from pbft.encoding import encode_message
from pbft.messages import (
    BYTES,
    CLIENT_SIGNED,
    U64,
    CommitCertificate,
    NewView,
    PreparedCertificate,
    PrePrepare,
    Signed,
    StateSnapshot,
    ViewChange,
    _ListOf,
    _SignedOf,
)

#: A prefix that makes any operation undecodable by the key-value service.
UNDECODABLE = b"\xc1"
#: The largest integer the wire form accepts (it refuses 2**63 and above).
U64_MAX_ACCEPTED = 2**63 - 1


@attrs.define
class Keyring:
    """The authenticators (private keys) of every faulty principal of a run."""

    replicas: dict[int, Authenticator]
    clients: dict[int, Authenticator] = attrs.field(factory=dict)

    @property
    def replica_ids(self) -> list[int]:
        return sorted(self.replicas)

    @property
    def client_ids(self) -> list[int]:
        return sorted(self.clients)

    def any_auth(self) -> Authenticator:
        return self.replicas[self.replica_ids[0]]

    def sign_as(self, message: Any, principal: int) -> Signed[Any]:
        """Sign ``message`` (whose sender/client is already ``principal``) with its key."""
        keys = self.clients if isinstance(message, CLIENT_SIGNED) else self.replicas
        return keys[principal].sign(message)

    def zeroed(self, message: Any) -> Signed[Any]:
        """A well-formed signed message whose signature is all zeroes (never valid)."""
        scheme = self.any_auth().config.scheme
        return Signed(message, b"\0" * SIGNATURE_BYTES[scheme], encode_message(message))

    def resign(self, rng: random.Random, message: Any, honest_sender: float = 0.1) -> Signed[Any]:
        """Sign as some faulty principal; sometimes name another sender (bad signature),
        a non-member, or send a zeroed signature: the three ways a forgery fails."""
        field = "client" if isinstance(message, CLIENT_SIGNED) else "sender"
        ids = self.client_ids if field == "client" else self.replica_ids
        roll = rng.random()
        if not ids:
            return self.zeroed(message)
        if roll < honest_sender:
            # The claimed sender stays as it is and a faulty key signs (Authenticator.sign
            # does not look at the sender): a forgery unless the sender is faulty too.
            return self.replicas[self.replica_ids[0]].sign(message)
        if roll < honest_sender + 0.03:
            return self.zeroed(message)
        if roll < honest_sender + 0.04:
            # A signature of the wrong length, which no key makes.
            zeroed = self.zeroed(message)
            cut = rng.choice((0, 1, len(zeroed.signature) - 1))
            return Signed(message, zeroed.signature[:cut], zeroed.payload)
        if roll < honest_sender + 0.07:
            outsider = self.any_auth().config.n + rng.randrange(3)
            if field == "client":
                outsider = len(self.any_auth().config.client_keys) + rng.randrange(3)
            return self.any_auth().sign(attrs.evolve(message, **{field: outsider}))
        principal = ids[rng.randrange(len(ids))]
        if field == "client":
            # A faulty client's request carries an operation the service refuses: the
            # checkers do not see faulty clients' writes, so they must not touch the
            # honest clients' keys (the explorer gives faulty clients keys of their own).
            message = attrs.evolve(message, operation=UNDECODABLE + message.operation)
        return self.sign_as(attrs.evolve(message, **{field: principal}), principal)


class MessagePool:
    """A bounded sample of seen signed messages (and their nested ones), per type."""

    def __init__(self, bytes_per_type: int = 48 * 1024, entries_per_type: int = 48) -> None:
        self.bytes_per_type = bytes_per_type
        self.entries_per_type = entries_per_type
        self._by_type: dict[type, deque[Any]] = {}
        self._bytes: dict[type, int] = {}

    def add(self, signed: Signed[Any], nested: bool = True) -> None:
        self._keep(type(signed.message), signed, len(signed.payload))
        if nested:
            for inner in _nested(signed.message):
                if type(inner) is PreparedCertificate:
                    size = len(inner.pre_prepare.payload) + sum(
                        len(p.payload) for p in inner.prepares
                    )
                    self._keep(PreparedCertificate, inner, size)
                else:
                    self._keep(type(inner.message), inner, len(inner.payload))

    def _keep(self, kind: type, item: Any, size: int) -> None:
        if size > self.bytes_per_type:
            return
        kept = self._by_type.setdefault(kind, deque())
        if kept and kept[-1] == item:
            return
        kept.append(item)
        total = self._bytes.get(kind, 0) + size
        while total > self.bytes_per_type or len(kept) > self.entries_per_type:
            total -= _size(kept.popleft())
        self._bytes[kind] = total

    def items(self, kind: type) -> deque[Any]:
        return self._by_type.get(kind, deque())

    def pick(self, rng: random.Random, kind: type) -> Any | None:
        kept = self._by_type.get(kind)
        if not kept:
            return None
        return kept[rng.randrange(len(kept))]

    def kinds(self) -> list[type]:
        return [kind for kind, kept in self._by_type.items() if kept]


def _size(item: Any) -> int:
    if type(item) is PreparedCertificate:
        return len(item.pre_prepare.payload) + sum(len(p.payload) for p in item.prepares)
    return len(item.payload)


def _nested(message: Any) -> Iterator[Any]:
    kind = type(message)
    if kind is PrePrepare:
        yield from message.batch
    elif kind is ViewChange:
        yield from message.checkpoint_proof
        for certificate in message.prepared:
            yield certificate
            yield certificate.pre_prepare
            yield from certificate.prepares
    elif kind is NewView:
        yield from message.view_changes
        yield from message.pre_prepares
    elif kind is StateSnapshot:
        yield from message.checkpoint_proof
    elif kind is CommitCertificate:
        yield message.pre_prepare
        yield from message.commits


@attrs.define
class Mutator:
    """Structure-aware mutation along the wire schema; see the module docstring."""

    rng: random.Random
    keyring: Keyring
    pool: MessagePool
    #: The receiver's world, for boundary values: current view, watermark h, window L.
    view: int = 0
    low_watermark: int = 0
    log_window: int = 64

    def number(self, value: int) -> int:
        rng = self.rng
        low, window = self.low_watermark, self.log_window
        choices = (
            value + 1, max(value - 1, 0), 0, low, low + 1, low + window, low + window + 1,
            value + window * rng.randint(2, 6), self.view, self.view + 1, self.view + 2,
            max(self.view - 1, 0), value + 10**6, U64_MAX_ACCEPTED, U64_MAX_ACCEPTED - 1,
            rng.randrange(U64_MAX_ACCEPTED),
        )  # fmt: skip
        return choices[rng.randrange(len(choices))]

    def blob(self, value: bytes) -> bytes:
        rng = self.rng
        roll = rng.randrange(7)
        if roll == 0:
            return b""
        if roll == 1:
            return value[: rng.randrange(len(value) + 1)]
        if roll == 2:
            return hashlib.sha256(b"forged|" + value).digest()
        if roll == 3:
            return value + rng.randbytes(rng.randint(1, 64))
        if roll == 4:
            digests = [
                getattr(item.message, "digest", b"")
                for item in self.pool.items(PrePrepare)
                if getattr(item.message, "digest", value) != value
            ]
            return digests[rng.randrange(len(digests))] if digests else value[::-1]
        if roll == 5:
            return bytes(len(value))
        return rng.randbytes(rng.randint(1, 96))

    # ------------------------------------------------------------- structure

    def message(self, message: Any, depth: int = 0) -> Any:
        """``message`` (or a PreparedCertificate) with one field changed somewhere below."""
        schema = message.SCHEMA
        name, kind = schema[self.rng.randrange(len(schema))]
        return attrs.evolve(message, **{name: self.value(kind, getattr(message, name), depth)})

    def value(self, kind: Any, value: Any, depth: int) -> Any:
        if kind is U64:
            return self.number(value)
        if kind is BYTES:
            return self.blob(value)
        if isinstance(kind, _ListOf):
            return self.sequence(kind.kind, value, depth)
        if isinstance(kind, _SignedOf):
            return self.signed(value, depth)
        return self.message(value, depth + 1)

    def sequence(self, kind: Any, items: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
        rng = self.rng
        items = list(items)
        roll = rng.randrange(8)
        if roll == 0 and items:
            del items[rng.randrange(len(items))]
        elif roll == 1 and items:
            items.insert(rng.randrange(len(items) + 1), items[rng.randrange(len(items))])
        elif roll == 2:
            rng.shuffle(items)
        elif roll == 3:
            items = items[: rng.randrange(len(items) + 1)]
        elif roll == 4:
            items += self.fillers(kind, rng.randint(1, 6))
        elif roll == 5:
            items = [] if rng.random() < 0.5 else items[::-1]
        elif items:
            index = rng.randrange(len(items))
            items[index] = self.value(kind, items[index], depth + 1)
        else:
            items = self.fillers(kind, 1)
        return tuple(items)

    def fillers(self, kind: Any, count: int) -> list[Any]:
        """Pooled items that fit a list of ``kind`` (other views, seqs, signers)."""
        wanted = kind.message_type if isinstance(kind, _SignedOf) else kind
        if not isinstance(wanted, type):
            return []
        found = [self.pool.pick(self.rng, wanted) for _ in range(count)]
        return [item for item in found if item is not None]

    def signed(self, signed: Signed[Any], depth: int) -> Signed[Any]:
        rng = self.rng
        roll = rng.randrange(6)
        if roll == 0:
            return self.keyring.zeroed(signed.message)
        if roll == 1:
            other = self.pool.pick(rng, type(signed.message))
            return other if other is not None else signed
        if roll == 2:
            return self.keyring.resign(rng, signed.message)
        if depth > 3:
            return signed
        inner = self.message(signed.message, depth + 1)
        if roll == 3:
            # Changed under its old signature: the signature no longer matches.
            return Signed(inner, signed.signature, encode_message(inner))
        if roll == 4:
            return self.keyring.zeroed(inner)
        return self.keyring.resign(rng, inner)


def keyring_for(
    auths: Mapping[int, Authenticator], clients: Mapping[int, Authenticator]
) -> Keyring:
    return Keyring(dict(auths), dict(clients))
