"""The normal case: PRE-PREPARE, PREPARE, COMMIT, execution (Castro & Liskov §4.2).

The primary assigns sequence numbers in the window (h, h+L] to batches of
queued requests and multicasts PRE-PREPARE; a backup accepts one PRE-PREPARE
per (view, seq) and multicasts PREPARE. A PRE-PREPARE and 2f matching PREPAREs
from distinct backups make the batch *prepared*; the replica multicasts COMMIT,
and 2f+1 matching COMMITs make it *committed-local*. Committed batches execute
strictly in sequence order, each (client, timestamp) at most once.

A :class:`Slot` per sequence number holds the accepted PRE-PREPARE and the
PREPAREs and COMMITs received, keyed by sender so that quorums count distinct
replicas.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbft.certificates import pre_prepare_is_well_formed
from pbft.events import Committed, Executed, Prepared
from pbft.messages import (
    Commit,
    CommitCertificate,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    Signed,
    batch_digest,
)

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object


class Slot:
    """What a replica knows about one sequence number in the current view."""

    __slots__ = ("commits", "committed", "pre_prepare", "prepared", "prepares")

    def __init__(self) -> None:
        self.pre_prepare: Signed[PrePrepare] | None = None
        self.prepares: dict[int, Signed[Prepare]] = {}
        self.commits: dict[int, Signed[Commit]] = {}
        self.prepared = False
        self.committed = False


class NormalCaseMixin(_Base):
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
