"""The ``byzantine`` behaviour: a traitor as strong as the fault model.

Theory of operation
-------------------
The other behaviours each spell out one way of lying; the model (Castro &
Liskov §2) allows far more: a faulty replica may send *anything its key can
sign*, to any subset of replicas or clients, at any moment, in collusion
with the other faulty nodes. :class:`Byzantine` does that, from outside the
honest code:

* it still runs the honest replica underneath and lets its messages out
  unchanged (combine it with ``mute``, ``equivocate``, ... to change those);
* it records what it hears and says in a bounded :class:`MessagePool` (by
  bytes, per type, nested messages included): material signed by honest
  replicas and clients that it may replay or embed;
* on a fraction ``rate`` of its steps (deliveries and timers alike) it injects
  one attack, until ``budget`` attacks are spent. An attack is drawn from the
  generators below, all deterministic under the traitor's seeded ``rng``:

  ==================  ==========================================================
  replay              a pooled message as it is (old views, old seqs, to its own
                      signer), to a random subset
  mutant              a pooled message changed at one to three random places of
                      its schema (:class:`~faults.traitors.forgery.Mutator`), re-signed
  vote                PREPARE/COMMIT from a faulty signer for pooled or boundary
                      (view, seq, digest), equivocating, from the primary
  pre-prepare         as any faulty primary of a nearby view: batches of pooled
                      requests, too many, oversized, with zeroed signatures, a
                      wrong digest, two batches to two halves of the replicas
  checkpoint          CHECKPOINTs at and off the interval, stale, far, wrong digest
  view-change         VIEW-CHANGEs with pooled proofs, mismatched stable seqs,
                      pooled and junk certificates (several per seq, outside
                      (h, h+L]), for higher, equal and lower views; now and then
                      padded with junk certificates past the largest honest
                      NEW-VIEW (``large`` of them per run)
  new-view            as a faulty primary of a coming view: V from pooled and
                      colluders' VIEW-CHANGEs, O computed as backups do
                      (:func:`pbft.certificates.compute_new_view`), then sent as
                      is, re-signed with O's nested client signatures zeroed,
                      or with V/O truncated, padded, reordered, mixed
  state               STATE snapshots that do not match their checkpoint proof,
                      solicited (answering a pooled FETCH-STATE) or not
  fetch               FETCH-STATE / FETCH-COMMITTED for absurd ranges
  commit-certificate  pooled PRE-PREPAREs with too few, duplicated or forged COMMITs
  reply               REPLYs with other results, or sent to a replica
  request             requests of faulty clients (with their keys), or replays of
                      honest ones with a zeroed signature
  read                unsigned READs in an honest client's name at its latest
                      timestamp seen (a read of the key its request writes),
                      relayed over the traitor's channel
  raw                 bytes that do not decode: truncated, junk, numbers past 2^63
                      (sent as raw bytes: no journal of the traitor's need hold them)
  burst               a flood of next-view PREPAREs that fills its buffer share
  ==================  ==========================================================

Keys: the traitor signs with :attr:`Traitor.keyring`
(:class:`~faults.traitors.forgery.Keyring`): every faulty replica's and faulty
client's key of the run when the simulator provides it, else only its own.
It never holds an honest key, so whatever it sends in an honest replica's name
carries a signature that fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from faults.traitors.base import Behaviour, BehaviourError, Traitor, Trigger
from faults.traitors.byzantine_views import ViewAttacks
from faults.traitors.forgery import UNDECODABLE, Keyring, MessagePool, Mutator
from faults.traitors.wire import corrupt
from pbft import service as kv
from pbft.encoding import DecodeError, decode_signed, encode_message, encode_signed
from pbft.events import Effect, Event, Receive, SendBytes, SendToClient, SendToReplicas
from pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    FetchCommitted,
    FetchState,
    NewView,
    Prepare,
    PrePrepare,
    Read,
    Reply,
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
    batch_digest,
)

#: Generator name -> relative weight of being drawn for one attack.
WEIGHTS: dict[str, float] = {
    "replay": 2, "mutant": 5, "vote": 2, "pre-prepare": 2, "checkpoint": 1,
    "view-change": 2, "new-view": 2, "state": 1, "fetch": 1, "commit-certificate": 1,
    "reply": 1, "request": 1, "read": 1, "raw": 1, "burst": 0.15, "padded-view-change": 0.15,
}  # fmt: skip
#: Generators that cost much (many or large messages): limited by ``large``.
EXPENSIVE = ("burst", "padded-view-change")


class Byzantine(Behaviour):
    """Send anything the faulty keys can sign; see the module docstring."""

    name = "byzantine"
    PARAMS: ClassVar = {"rate": (float, 0.25), "budget": (int, 300), "large": (int, 1)}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        if not 0 <= self.rate <= 1:
            raise BehaviourError("byzantine: rate must be between 0 and 1")
        if self.budget < 0 or self.large < 0:
            raise BehaviourError("byzantine: budget and large must be >= 0")
        self.pool = MessagePool()
        self.injected = 0
        self.expensive = 0
        #: Attacks sent, by generator (for reports).
        self.by_generator: dict[str, int] = {}

    # ----------------------------------------------------------- the wrapper

    def incoming(self, traitor: Traitor, event: Event) -> Event | None:
        if type(event) is Receive and len(event.data) <= 64 * 1024:
            try:
                signed = decode_signed(event.data)
            except DecodeError:
                signed = None
            if signed is not None:
                self.pool.add(signed)
                if (
                    type(signed.message) is FetchState
                    and self.injected < self.budget
                    and traitor.rng.random() < 0.5
                ):
                    # A replica is fetching state: the moment a false STATE can bite.
                    self.injected += 1
                    self.by_generator["state"] = self.by_generator.get("state", 0) + 1
                    self.wake += _state(Kit.of(traitor, self.pool), signed)
        if (
            self.injected < self.budget
            and traitor.rng.random() < self.rate
            and self.trigger.active(traitor)
        ):
            self.wake += self.attack(traitor)
        return event

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) in (SendToReplicas, SendToClient):
            self.pool.add(effect.message)
        if type(effect) is SendToReplicas and self.injected < self.budget:
            rewritten = self._rewrite_own(traitor, effect)
            if rewritten is not None:
                return [rewritten]
        return [effect]

    def _rewrite_own(self, traitor: Traitor, effect: SendToReplicas) -> SendToReplicas | None:
        """Now and then, the traitor's own VIEW-CHANGE padded or its NEW-VIEW spoiled:
        the moments those attacks bite are the ones the honest code sends them in."""
        message = effect.message.message
        kind = type(message)
        rng = traitor.rng
        if getattr(message, "sender", None) != traitor.replica.id:
            return None  # a relayed NEW-VIEW, say: not the traitor's own message
        if kind is ViewChange and self.expensive < self.large and rng.random() < self.rate:
            name, self.expensive = "own-view-change-padded", self.expensive + 1
            signed = ViewAttacks(Kit.of(traitor, self.pool)).pad(effect.message)
        elif kind is NewView and rng.random() < 0.5:
            name = "own-new-view-spoiled"
            signed = ViewAttacks(Kit.of(traitor, self.pool)).spoil(effect.message)
        else:
            return None
        self.injected += 1
        self.by_generator[name] = self.by_generator.get(name, 0) + 1
        return SendToReplicas(effect.replicas, signed)

    # ------------------------------------------------------------- attacking

    def attack(self, traitor: Traitor) -> list[Effect]:
        """One attack, drawn by weight; an empty one (nothing to build from) is retried."""
        rng = traitor.rng
        names = [n for n in WEIGHTS if n not in EXPENSIVE or self.expensive < self.large]
        weights = [WEIGHTS[n] for n in names]
        kit = Kit.of(traitor, self.pool)
        for _ in range(3):
            name = rng.choices(names, weights)[0]
            effects = GENERATORS[name](kit)
            if effects:
                self.injected += 1
                self.expensive += name in EXPENSIVE
                self.by_generator[name] = self.by_generator.get(name, 0) + 1
                return effects
        return []


@attrs.define
class Kit:
    """What one attack is built with: the traitor's view of the world and its keys."""

    traitor: Traitor
    pool: MessagePool
    keyring: Keyring
    mutator: Mutator
    rng: random.Random

    @classmethod
    def of(cls, traitor: Traitor, pool: MessagePool) -> Kit:
        keyring = traitor.keyring or Keyring({traitor.replica.id: traitor.replica.auth})
        replica = traitor.replica
        mutator = Mutator(
            traitor.rng, keyring, pool, replica.view, replica.low_watermark,
            replica.params.log_window,
        )  # fmt: skip
        return cls(traitor, pool, keyring, mutator, traitor.rng)

    @property
    def config(self) -> Any:
        return self.traitor.replica.config

    @property
    def params(self) -> Any:
        return self.traitor.replica.params

    @property
    def view(self) -> int:
        return self.traitor.replica.view

    @property
    def low(self) -> int:
        return self.traitor.replica.low_watermark

    def faulty(self) -> int:
        ids = self.keyring.replica_ids
        return ids[self.rng.randrange(len(ids))]

    def targets(self) -> tuple[int, ...]:
        me = self.traitor.replica.id
        others = [r for r in range(self.config.n) if r != me]
        roll = self.rng.random()
        if roll < 0.45:
            return tuple(others)
        if roll < 0.75:
            return (others[self.rng.randrange(len(others))],)
        return tuple(sorted(self.rng.sample(others, self.rng.randint(1, len(others)))))

    def send(self, signed: Signed[Any], targets: tuple[int, ...] | None = None) -> list[Effect]:
        return [SendToReplicas(targets or self.targets(), signed)]

    def seq(self) -> int:
        """A sequence number in, at or just past the window (h, h+L], or a boundary value."""
        if self.rng.random() < 0.75:
            return self.low + self.rng.randint(0, self.params.log_window + 1)
        return self.mutator.number(self.low)

    def near_view(self) -> int:
        return max(0, self.view + self.rng.choice((-1, 0, 0, 0, 1, 1, 2)))

    def faulty_primary_views(self) -> list[int]:
        """Nearby views whose primary is a faulty key we hold."""
        keys = set(self.keyring.replica_ids)
        return [
            v
            for v in range(self.view, self.view + 2 * self.config.n)
            if self.config.primary(v) in keys
        ]


