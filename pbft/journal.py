"""What a replica must keep across a crash, worked out from its effects.

A driver calls :meth:`Journal.record` after every ``step`` with the effects it
returned, *before* it sends anything, and :meth:`Journal.load` after a
restart to get the :class:`~pbft.replica_recovery.DurableState` that
:meth:`Replica.recover <pbft.replica_recovery.RecoveryMixin.recover>` takes.

:func:`changes` is the one place that decides what is durable:

* messages the replica signed that bind it (PRE-PREPARE, PREPARE, COMMIT,
  CHECKPOINT, VIEW-CHANGE, NEW-VIEW), so it never contradicts them;
* prepared certificates and committed batches (from the ``Prepared`` and
  ``Committed`` notices), so it never forgets them;
* its view, the stable checkpoint with its proof, and the newest snapshot.

Everything at or below the stable checkpoint is discarded, as in the replica's
own log (§4.3). :class:`MemoryJournal` keeps it all in memory (for the
simulator's crash-and-restart); the Trio runtime's SQLite journal applies the
same :class:`JournalChanges` to a database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from pbft.events import Committed, Effect, Prepared, SendToReplicas
from pbft.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Signed,
    ViewChange,
)
from pbft.replica_recovery import DurableState

if TYPE_CHECKING:
    from pbft.replica import Replica

#: Signed messages that bind their sender.
BINDING_TYPES = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView)


def message_seq(message: Any) -> int | None:
    """The sequence number a binding message is about, or None (view-change messages)."""
    if type(message) in (PrePrepare, Prepare, Commit, Checkpoint):
        return message.seq
    return None


def is_stale_view_message(message: Any, view: int) -> bool:
    """A VIEW-CHANGE or NEW-VIEW for a view below the current one binds nothing any more."""
    if type(message) is ViewChange:
        return message.new_view < view
    if type(message) is NewView:
        return message.view < view
    return False


@attrs.frozen(slots=True)
class JournalChanges:
    view: int
    view_active: bool
    sent: tuple[Signed[Any], ...]
    certificates: tuple[PreparedCertificate, ...]
    committed: tuple[Signed[PrePrepare], ...]
    #: (seq, digest, proof) when the stable checkpoint moved; everything <= seq goes.
    stable: tuple[int, bytes, tuple[Signed[Checkpoint], ...]] | None
    #: (seq, state) when a newer checkpoint state is held.
    snapshot: tuple[int, bytes] | None


def changes(
    replica: Replica, effects: list[Effect], stable_seq: int, snapshot_seq: int
) -> JournalChanges:
    """What ``effects`` (one step's output) add to a journal at ``stable_seq``/``snapshot_seq``."""
    sent: list[Signed[Any]] = []
    certificates: list[PreparedCertificate] = []
    committed: list[Signed[PrePrepare]] = []
    for effect in effects:
        kind = type(effect)
        if kind is SendToReplicas:
            message = effect.message.message
            if type(message) in BINDING_TYPES and message.sender == replica.id:
                sent.append(effect.message)
        elif kind is Prepared:
            certificates.append(effect.certificate)
        elif kind is Committed:
            committed.append(effect.pre_prepare)
    stable = None
    if replica.low_watermark > stable_seq:
        stable = (replica.low_watermark, replica.stable_digest, replica.stable_proof)
    snapshot = None
    if replica.stable_snapshot is not None and replica.low_watermark > snapshot_seq:
        snapshot = (replica.low_watermark, replica.stable_snapshot)
    return JournalChanges(
        replica.view,
        replica.view_active,
        tuple(sent),
        tuple(certificates),
        tuple(committed),
        stable,
        snapshot,
    )


class MemoryJournal:
    """A journal kept in memory: survives a replica object, not a process."""

    def __init__(self) -> None:
        self._view = 0
        self._view_active = True
        self._stable: tuple[int, bytes, tuple[Signed[Checkpoint], ...]] = (0, b"", ())
        self._snapshot: tuple[int, bytes | None] = (0, None)
        self._sent: dict[bytes, Signed[Any]] = {}
        self._certificates: dict[int, PreparedCertificate] = {}
        self._committed: dict[int, Signed[PrePrepare]] = {}

    def record(self, replica: Replica, effects: list[Effect]) -> None:
        update = changes(replica, effects, self._stable[0], self._snapshot[0])
        for signed in update.sent:
            self._sent.setdefault(signed.payload, signed)
        for certificate in update.certificates:
            self._certificates[certificate.seq] = certificate
        for signed in update.committed:
            self._committed[signed.message.seq] = signed
        if update.stable is not None:
            self._stable = update.stable
            self._discard_up_to(update.stable[0])
        if update.snapshot is not None:
            self._snapshot = update.snapshot
        if update.view != self._view:
            self._sent = {
                key: signed
                for key, signed in self._sent.items()
                if not is_stale_view_message(signed.message, update.view)
            }
        self._view, self._view_active = update.view, update.view_active

    def _discard_up_to(self, seq: int) -> None:
        self._sent = {
            key: signed
            for key, signed in self._sent.items()
            if (message_seq(signed.message) or seq + 1) > seq
        }
        self._certificates = {n: c for n, c in self._certificates.items() if n > seq}
        self._committed = {n: c for n, c in self._committed.items() if n > seq}

    def load(self) -> DurableState:
        stable_seq, stable_digest, stable_proof = self._stable
        return DurableState(
            view=self._view,
            view_active=self._view_active,
            stable_seq=stable_seq,
            stable_digest=stable_digest,
            stable_proof=stable_proof,
            snapshot_seq=self._snapshot[0],
            snapshot=self._snapshot[1],
            sent=tuple(self._sent.values()),
            certificates=tuple(self._certificates.values()),
            committed=tuple(self._committed[n] for n in sorted(self._committed)),
        )
