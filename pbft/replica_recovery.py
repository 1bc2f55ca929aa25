"""Recovering a replica after a crash, from what its driver kept on disk.

Restart amnesia breaks PBFT: a replica that forgets what it signed may sign a
contradicting PREPARE for the same (v, n), or rejoin a view it promised to
leave, and a replica that forgets its prepared certificates may leave them out
of its next VIEW-CHANGE, which is how committed requests get lost. So a
driver keeps, and hands back after a restart, a :class:`DurableState`:

* the current view, and whether the replica was between VIEW-CHANGE and
  NEW-VIEW;
* the stable checkpoint (sequence number, digest, proof) and the newest state
  snapshot it holds (which may be older than the stable checkpoint, if the
  replica was fetching state when it died);
* every message it signed and sent since the stable checkpoint;
* its prepared certificates and committed batches above the checkpoint.

:meth:`RecoveryMixin.recover` rebuilds the replica from them: it restores the
snapshot, re-executes the committed batches in order (execution is
deterministic, so the state comes back exactly), re-installs its own votes so
it never contradicts them, and resumes whatever it was doing (waiting for a
NEW-VIEW, fetching state). Drivers learn what to keep from the effects a
replica emits (sends and the Prepared, Committed, CheckpointStable, ...
notices) and must write them down *before* carrying the sends out.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import attrs

from pbft.events import Effect, Executed, SetTimer
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

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object


@attrs.frozen(slots=True)
class DurableState:
    view: int = 0
    view_active: bool = True
    stable_seq: int = 0
    stable_digest: bytes = b""
    stable_proof: tuple[Signed[Checkpoint], ...] = ()
    #: The newest checkpoint state held, and the sequence number it is at.
    snapshot_seq: int = 0
    snapshot: bytes | None = None
    sent: tuple[Signed[Any], ...] = ()
    certificates: tuple[PreparedCertificate, ...] = ()
    committed: tuple[Signed[PrePrepare], ...] = ()


class RecoveryMixin(_Base):
    def recover(self, state: DurableState) -> list[Effect]:
        """Rebuild a fresh replica from ``state``; return the effects to carry out.

        Call once, on a replica that has not stepped yet.
        """
        self._effects = effects = []
        if state.snapshot is not None and state.snapshot_seq > 0:
            self._restore(state.snapshot)
            self.last_executed = state.snapshot_seq
            self.own_checkpoints[state.snapshot_seq] = (
                _digest(state.snapshot),
                state.snapshot,
            )
        self.low_watermark = state.stable_seq
        self.stable_digest = state.stable_digest
        self.stable_proof = state.stable_proof
        self.stable_snapshot = state.snapshot if state.snapshot_seq == state.stable_seq else None
        self.view = state.view
        self.view_active = state.view_active
        for certificate in state.certificates:
            if certificate.seq > self.low_watermark:
                known = self.prepared_certificates.get(certificate.seq)
                if known is None or known.view <= certificate.view:
                    self.prepared_certificates[certificate.seq] = certificate
        for signed in state.sent:
            self._reinstall_sent(signed)
        for seq, certificate in self.prepared_certificates.items():
            if certificate.view == self.view and self.view_active:
                slot = self._slot(seq)
                slot.pre_prepare = certificate.pre_prepare
                for prepare in certificate.prepares:
                    slot.prepares.setdefault(prepare.message.sender, prepare)
                slot.prepared = True
        for signed in state.committed:
            seq = signed.message.seq
            if seq > self.last_executed:
                self.committed[seq] = signed.message
        self.next_seq = max(self.next_seq, self.low_watermark + 1)
        self._resend_votes()
        if self.last_executed < self.low_watermark:
            self._start_state_transfer(self.low_watermark)
        else:
            self._execute_ready()
        if not self.view_active:
            self._emit(SetTimer("view-change", self._view_change_timeout()))
            self._emit(SetTimer("view-change-resend", self.params.view_change_timeout_ticks))
            self._resend_view_change()
        self._effects = []
        # Re-executing the committed batches reproduces executions that were
        # already reported before the crash; report them once only.
        return [effect for effect in effects if type(effect) is not Executed]

    def _resend_votes(self) -> None:
        """Send again our votes for what has not executed: the crash may have come
        between writing them down and sending them (receivers drop duplicates)."""
        if not self.view_active:
            return
        for seq, slot in sorted(self.slots.items()):
            if seq <= self.last_executed:
                continue
            for vote in (slot.prepares.get(self.id), slot.commits.get(self.id)):
                if vote is not None:
                    self._broadcast(vote)

    def _reinstall_sent(self, signed: Signed[Any]) -> None:
        """Remember a vote we signed before the crash, so we never contradict it."""
        message = signed.message
        kind = type(message)
        if kind in (PrePrepare, Prepare, Commit):
            if message.view != self.view or message.seq <= self.low_watermark:
                return
            slot = self._slot(message.seq)
            if kind is PrePrepare:
                self._reinstall_pre_prepare(signed)
            elif kind is Prepare:
                slot.prepares[self.id] = signed
            else:
                slot.commits[self.id] = signed
        elif kind is Checkpoint:
            if message.seq > self.low_watermark:
                self.checkpoint_votes.setdefault(message.seq, {})[self.id] = signed
        elif kind is ViewChange:
            if message.new_view == self.view and not self.view_active:
                checked = self._checked(signed)
                if checked is not None:
                    self._record_view_change(checked)
        elif kind is NewView and message.view == self.view:
            # We were the new primary: O's PRE-PREPAREs are ours, and the next
            # sequence number we assign must come after them.
            self.last_new_view = signed
            for pre_prepare in message.pre_prepares:
                if pre_prepare.message.seq > self.low_watermark:
                    self._reinstall_pre_prepare(pre_prepare)

    def _reinstall_pre_prepare(self, signed: Signed[PrePrepare]) -> None:
        """A PRE-PREPARE we sent (alone or in O): its slot, the next sequence number
        after it, and its requests marked assigned, so that a retransmitted request
        is answered with it rather than proposed again (issue 8, hole 4)."""
        message = signed.message
        self._slot(message.seq).pre_prepare = signed
        self.next_seq = max(self.next_seq, message.seq + 1)
        for request in message.batch:
            self.assigned[(request.message.client, request.message.timestamp)] = message.seq


def _digest(snapshot: bytes) -> bytes:
    return hashlib.sha256(snapshot).digest()