# --------------------------------------------------------------- generators


def _replay(kit: Kit) -> list[Effect]:
    kinds = [kind for kind in kit.pool.kinds() if hasattr(kind, "TAG")]
    if not kinds:
        return []
    signed = kit.pool.pick(kit.rng, kinds[kit.rng.randrange(len(kinds))])
    sender = getattr(signed.message, "sender", None)
    if sender is not None and sender != kit.traitor.replica.id and kit.rng.random() < 0.2:
        return kit.send(signed, (sender,))  # its own message, back to its signer
    return kit.send(signed)


def _mutant(kit: Kit) -> list[Effect]:
    kinds = [kind for kind in kit.pool.kinds() if hasattr(kind, "TAG")]
    if not kinds:
        return []
    message = kit.pool.pick(kit.rng, kinds[kit.rng.randrange(len(kinds))]).message
    for _ in range(kit.rng.randint(1, 3)):
        message = kit.mutator.message(message)
    return kit.send(kit.keyring.resign(kit.rng, message, honest_sender=0.05))


def _vote(kit: Kit) -> list[Effect]:
    rng = kit.rng
    pooled = kit.pool.pick(rng, PrePrepare)
    if pooled is not None and rng.random() < 0.7:
        view, seq, digest = pooled.message.view, pooled.message.seq, pooled.message.digest
    else:
        view, seq, digest = kit.near_view(), kit.seq(), kit.mutator.blob(b"\0" * 32)
    kind = rng.choice((Prepare, Commit))
    sender = kit.faulty()
    if kind is Prepare and rng.random() < 0.15:
        # As the primary of its view: a primary's PRE-PREPARE is its only vote.
        view = rng.choice(kit.faulty_primary_views() or [view])
        sender = kit.config.primary(view)
    vote = kind(view, seq, digest, sender)
    if rng.random() < 0.3:
        vote = kit.mutator.message(vote)
    first = kit.keyring.resign(rng, vote, honest_sender=0.03)
    if rng.random() < 0.4:
        # Equivocation: another digest, same (view, seq), to the other replicas.
        other = attrs.evolve(first.message, digest=kit.mutator.blob(first.message.digest))
        targets = kit.targets()
        rest = tuple(r for r in range(kit.config.n) if r not in targets)
        return kit.send(first, targets) + (
            kit.send(kit.keyring.resign(rng, other, 0), rest) if rest else []
        )
    return kit.send(first)


