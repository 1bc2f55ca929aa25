"""Catching up on what committed while a replica was not listening (not in the paper).

A replica can miss the PREPAREs or COMMITs of a batch (lost, or it was down)
and hold later batches committed above the gap, or it can be alone in a view
change while the others go on committing in the view it left, dropping that
view's messages. Either way it would stay behind for as long as nothing else
brings it back, and with fast reads (every operation needing 2f+1 replies) a
client whose write needs its reply would wait for it:

* while something above ``last_executed`` is known but not executed, or while
  a view change is under way, the ``"catch-up"`` timer runs
  (:meth:`CatchUpMixin._watch_for_gaps`);
* when it fires with no progress in the period, the replica multicasts
  FETCH-COMMITTED for the seqs it does not hold committed (its whole window in
  a view change); peers answer with the COMMIT-CERTIFICATEs they hold in their
  window (:meth:`CatchUpMixin._on_fetch_committed`), each a PRE-PREPARE with
  2f+1 matching COMMITs, checked by
  :func:`pbft.certificates.commit_certificate_is_valid` before it executes;
* after two such periods with batches committed above the gap, the batch may
  lie below every peer's stable checkpoint, discarded there: it asks for the
  state at ``last_executed + 1`` (state transfer, :mod:`pbft.replica_checkpoints`).

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbft.certificates import commit_certificate_is_valid
from pbft.events import Committed, SetTimer
from pbft.messages import CommitCertificate, FetchCommitted, Signed

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object

CATCH_UP_TIMER = "catch-up"


class CatchUpMixin(_Base):
    def _highest_known_seq(self) -> int:
        return max(max(self.committed, default=0), max(self.slots, default=0))

    def _watch_for_gaps(self) -> None:
        """While something above last_executed is known but not executed (its messages
        may have been lost), or while we are changing views (the others may go on
        committing in the view we left, and we drop its messages), keep a timer that
        asks peers for proof (see _catch_up)."""
        if self._catching_up:
            return
        if not self.view_active or self._highest_known_seq() > self.last_executed:
            self._catching_up = True
            self._catch_up_mark = self.last_executed
            self._emit(SetTimer(CATCH_UP_TIMER, self.params.state_transfer_timeout_ticks))

    def _catch_up(self) -> None:
        """Ask for proof of what committed in a gap that did not fill by itself, or, in
        a view change, of whatever committed in our window: a replica that timed out
        alone would otherwise stay behind for as long as the others stay in their view
        (and clients that need 2f+1 replies, with fast reads, would wait for it)."""
        self._catching_up = False
        highest = self._highest_known_seq()
        if not self.view_active:
            highest = self.low_watermark + self.params.log_window
        stalled = self.last_executed == self._catch_up_mark  # no progress for a whole period
        if not stalled:
            self._stalled_periods = 0
        elif self.low_watermark <= self.last_executed < highest:
            missing = [seq for seq in range(self.last_executed + 1, highest + 1)
                       if seq not in self.committed]  # fmt: skip
            # last_executed + 1 is always missing: it would have executed otherwise.
            self._request_commit_certificates(missing[0], missing[-1])
            self._stalled_periods += 1
            ahead = max(self.committed, default=0) > self.last_executed
            if self._stalled_periods >= 2 and ahead and self.fetching is None:
                # Proven committed beyond a gap that two fetches did not fill: the batch
                # may lie below every peer's stable checkpoint, discarded there, and its
                # state is what they can still give us.
                self._start_state_transfer(self.last_executed + 1)
        self._watch_for_gaps()

    def _request_commit_certificates(self, first_seq: int, last_seq: int) -> None:
        if first_seq <= last_seq:
            self._broadcast(self._sign(FetchCommitted(first_seq, last_seq, self.id)))

    def _on_fetch_committed(self, signed: Signed[FetchCommitted]) -> str | None:
        """Send the commit certificates we hold in the requested range (within our window)."""
        request = signed.message
        first = max(request.first_seq, self.low_watermark + 1)
        last = min(request.last_seq, self.low_watermark + self.params.log_window)
        sent = False
        for seq in range(first, last + 1):
            certificate = self.commit_certificates.get(seq)
            if certificate is not None:
                # One a peer sent us names that peer: we sign it, so it must name us.
                ours = CommitCertificate(certificate.pre_prepare, certificate.commits, self.id)
                self._send((request.sender,), self._sign(ours))
                sent = True
        return None if sent else "nothing-to-serve"

    def _on_commit_certificate(self, signed: Signed[CommitCertificate]) -> str | None:
        """Execute a batch proven committed by a PRE-PREPARE and 2f+1 COMMITs."""
        certificate = signed.message
        seq = certificate.pre_prepare.message.seq
        reason = self._above_window(seq, certificate.sender)
        if reason is not None:
            return reason
        if not commit_certificate_is_valid(self.auth, self.config, self.params, certificate):
            return "invalid-commit-certificate"
        self._emit(Committed(certificate.pre_prepare))
        self.committed[seq] = certificate.pre_prepare.message
        self.commit_certificates[seq] = certificate
        self._execute_ready()
        return None
