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

This module holds the replica's state, :meth:`Replica.step` and the timers.
Client requests and replies (§4.1) are in :mod:`pbft.replica_requests`; the
normal case (§4.2) in :mod:`pbft.replica_normal`; checkpoints and state
transfer (§4.3) in :mod:`pbft.replica_checkpoints`; view changes (§4.4) in
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
)
from pbft.config import ClusterConfig, ConfigError, ProtocolParams
from pbft.counters import Counters
from pbft.crypto import Signer, Verifier
from pbft.encoding import decode_signed
from pbft.events import (
    Dropped,
    Effect,
    EquivocationDetected,
    Event,
    Receive,
    SendToReplicas,
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
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
)
from pbft.replica_catch_up import CATCH_UP_TIMER, CatchUpMixin
from pbft.replica_checkpoints import CheckpointMixin
from pbft.replica_gate import BUFFERED, GateMixin
from pbft.replica_normal import NormalCaseMixin, Slot
from pbft.replica_recovery import RecoveryMixin
from pbft.replica_requests import REQUEST_RESEND_TIMER, VIEW_CHANGE_TIMER, RequestsMixin
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

VIEW_CHANGE_RESEND_TIMER = "view-change-resend"
STATE_TRANSFER_TIMER = "state-transfer"
NEW_VIEW_RELAY_TIMER = "new-view-relay"


class Replica(
    GateMixin,
    StoresMixin,
    RequestsMixin,
    NormalCaseMixin,
    CheckpointMixin,
    CatchUpMixin,
    ViewChangeMixin,
    RecoveryMixin,
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
        #: Copies of requests relayed (client -> (view, timestamp)), PRE-PREPAREs resent
        #: (seq -> view) and cached REPLYs resent (client -> timestamp) since the
        #: "request-resend" timer last fired: one each per period, whatever number of
        #: copies arrive (at most one entry per client, and per sequence number assigned
        #: in the window or during the period).
        self._relayed: dict[int, tuple[int, int]] = {}
        self._resent: dict[int, int] = {}
        self._replied: dict[int, int] = {}

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
            self._replied.clear()

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