def _batch(kit: Kit) -> tuple[Signed[Request], ...]:
    rng = kit.rng
    requests = list(kit.pool.items(Request))
    size = rng.randint(0, kit.params.batch_size)
    if rng.random() < 0.12:
        size = kit.params.batch_size + 1  # one request more than a batch may hold
    batch = [requests[rng.randrange(len(requests))] for _ in range(size)] if requests else []
    if batch and rng.random() < 0.15:
        index = rng.randrange(len(batch))
        batch[index] = kit.keyring.zeroed(batch[index].message)
    if rng.random() < 0.08:
        big = Request(0, 1, b"\xa1" * (kit.params.max_request_bytes + rng.randint(1, 64)))
        batch.append(kit.keyring.resign(rng, big, honest_sender=0))
    return tuple(batch)


def _pre_prepare(kit: Kit) -> list[Effect]:
    rng = kit.rng
    views = kit.faulty_primary_views()
    view = rng.choice(views) if views and rng.random() < 0.8 else kit.near_view()
    seq = kit.seq()
    primary = kit.config.primary(view)
    sender = primary if primary in kit.keyring.replicas else kit.faulty()
    batch = _batch(kit)
    digest = batch_digest(batch) if rng.random() < 0.85 else kit.mutator.blob(batch_digest(batch))
    message = PrePrepare(view, seq, digest, batch, sender)
    signed = kit.keyring.sign_as(message, sender)
    if rng.random() < 0.5:
        other_batch = _batch(kit)
        other = PrePrepare(view, seq, batch_digest(other_batch), other_batch, sender)
        targets = kit.targets()
        rest = tuple(r for r in range(kit.config.n) if r not in targets and r != sender)
        effects = kit.send(signed, targets)
        return effects + (kit.send(kit.keyring.sign_as(other, sender), rest) if rest else [])
    return kit.send(signed)


