"""Checkpoints, garbage collection and state transfer (Castro & Liskov §4.3).

Every K sequence numbers a replica digests its state (the service plus the
client table) and multicasts CHECKPOINT(n, d, i). 2f+1 matching CHECKPOINTs
from distinct replicas make the checkpoint *stable*; that set is its proof.
The low watermark h moves to n and everything at or below n is discarded, so
a replica's log never holds more than the window L above h.

A replica that learns of a stable checkpoint it has not reached (it was cut
off, or restarted) cannot execute the discarded entries; it fetches the state
from its peers and accepts it only if its digest is the one the 2f+1
signatures prove.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgpack

from pbft.certificates import checkpoint_proof_digest
from pbft.events import CancelTimer, CheckpointStable, SetTimer, StateTransferred
from pbft.messages import Checkpoint, FetchState, Signed, StateSnapshot

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object


class CheckpointMixin(_Base):
    def _take_checkpoint(self, seq: int) -> None:
        """After executing n = K, 2K, ...: digest the state and multicast CHECKPOINT."""
        snapshot = self.checkpoint_state()
        digest = hashlib.sha256(snapshot).digest()
        self.own_checkpoints[seq] = (digest, snapshot)
        signed = self._sign(Checkpoint(seq, digest, self.id))
        self._broadcast(signed)
        self._record_checkpoint(signed)

    def _on_checkpoint(self, signed: Signed[Checkpoint]) -> str | None:
        """§4.3: collect CHECKPOINTs above h; 2f+1 matching ones make it stable.

        Checkpoints are accepted in any view, including during a view change.
        """
        checkpoint = signed.message  # on the grid of K and above h (GateMixin._precheck)
        if checkpoint.seq > self.low_watermark + self.params.log_window:
            self._note_ahead(checkpoint.sender)
        return self._record_checkpoint(signed)

    def _record_checkpoint(self, signed: Signed[Checkpoint]) -> str | None:
        checkpoint = signed.message
        votes = self.checkpoint_votes.setdefault(checkpoint.seq, {})
        held = votes.get(checkpoint.sender)
        if held is not None:
            self._note_conflict(held, signed)
            return "duplicate"
        votes[checkpoint.sender] = signed
        self._bound_checkpoint_votes(checkpoint.sender)
        matching = sorted(
            (
                vote
                for vote in votes.values()
                if vote.message.state_digest == checkpoint.state_digest
            ),
            key=lambda vote: vote.message.sender,
        )
        if len(matching) >= self.config.quorum:
            proof = tuple(matching[: self.config.quorum])
            self._stabilize(checkpoint.seq, checkpoint.state_digest, proof)
        return None

    def _bound_checkpoint_votes(self, sender: int) -> None:
        """Keep a sender's votes for a few checkpoints only, so a liar cannot fill memory.

        An honest replica's checkpoints only move forward, so its newest votes
        are the ones that can still become stable.
        """
        limit = self.params.log_window // self.params.checkpoint_interval + 2
        seqs = sorted(seq for seq, votes in self.checkpoint_votes.items() if sender in votes)
        for seq in seqs[: max(0, len(seqs) - limit)]:
            votes = self.checkpoint_votes[seq]
            del votes[sender]
            if not votes:
                del self.checkpoint_votes[seq]

    def _stabilize(self, seq: int, digest: bytes, proof: tuple[Signed[Checkpoint], ...]) -> None:
        """Make checkpoint ``seq`` stable: move h, discard the log below, catch up if behind."""
        if seq <= self.low_watermark:
            return
        self.low_watermark = seq
        self.stable_digest = digest
        self.stable_proof = proof
        own = self.own_checkpoints.get(seq)
        self.stable_snapshot = own[1] if own is not None and own[0] == digest else None
        self._collect_garbage(seq)
        self._emit(CheckpointStable(seq, digest))
        self.ahead_senders.clear()
        if self.last_executed < seq:
            self._start_state_transfer(seq)
        if self.is_primary:
            self.next_seq = max(self.next_seq, seq + 1)
            self._propose()

    def _collect_garbage(self, seq: int) -> None:
        """§4.3: discard all messages and certificates with sequence numbers <= n."""
        self.slots = {n: slot for n, slot in self.slots.items() if n > seq}
        self.prepared_certificates = {
            n: cert for n, cert in self.prepared_certificates.items() if n > seq
        }
        self.committed = {n: batch for n, batch in self.committed.items() if n > seq}
        self.commit_certificates = {
            n: cert for n, cert in self.commit_certificates.items() if n > seq
        }
        self.own_checkpoints = {n: own for n, own in self.own_checkpoints.items() if n > seq}
        self.checkpoint_votes = {n: votes for n, votes in self.checkpoint_votes.items() if n > seq}
        self.assigned = {key: n for key, n in self.assigned.items() if n > seq}

    # ---------------------------------------------------------- state transfer

    def _start_state_transfer(self, seq: int) -> None:
        """Ask every peer for the state at a stable checkpoint of at least ``seq``."""
        self.fetching = seq
        self._broadcast(self._sign(FetchState(seq, self.id)))
        self._emit(SetTimer("state-transfer", self.params.state_transfer_timeout_ticks))

    def _stop_state_transfer(self) -> None:
        """We reached the state we were fetching by executing: no transfer needed."""
        self.fetching = None
        self._emit(CancelTimer("state-transfer"))

    def _retry_state_transfer(self) -> None:
        if self.fetching is not None:
            self._start_state_transfer(self.fetching)

    def _note_ahead(self, sender: int) -> None:
        """A peer used a sequence number above our window. Once f+1 peers have, at
        least one honest replica is ahead of us, past a stable checkpoint we missed
        (we were cut off, or restarted): fetch it, with its proof."""
        if self.fetching is not None:
            return
        self.ahead_senders.add(sender)
        if len(self.ahead_senders) >= self.config.weak_quorum:
            self.ahead_senders.clear()
            self._start_state_transfer(self.low_watermark + 1)

    def _on_fetch_state(self, signed: Signed[FetchState]) -> str | None:
        """Serve the state at our stable checkpoint, with its proof, to a replica behind."""
        request = signed.message
        if self.stable_snapshot is None or self.low_watermark == 0:
            return "no-state-to-serve"
        if self.low_watermark < request.seq:
            return "no-state-to-serve"
        snapshot = StateSnapshot(
            self.low_watermark, self.stable_snapshot, self.stable_proof, self.id
        )
        self._send((request.sender,), self._sign(snapshot))
        return None

    def _on_state_snapshot(self, signed: Signed[StateSnapshot]) -> str | None:
        """Accept a state only if its digest is proven by 2f+1 CHECKPOINT signatures."""
        state = signed.message
        if self.fetching is None:
            return "unsolicited"
        if state.seq < self.fetching or state.seq <= self.last_executed:
            return "stale"
        digest = hashlib.sha256(state.snapshot).digest()
        proven = checkpoint_proof_digest(self.auth, self.config, state.seq, state.checkpoint_proof)
        if proven is None or proven != digest:
            return "bad-proof"
        try:
            self._restore(state.snapshot)
        except ValueError:
            return "bad-snapshot"
        self.last_executed = state.seq
        self.own_checkpoints[state.seq] = (digest, state.snapshot)
        self._stop_state_transfer()
        if state.seq > self.low_watermark:
            self._stabilize(state.seq, digest, state.checkpoint_proof)
        else:
            self.stable_snapshot = state.snapshot
        self.committed = {n: batch for n, batch in self.committed.items() if n > state.seq}
        self._emit(StateTransferred(state.seq))
        for client, (timestamp, _) in self.client_table.items():
            waiting = self.pending.get(client)
            if waiting is not None and waiting.message.timestamp <= timestamp:
                del self.pending[client]
                self.queue.pop(client, None)
        self._restart_request_timer()
        # Peers may have committed past the state we fetched while we fetched it.
        self._request_commit_certificates(state.seq + 1, state.seq + self.params.log_window)
        self._execute_ready()
        return None

    def _restore(self, snapshot: bytes) -> None:
        """Install a checkpoint state (service and client table); ValueError if malformed."""
        try:
            service_snapshot, table = msgpack.unpackb(snapshot, raw=False)
            client_table: dict[int, tuple[int, bytes]] = {
                int(client): (int(timestamp), bytes(result)) for client, timestamp, result in table
            }
        except Exception as error:  # any defect in the bytes means "not a state"
            raise ValueError(f"malformed state snapshot: {error}") from None
        self.service.restore(service_snapshot)
        self.client_table = client_table
