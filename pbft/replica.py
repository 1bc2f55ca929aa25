"""A PBFT replica as a sans-IO state machine.

Theory of operation
-------------------
:meth:`Replica.step` takes one :mod:`event <pbft.events>` (bytes received, a
timer fired) and returns the effects the driver must carry out (send, set or
cancel a timer) plus notices of what happened. It never performs I/O, reads a
clock or draws random numbers, so the Trio runtime, the in-memory test network
and the simulator drive the very same code, and a run is a pure function of
its inputs.

Every received byte string goes through :class:`pbft.auth.Authenticator`
first; a message that fails is dropped and counted, never raised. Protocol
handlers return None when they accept a message or a short reason when they
drop it, and :meth:`Replica._dispatch` counts either.

The replica keeps, for the current view, a :class:`Slot` per sequence number in
the window (h, h+L]: the accepted PRE-PREPARE and the PREPAREs and COMMITs
received, keyed by sender so that quorums count distinct replicas. What must
survive a view change lives outside the slots: prepared certificates (for the
next VIEW-CHANGE), committed batches not yet executed, and the client table.

The normal case (§4.2) is in this module; checkpoints and state transfer
(§4.3) in :mod:`pbft.replica_checkpoints`; view changes (§4.4) in
:mod:`pbft.replica_view_change`. Names follow the paper; docs/protocol.md maps
each rule to the function that enforces it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack

from pbft.auth import Authenticator, Rejection
from pbft.bounds import message_bounds
from pbft.certificates import (
    GENESIS_DIGEST,
    CheckedViewChange,
    pre_prepare_is_well_formed,
)
from pbft.config import ClusterConfig, ConfigError, ProtocolParams
from pbft.counters import Counters
from pbft.crypto import Signer, Verifier
from pbft.encoding import decode_signed, encode_message
from pbft.events import (
    CancelTimer,
    Committed,
    Dropped,
    Effect,
    EquivocationDetected,
    Event,
    Executed,
    Prepared,
    Receive,
    SendToClient,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.evidence import Evidence, EvidenceKey, conflicting
from pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    FetchCommitted,
    FetchState,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Read,
    Reply,
    ReplyDigest,
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
    batch_digest,
    designated_replier,
    result_digest,
)
from pbft.replica_catch_up import CATCH_UP_TIMER, CatchUpMixin
from pbft.replica_checkpoints import CheckpointMixin
from pbft.replica_gate import BUFFERED, GateMixin
from pbft.replica_recovery import RecoveryMixin
from pbft.replica_stores import StoresMixin
from pbft.replica_view_change import ViewChangeMixin
from pbft.service import KeyValueStore, Service

#: The message types a replica takes; REPLY is for clients only.
REPLICA_ACCEPTS = (
    FetchCommitted,
    CommitCertificate,
    Request,
    Read,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    FetchState,
    StateSnapshot,
)

VIEW_CHANGE_TIMER = "view-change"
VIEW_CHANGE_RESEND_TIMER = "view-change-resend"
STATE_TRANSFER_TIMER = "state-transfer"
NEW_VIEW_RELAY_TIMER = "new-view-relay"
#: Ends a period of request relays and PRE-PREPARE resends (``Replica._resend_allowed``).
REQUEST_RESEND_TIMER = "request-resend"


class Slot:
    """What a replica knows about one sequence number in the current view."""

    __slots__ = ("commits", "committed", "pre_prepare", "prepared", "prepares")

    def __init__(self) -> None:
        self.pre_prepare: Signed[PrePrepare] | None = None
        self.prepares: dict[int, Signed[Prepare]] = {}
        self.commits: dict[int, Signed[Commit]] = {}
        self.prepared = False
        self.committed = False


class Replica(
    GateMixin, StoresMixin, CheckpointMixin, CatchUpMixin, ViewChangeMixin, RecoveryMixin
):
    """One PBFT replica: ``step(event) -> list[Effect]``."""

    def __init__(
        self,
        replica_id: int,
        config: ClusterConfig,
        signer: Signer,
        params: ProtocolParams | None = None,
        service: Service | None = None,
        verifier: Verifier | None = None,
        decoder: Callable[[bytes, int], Signed[Any]] = decode_signed,
    ) -> None:
        if not 0 <= replica_id < config.n:
            raise ConfigError(f"replica id {replica_id} is not in 0..{config.n - 1}")
        if signer.public_key != config.replica_keys[replica_id]:
            raise ConfigError(f"the private key given does not belong to replica {replica_id}")
        self.id = replica_id
        self.config = config
        self.params = params or ProtocolParams()
        self.bounds = message_bounds(config, self.params)
        by_type = self.bounds.by_type()
        self._payload_bounds = {
            cls: by_type[cls.TYPE] for cls in REPLICA_ACCEPTS if cls.TYPE in by_type
        }
        largest = self.bounds.frame
        if largest > self.params.max_message_bytes:
            raise ConfigError(
                f"max_message_bytes = {self.params.max_message_bytes} is too small: a NEW-VIEW "
                f"may take {largest} bytes with this window, batch size and request size"
            )
        self.service: Service = service if service is not None else KeyValueStore()
        self.auth = Authenticator(
            config, signer, verifier, self.params.max_message_bytes,
            self.params.verified_cache_entries, decoder=decoder,
            # A READ straight from its client is authenticated by the client's channel.
            channel_types=() if self.params.signed_replies else (Read,),
        )  # fmt: skip
        self.counters = Counters()
        self._others = tuple(i for i in range(config.n) if i != replica_id)
        self._effects: list[Effect] = []

        # View state (§4.4): view_active is False between sending VIEW-CHANGE
        # for ``view`` and accepting its NEW-VIEW.
        self.view = 0
        self.view_active = True

        # Normal case (§4.2).
        self.slots: dict[int, Slot] = {}
        self.next_seq = 1
        self.last_executed = 0
        #: Committed-local batches waiting for lower sequence numbers to execute.
        self.committed: dict[int, PrePrepare] = {}
        #: The highest-view prepared certificate per sequence number above h.
        self.prepared_certificates: dict[int, PreparedCertificate] = {}
        #: Proof of what committed above h, for replicas that missed it.
        self.commit_certificates: dict[int, CommitCertificate] = {}
        self._catching_up = False
        self._catch_up_mark = 0
        #: Catch-up periods in a row without progress.
        self._stalled_periods = 0

        # Clients (§4.1): the last executed timestamp and result per client,
        # the requests waiting to execute (the latest per client), and at the
        # primary the requests not yet assigned a sequence number.
        self.client_table: dict[int, tuple[int, bytes]] = {}
        self.pending: dict[int, Signed[Request]] = {}
        self.queue: OrderedDict[int, Signed[Request]] = OrderedDict()
        self.assigned: dict[tuple[int, int], int] = {}
        self._timer_request: tuple[int, int] | None = None

        # Checkpoints (§4.3) and state transfer.
        self.low_watermark = 0
        self.stable_digest = GENESIS_DIGEST
        self.stable_proof: tuple[Signed[Checkpoint], ...] = ()
        self.stable_snapshot: bytes | None = self.checkpoint_state()
        self.own_checkpoints: dict[int, tuple[bytes, bytes]] = {}
        self.checkpoint_votes: dict[int, dict[int, Signed[Checkpoint]]] = {}
        self.fetching: int | None = None
        #: Replicas seen using sequence numbers beyond our window: f+1 of them
        #: prove we are behind a stable checkpoint we never heard of.
        self.ahead_senders: set[int] = set()

        # View changes (§4.4).
        self.view_changes: dict[int, dict[int, CheckedViewChange]] = {}
        self.view_change_attempts = 0
        #: Normal-case messages of the next view, per sender, until its NEW-VIEW.
        self.future: dict[int, list[Signed[Any]]] = {}
        #: The NEW-VIEW that started the current view, relayed to replicas that missed it.
        self.last_new_view: Signed[NewView] | None = None
        #: Replicas sent our NEW-VIEW since the "new-view-relay" timer last fired.
        self._new_view_relayed: set[int] = set()
        #: Copies of requests relayed (client -> (view, timestamp)) and PRE-PREPAREs
        #: resent (seq -> view) since the "request-resend" timer last fired: one each
        #: per period, whatever number of copies a client sends (at most one entry per
        #: client and per sequence number of the window).
        self._relayed: dict[int, tuple[int, int]] = {}
        self._resent: dict[int, int] = {}

        #: Proofs that a replica signed two conflicting messages (pbft.evidence).
        self.evidence: dict[EvidenceKey, Evidence] = {}
        #: (sender, phase) of the proofs kept: one each.
        self._evidence_held: set[tuple[int, str]] = set()

    # ------------------------------------------------------------------ driving

    def step(self, event: Event) -> list[Effect]:
        """Advance the replica by one input; return what the environment must do."""
        self._effects = effects = []
        if type(event) is Receive:
            # Cheap checks first, the signature next, the handler last (pbft.replica_gate).
            decoded = self.auth.decode(event.data, REPLICA_ACCEPTS, event.channel)
            if type(decoded) is Rejection:
                self._count_drop(decoded.message_type, decoded.reason)
            else:
                reason = self._precheck(decoded) or self.auth.verify(decoded, event.channel)
                if reason is None:
                    self._handle(decoded)
                else:
                    self._count_drop(decoded.message.TYPE, reason)
        elif type(event) is TimerFired:
            self._on_timer(event.name)
        else:
            raise TypeError(f"a replica does not take {type(event).__name__} events")
        self._effects = []
        return effects

    def _dispatch(self, signed: Signed[Any]) -> None:
        """Handle an already verified message (one replayed from the future buffer)."""
        reason = self._precheck(signed)
        if reason is not None:
            self._count_drop(signed.message.TYPE, reason)
        else:
            self._handle(signed)

    def _handle(self, signed: Signed[Any]) -> None:
        message = signed.message
        reason = self._handlers[type(message)](self, signed)
        if reason is None:
            self.counters.accept(message.TYPE)
        elif reason is not BUFFERED:
            self._count_drop(message.TYPE, reason)

    def _on_timer(self, name: str) -> None:
        if name == VIEW_CHANGE_TIMER:
            self._timer_request = None
            self._view_change_timer_expired()
        elif name == VIEW_CHANGE_RESEND_TIMER:
            self._resend_view_change()
        elif name == STATE_TRANSFER_TIMER:
            self._retry_state_transfer()
        elif name == CATCH_UP_TIMER:
            self._catch_up()
        elif name == NEW_VIEW_RELAY_TIMER:
            self._new_view_relayed.clear()
        elif name == REQUEST_RESEND_TIMER:
            self._relayed.clear()
            self._resent.clear()

    # ----------------------------------------------------------------- helpers

    @property
    def primary(self) -> int:
        return self.config.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.view_active and self.primary == self.id

    @property
    def requests_waiting(self) -> int:
        """Requests received and not yet executed (``pending``, one per client, §4.1).

        Read-only, for the driver's admission control (:mod:`pbft.runtime.admission`):
        at the primary those queued or in flight, at a backup those it relayed.
        """
        return len(self.pending)

    def _emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def _sign(self, message: Any) -> Signed[Any]:
        return self.auth.sign(message)

    def _send(self, replicas: tuple[int, ...], signed: Signed[Any]) -> None:
        # Emitted even to nobody (n = 1): journals learn what was signed from sends.
        self._effects.append(SendToReplicas(replicas, signed))

    def _broadcast(self, signed: Signed[Any]) -> None:
        self._send(self._others, signed)

    def _count_drop(self, message_type: str, reason: str) -> None:
        self.counters.drop(message_type, reason)
        self._effects.append(Dropped(message_type, reason))

    def _note_conflict(self, held: Signed[Any], received: Signed[Any]) -> None:
        """Keep the proof when a sender contradicts a message of its that we hold.

        Called where a second message from one sender for one slot is refused;
        the first stays the one used. Two validly signed messages that conflict
        (:func:`pbft.evidence.conflicting`) prove the sender faulty, to anyone:
        count them, and keep and announce the first proof per (sender, phase):
        one proves the sender faulty, and a bound per sender and phase bounds
        the store in bytes (two of the phase's largest messages each).
        """
        if held.payload == received.payload or held.message.sender == self.id:
            # A plain retransmission; or our own vote, met again only when
            # re-signed after a restart: accusing ourselves proves nothing.
            return
        if not conflicting(held, received):
            return
        evidence = Evidence(held, received)
        if evidence.key in self.evidence:
            return
        self.counters.drop(evidence.phase, "equivocation")
        proven = (evidence.sender, evidence.phase)
        if proven in self._evidence_held:
            return
        self._evidence_held.add(proven)
        self.evidence[evidence.key] = evidence
        self._emit(EquivocationDetected(evidence))

    def _above_window(self, seq: int, sender: int) -> str | None:
        """§4.2: accept only sequence numbers up to the high watermark h+L (those at or
        below h were refused by :meth:`_precheck`)."""
        if seq > self.low_watermark + self.params.log_window:
            self._note_ahead(sender)
            return "outside-watermarks"
        return None

    def _slot(self, seq: int) -> Slot:
        slot = self.slots.get(seq)
        if slot is None:
            slot = self.slots[seq] = Slot()
            self._watch_for_gaps()
        return slot

    def checkpoint_state(self) -> bytes:
        """The state a checkpoint digests: the service and the client table (§4.3)."""
        table = sorted([client, ts, result] for client, (ts, result) in self.client_table.items())
        return msgpack.packb([self.service.snapshot(), table])

    def state_digest(self) -> bytes:
        return hashlib.sha256(self.checkpoint_state()).digest()

    # ---------------------------------------------------------------- requests

    def _on_request(self, signed: Signed[Request]) -> str | None:
        """§4.1: execute each (client, timestamp) at most once; resend the last reply.

        A backup forwards a new request to the primary and starts its view
        change timer; the primary queues it for a PRE-PREPARE.
        """
        request = signed.message
        if len(signed.payload) > self.params.max_request_bytes:
            return "request-too-large"
        last = self.client_table.get(request.client)
        if last is not None and request.timestamp <= last[0]:
            if request.timestamp == last[0]:
                self._send_reply(request.client, request.timestamp, last[1], resent=True)
                return None
            return "stale-timestamp"
        waiting = self.pending.get(request.client)
        if waiting is not None and waiting.message.timestamp > request.timestamp:
            return "stale-timestamp"
        is_new = waiting is None or waiting.message.timestamp < request.timestamp
        if is_new:
            # Clients have one request outstanding at a time (§4.1), so a newer
            # timestamp replaces an older one and memory stays bounded.
            self.pending[request.client] = signed
        if not self.view_active:
            return None
        if self.primary == self.id:
            key = (request.client, request.timestamp)
            seq = self.assigned.get(key)
            if seq is not None:
                if self._resend_allowed(self._resent, seq, self.view):
                    self._resend_pre_prepare(seq)
            elif is_new:
                self.queue[request.client] = signed
                self._propose()
        elif self._resend_allowed(self._relayed, request.client, (self.view, request.timestamp)):
            self._send((self.primary,), signed)
        self._start_request_timer(request)
        return None

    def _on_read(self, signed: Signed[Read]) -> str | None:
        """§5.1.3: execute a read-only operation at once and reply; never ordered.

        Only committed batches are ever executed here, so the state read is a
        committed prefix; the client's 2f+1 matching replies do the rest (see
        :mod:`pbft.client`). The client table is left alone: the timestamp may
        yet be ordered as a REQUEST, when the replies do not agree.
        """
        read = signed.message
        if not self.service.is_read_only(read.operation):
            return "not-read-only"
        self._send_reply(read.client, read.timestamp, self.service.execute(read.operation))
        return None

    def _start_request_timer(self, request: Request) -> None:
        """Start the view-change timer if it is not running (§4.4)."""
        if self._timer_request is None and self.view_active:
            self._timer_request = (request.client, request.timestamp)
            self._emit(SetTimer(VIEW_CHANGE_TIMER, self._view_change_timeout()))

    def _restart_request_timer(self) -> None:
        """Stop the timer when nothing waits; restart it for the next waiting request."""
        if not self.view_active:
            return
        self._timer_request = None
        oldest = next(iter(self.pending.values()), None)
        if oldest is None:
            self._emit(CancelTimer(VIEW_CHANGE_TIMER))
        else:
            self._start_request_timer(oldest.message)

    def _resend_allowed(self, sent: dict[Any, Any], key: Any, value: Any) -> bool:
        """Whether to answer a copy of a request again: once per key and period.

        A client's retransmission (§4.1: it re-sends the same request to every
        replica) asks a backup to relay it to the primary again and the primary to
        resend its PRE-PREPARE, in case a message was lost. A faulty client can send
        copies as fast as it likes; each would cost a message to the primary, or a
        PRE-PREPARE of up to ``batch_size`` requests to every backup. So each is
        answered at most once per period of ``view_change_timeout_ticks // 4`` (an
        honest client's first retransmission comes ``retransmit_timeout_ticks``,
        500 by default, after its request). A new request, or one in a new view,
        differs from what was recorded and is always answered.
        """
        if sent.get(key) == value:
            return False
        if not self._relayed and not self._resent:
            period = max(1, self.params.view_change_timeout_ticks // 4)
            self._emit(SetTimer(REQUEST_RESEND_TIMER, period))
        sent[key] = value
        return True

    def _resend_pre_prepare(self, seq: int) -> None:
        slot = self.slots.get(seq)
        if slot is not None and slot.pre_prepare is not None and seq > self.last_executed:
            self._broadcast(slot.pre_prepare)

    def _send_reply(self, client: int, timestamp: int, result: bytes, resent: bool = False) -> None:
        message: Reply | ReplyDigest = Reply(self.view, timestamp, client, self.id, result)
        if (
            self.params.digest_replies
            and not resent
            and designated_replier(client, timestamp, self.config.n) != self.id
        ):
            message = ReplyDigest(self.view, timestamp, client, self.id, result_digest(result))
        if self.params.signed_replies:
            reply = self._sign(message)
        else:  # point-to-point: the channel's MAC authenticates it (pbft.auth)
            reply = Signed(message, b"", encode_message(message))
        self._emit(SendToClient(client, reply))

    # ------------------------------------------------------------- normal case

    def _propose(self) -> None:
        """The primary assigns the next sequence numbers to batches of queued requests.

        §4.2: n must lie in (h, h+L]. Batching (§4.2): at most
        ``max_inflight_batches`` sequence numbers are assigned and not yet
        executed; requests that arrive meanwhile queue up and go out together,
        up to ``batch_size`` in one PRE-PREPARE. A batch that would not be full
        waits while ``partial_batches_in_flight`` batches are in flight (adaptive
        batching); executing one calls this again.
        """
        if not self.is_primary:
            return
        params = self.params
        limit = min(
            self.low_watermark + params.log_window,
            self.last_executed + params.max_inflight_batches,
        )
        while self.queue and self.next_seq <= limit:
            if (
                len(self.queue) < params.batch_size
                and self.next_seq - 1 - self.last_executed >= params.partial_batches_in_flight
            ):
                return
            batch: list[Signed[Request]] = []
            while self.queue and len(batch) < self.params.batch_size:
                _, signed = self.queue.popitem(last=False)
                request = signed.message
                last = self.client_table.get(request.client)
                if last is not None and request.timestamp <= last[0]:
                    continue
                if (request.client, request.timestamp) in self.assigned:
                    continue
                batch.append(signed)
            if not batch:
                return
            batch_tuple = tuple(batch)
            seq = self.next_seq
            self.next_seq += 1
            pre_prepare = PrePrepare(
                self.view, seq, batch_digest(batch_tuple), batch_tuple, self.id
            )
            signed_pre_prepare = self._sign(pre_prepare)
            self._accept_pre_prepare(signed_pre_prepare)
            self._broadcast(signed_pre_prepare)

    def _on_pre_prepare(self, signed: Signed[PrePrepare]) -> str | None:
        """§4.2: a backup accepts a PRE-PREPARE if it is from the primary of its current
        view, n is within the watermarks, d is the digest of the batch carried, and no
        PRE-PREPARE for (v, n) with another digest was accepted."""
        pre_prepare = signed.message
        reason = self._view_gate(signed, pre_prepare.view)
        reason = reason or self._above_window(pre_prepare.seq, pre_prepare.sender)
        if reason is not None:
            return reason
        slot = self.slots.get(pre_prepare.seq)
        if slot is not None and slot.pre_prepare is not None:
            if slot.pre_prepare.message.digest == pre_prepare.digest:
                return "duplicate"
            self._note_conflict(slot.pre_prepare, signed)
            return "conflicting-pre-prepare"
        own = slot.prepares.get(self.id) if slot is not None else None
        if own is not None and own.message.digest != pre_prepare.digest:
            # We already sent a PREPARE for another digest at (v, n), before a
            # restart: never sign a second, contradicting one.
            return "conflicting-pre-prepare"
        reason = pre_prepare_is_well_formed(self.auth, self.params, pre_prepare)
        if reason is not None:
            return reason
        self._accept_pre_prepare(signed)
        return None

    def _accept_pre_prepare(self, signed: Signed[PrePrepare]) -> None:
        """Record an accepted PRE-PREPARE; a backup multicasts its PREPARE."""
        pre_prepare = signed.message
        slot = self._slot(pre_prepare.seq)
        slot.pre_prepare = signed
        for request in pre_prepare.batch:
            self.assigned[(request.message.client, request.message.timestamp)] = pre_prepare.seq
        own = slot.prepares.get(self.id)
        if pre_prepare.sender != self.id and own is None:
            prepare = self._sign(
                Prepare(pre_prepare.view, pre_prepare.seq, pre_prepare.digest, self.id)
            )
            slot.prepares[self.id] = prepare
            self._broadcast(prepare)
        elif own is not None:
            # Recovered from storage: the PREPARE may never have left before the crash.
            self._broadcast(own)
        self._check_prepared(pre_prepare.seq, slot)

    def _on_prepare(self, signed: Signed[Prepare]) -> str | None:
        """§4.2: record a PREPARE of the current view within the watermarks.

        The primary's PRE-PREPARE stands for its vote, so a PREPARE from the
        primary is not counted.
        """
        prepare = signed.message
        reason = self._view_gate(signed, prepare.view)
        reason = reason or self._above_window(prepare.seq, prepare.sender)
        if reason is not None:
            return reason
        slot = self._slot(prepare.seq)
        held = slot.prepares.get(prepare.sender)
        if held is not None:
            self._note_conflict(held, signed)
            return "duplicate"
        slot.prepares[prepare.sender] = signed
        self._check_prepared(prepare.seq, slot)
        return None

    def _check_prepared(self, seq: int, slot: Slot) -> None:
        """prepared(m, v, n, i): the PRE-PREPARE and 2f matching PREPAREs from distinct
        backups (§4.2). Then keep the certificate and multicast COMMIT."""
        if slot.prepared or slot.pre_prepare is None:
            return
        pre_prepare = slot.pre_prepare.message
        matching = [
            prepare
            for sender, prepare in sorted(slot.prepares.items())
            if prepare.message.digest == pre_prepare.digest
        ]
        needed = self.config.quorum - 1  # 2f when n = 3f+1
        if len(matching) < needed:
            return
        slot.prepared = True
        certificate = PreparedCertificate(slot.pre_prepare, tuple(matching[:needed]))
        self.prepared_certificates[seq] = certificate
        self._emit(Prepared(certificate))
        commit = self._sign(Commit(pre_prepare.view, seq, pre_prepare.digest, self.id))
        slot.commits[self.id] = commit
        self._broadcast(commit)
        self._check_committed(seq, slot)

    def _on_commit(self, signed: Signed[Commit]) -> str | None:
        """§4.2: record a COMMIT of the current view within the watermarks."""
        commit = signed.message
        reason = self._view_gate(signed, commit.view)
        reason = reason or self._above_window(commit.seq, commit.sender)
        if reason is not None:
            return reason
        slot = self._slot(commit.seq)
        held = slot.commits.get(commit.sender)
        if held is not None:
            self._note_conflict(held, signed)
            return "duplicate"
        slot.commits[commit.sender] = signed
        self._check_committed(commit.seq, slot)
        return None

    def _check_committed(self, seq: int, slot: Slot) -> None:
        """committed-local(m, v, n, i): prepared and 2f+1 matching COMMITs from distinct
        replicas, its own included (§4.2)."""
        if slot.committed or not slot.prepared:
            return
        assert slot.pre_prepare is not None
        digest = slot.pre_prepare.message.digest
        votes = sum(1 for commit in slot.commits.values() if commit.message.digest == digest)
        if votes < self.config.quorum:
            return
        slot.committed = True
        proof = sorted(
            (c for c in slot.commits.values() if c.message.digest == digest),
            key=lambda c: c.message.sender,
        )
        self.commit_certificates[seq] = CommitCertificate(
            slot.pre_prepare, tuple(proof[: self.config.quorum]), self.id
        )
        if seq > self.last_executed:
            self._emit(Committed(slot.pre_prepare))
            self.committed[seq] = slot.pre_prepare.message
            self._execute_ready()

    def _execute_ready(self) -> None:
        """Execute committed batches strictly in sequence-number order (§4.2).

        A request whose timestamp is not above the client's last executed one
        is skipped: every (client, timestamp) executes at most once, even when
        a view change re-issues it at another sequence number.
        """
        progressed = False
        # Below the low watermark the log was discarded: only state transfer helps.
        while self.last_executed >= self.low_watermark:
            pre_prepare = self.committed.pop(self.last_executed + 1, None)
            if pre_prepare is None:
                break
            executed: list[tuple[int, int]] = []
            for signed in pre_prepare.batch:
                request = signed.message
                last = self.client_table.get(request.client)
                if last is not None and request.timestamp <= last[0]:
                    continue
                result = self.service.execute(request.operation)
                self.client_table[request.client] = (request.timestamp, result)
                executed.append((request.client, request.timestamp))
                waiting = self.pending.get(request.client)
                if waiting is not None and waiting.message.timestamp <= request.timestamp:
                    del self.pending[request.client]
                    self.queue.pop(request.client, None)
                self._send_reply(request.client, request.timestamp, result)
            self.last_executed = pre_prepare.seq
            if executed and pre_prepare.view == self.view and self.view_active:
                # §4.5.2: a request executed in this view: the view works, so the
                # next view change starts again from the base timeout.
                self.view_change_attempts = 0
            self._emit(
                Executed(pre_prepare.seq, pre_prepare.view, pre_prepare.digest, tuple(executed))
            )
            if pre_prepare.seq % self.params.checkpoint_interval == 0:
                self._take_checkpoint(pre_prepare.seq)
            progressed = True
        if progressed:
            if self.fetching is not None and self.last_executed >= self.fetching:
                self._stop_state_transfer()
            if self._timer_request is not None:
                client, timestamp = self._timer_request
                waiting = self.pending.get(client)
                if waiting is None or waiting.message.timestamp != timestamp:
                    self._restart_request_timer()
            self._propose()
        self._watch_for_gaps()

    _handlers: dict[type, Any] = {}


Replica._handlers = {
    FetchCommitted: CatchUpMixin._on_fetch_committed,
    CommitCertificate: CatchUpMixin._on_commit_certificate,
    Request: Replica._on_request,
    Read: Replica._on_read,
    PrePrepare: Replica._on_pre_prepare,
    Prepare: Replica._on_prepare,
    Commit: Replica._on_commit,
    Checkpoint: CheckpointMixin._on_checkpoint,
    FetchState: CheckpointMixin._on_fetch_state,
    StateSnapshot: CheckpointMixin._on_state_snapshot,
    ViewChange: ViewChangeMixin._on_view_change,
    NewView: ViewChangeMixin._on_new_view,
}