def _checkpoint(kit: Kit) -> list[Effect]:
    rng = kit.rng
    interval = kit.params.checkpoint_interval
    seq = interval * rng.randint(max(kit.low // interval - 1, 0), kit.low // interval + 3)
    if rng.random() < 0.3:
        seq = kit.mutator.number(seq)
    pooled = kit.pool.pick(rng, Checkpoint)
    digest = (
        pooled.message.state_digest
        if pooled is not None and rng.random() < 0.5
        else rng.randbytes(32)
    )
    return kit.send(kit.keyring.resign(rng, Checkpoint(seq, digest, 0), honest_sender=0.03))


def _state(kit: Kit, answering: Signed[FetchState] | None = None) -> list[Effect]:
    """A false STATE. ``answering`` is a FETCH-STATE just received: the reply then claims
    a seq the fetcher waits for, so only the proof or the snapshot can give it away."""
    rng = kit.rng
    fetch = answering or kit.pool.pick(rng, FetchState)
    seq, proof = ViewAttacks(kit).proof()
    if answering is not None and rng.random() < 0.8:
        seq = max(seq, answering.message.seq)
    elif rng.random() < 0.3:
        seq = kit.mutator.number(seq)
    if rng.random() < 0.5:
        # Well-formed: the traitor's own state now, which is not the state at ``seq``
        # (only the proof can give it away).
        snapshot = kit.traitor.replica.checkpoint_state()
    else:
        snapshot = rng.randbytes(rng.randint(0, 256))
    message = StateSnapshot(seq, snapshot, proof, kit.faulty())
    signed = kit.keyring.sign_as(message, message.sender)
    asker = None if fetch is None else fetch.message.sender
    if asker is not None and asker != kit.traitor.replica.id and asker < kit.config.n:
        return kit.send(signed, (asker,))
    return kit.send(signed)


def _fetch(kit: Kit) -> list[Effect]:
    rng = kit.rng
    if rng.random() < 0.5:
        message: Any = FetchState(kit.mutator.number(kit.low), 0)
    else:
        first = kit.mutator.number(kit.low)
        message = FetchCommitted(
            first, rng.choice((first, first + 3, max(first - 1, 0), kit.mutator.number(first))), 0
        )
    return kit.send(kit.keyring.resign(rng, message, honest_sender=0.03))


def _commit_certificate(kit: Kit) -> list[Effect]:
    rng = kit.rng
    pre_prepare = kit.pool.pick(rng, PrePrepare)
    if pre_prepare is None:
        return []
    pooled = kit.pool.pick(rng, CommitCertificate)
    if pooled is not None and rng.random() < 0.3:
        return kit.send(pooled)
    head = pre_prepare.message
    commits = [
        c
        for c in kit.pool.items(Commit)
        if (c.message.view, c.message.seq) == (head.view, head.seq)
    ]
    forged = [
        kit.keyring.sign_as(Commit(head.view, head.seq, head.digest, r), r)
        for r in kit.keyring.replica_ids
    ]
    entries = tuple(kit.mutator.sequence(_SIGNED_COMMIT, tuple(commits + forged), 0))
    if rng.random() < 0.5:
        entries = tuple(commits + forged)
    message = CommitCertificate(pre_prepare, entries, kit.faulty())
    return kit.send(kit.keyring.sign_as(message, message.sender))


def _reply(kit: Kit) -> list[Effect]:
    rng = kit.rng
    request = kit.pool.pick(rng, Request)
    client, timestamp = (
        (0, 1) if request is None else (request.message.client, request.message.timestamp)
    )
    reply = Reply(
        kit.near_view(),
        rng.choice((timestamp, timestamp + 1, kit.mutator.number(timestamp))),
        client,
        kit.faulty(),
        rng.randbytes(8),
    )
    roll = rng.random()
    signed = kit.keyring.sign_as(reply, reply.sender)
    if roll < 0.25:
        return kit.send(signed)  # a REPLY sent to replicas, which take none
    if roll < 0.45:
        signed = kit.keyring.resign(rng, reply, honest_sender=0.3)  # often a forgery
    clients = len(kit.config.client_keys)
    if roll > 0.85 and clients > 1:
        # Addressed to one client, delivered to another.
        return [SendToClient((client + 1 + rng.randrange(clients - 1)) % clients, signed)]
    return [SendToClient(client, signed)]


def _request(kit: Kit) -> list[Effect]:
    rng = kit.rng
    clients = kit.keyring.client_ids
    if clients:
        client = clients[rng.randrange(len(clients))]
        pooled = kit.pool.pick(rng, Request)
        timestamp = kit.mutator.number(pooled.message.timestamp if pooled else 1)
        size = rng.choice((8, kit.params.max_request_bytes - 32, kit.params.max_request_bytes + 1))
        request = Request(client, timestamp, UNDECODABLE + rng.randbytes(size))
        return kit.send(kit.keyring.sign_as(request, client))
    pooled = kit.pool.pick(rng, Request)
    if pooled is None:
        return []
    if rng.random() < 0.5:
        return kit.send(pooled)
    return kit.send(kit.keyring.zeroed(kit.mutator.message(pooled.message)))


def _read(kit: Kit) -> list[Effect]:
    """A READ no client sent, for the timestamp of a client's latest request: if honest
    replicas answered it, the client would take a read's result for its write."""
    requests = list(kit.pool.items(Request))
    if not requests:
        return []
    victim = requests[kit.rng.randrange(len(requests))].message.client
    latest = max((r.message for r in requests if r.message.client == victim),
                 key=lambda request: request.timestamp)  # fmt: skip
    try:
        _, args = kv.decode_operation(latest.operation)
        key = args[0]
    except ValueError:
        key = "key-0"
    read = Read(victim, latest.timestamp, kv.get(key))
    return kit.send(Signed(read, b"", encode_message(read)))


def _raw(kit: Kit) -> list[Effect]:
    """Bytes no encoder writes: random, or a seen message's encoding broken at one
    nesting level (:func:`faults.traitors.wire.corrupt`), or a well-signed PREPARE
    whose seq is past 2^63."""
    rng = kit.rng
    kinds = [kind for kind in kit.pool.kinds() if hasattr(kind, "TAG")]
    roll = rng.randrange(6)
    if roll < 4 and kinds:
        pooled = [kit.pool.pick(rng, kinds[rng.randrange(len(kinds))]) for _ in range(3)]
        others = [signed.payload for signed in pooled[1:]]
        _, data = corrupt(rng, encode_signed(pooled[0]), kit.params.max_message_bytes, others)
    elif roll == 4:
        data = rng.randbytes(rng.randint(1, 512))
    else:
        huge = Prepare(kit.view, 2**63 + rng.randrange(2**63), b"\0" * 32, kit.faulty())
        data = encode_signed(kit.keyring.sign_as(huge, huge.sender))
    return [SendBytes(kit.targets(), data)]


def _burst(kit: Kit) -> list[Effect]:
    """Fill one sender's share of a replica's next-view buffer, and one more: PRE-PREPAREs
    with pooled batches when a faulty key is the next view's primary (the share's byte
    bound then bites before its message count), else PREPAREs."""
    view = kit.view + 1
    primary = kit.config.primary(view)
    share = kit.params.future_buffer_messages // kit.config.n
    target = kit.targets()[:1]
    if primary in kit.keyring.replica_ids:
        pooled = list(kit.pool.items(Request))[: kit.params.batch_size]
        batch = tuple(pooled)
        messages = [
            PrePrepare(view, kit.low + 1 + index, batch_digest(batch), batch, primary)
            for index in range(share + 2)
        ]
        return [SendToReplicas(target, kit.keyring.sign_as(m, primary)) for m in messages]
    sender = kit.faulty()
    return [
        SendToReplicas(
            target,
            kit.keyring.sign_as(Prepare(view, kit.low + 1 + index, b"\0" * 32, sender), sender),
        )
        for index in range(share + 2)
    ]


_SIGNED_COMMIT: Any = CommitCertificate.SCHEMA[1][1].kind

GENERATORS: dict[str, Callable[[Kit], list[Effect]]] = {
    "replay": _replay, "mutant": _mutant, "vote": _vote, "pre-prepare": _pre_prepare,
    "checkpoint": _checkpoint, "view-change": lambda kit: ViewAttacks(kit).view_change(),
    "new-view": lambda kit: ViewAttacks(kit).new_view(), "state": _state, "fetch": _fetch,
    "commit-certificate": _commit_certificate, "reply": _reply, "request": _request,
    "read": _read,
    "raw": _raw, "burst": _burst,
    "padded-view-change": lambda kit: ViewAttacks(kit).padded_view_change(),
}  # fmt: skip
