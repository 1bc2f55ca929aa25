"""What a replica holds, in bytes, and the bound the configuration sets on each store.

The Byzantine model is "anything a faulty node can sign", sent as often as it
likes: every store a peer can add to must be bounded in bytes, with a bound
that follows from the configuration (:mod:`pbft.bounds`), or one faulty
client or replica could pin memory. :meth:`StoresMixin.store_bytes` measures
each store (the signed payloads it keeps, which is what an adversary chooses)
and :meth:`StoresMixin.store_limits` gives its bound; the simulator checks
``store_bytes()[k] <= store_limits()[k]`` after replicas' steps as an
invariant (:mod:`faults.verification.invariants`), and the runtime reports both.

Why each bound holds (n replicas, c clients, window L, K, q = quorum):

* ``pending``: one request per client, the newest (§4.1): c largest REQUESTs.
* ``slots``: slots exist only inside (h, h+L], and each holds one PRE-PREPARE
  and one PREPARE and one COMMIT per replica (keyed by sender).
* ``certificates``: one prepared and one commit certificate per seq in the window.
* ``committed``: batches committed and not yet executed, inside the window.
* ``checkpoints``: votes for at most L/K + 2 checkpoints per sender.
* ``future``: the next view's messages, an n-th share of
  ``future_buffer_bytes`` per sender (at least one largest PRE-PREPARE).
* ``view_changes``: one VIEW-CHANGE per sender, its highest (pbft.bounds).
* ``new_view``: the NEW-VIEW that started the view.
* ``evidence``: one proof (two messages) per sender and phase.
* ``verified_cache``: 32 bytes per remembered signature check.

Not bounded here, because the service decides their size rather than any
peer: the service's state, its checkpoint snapshots and the last result kept
per client.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pbft.auth import VERIFIED_ENTRY_BYTES
from pbft.messages import Signed

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object


def _payloads(signed: Iterable[Signed[Any] | None]) -> int:
    return sum(len(s.payload) for s in signed if s is not None)


def _batch_bytes(pre_prepare: Any) -> int:
    return sum(len(request.payload) for request in pre_prepare.batch)


class StoresMixin(_Base):
    def store_bytes(self) -> dict[str, int]:
        """Bytes held by each store an authenticated peer can add to."""
        slots = 0
        for slot in self.slots.values():
            slots += _payloads((slot.pre_prepare,))
            slots += _payloads(slot.prepares.values()) + _payloads(slot.commits.values())
        certificates = 0
        for certificate in self.prepared_certificates.values():
            certificates += _payloads((certificate.pre_prepare, *certificate.prepares))
        for commit_certificate in self.commit_certificates.values():
            proof = (commit_certificate.pre_prepare, *commit_certificate.commits)
            certificates += _payloads(proof)
        return {
            "pending": _payloads(self.pending.values()),
            "slots": slots,
            "certificates": certificates,
            "committed": sum(_batch_bytes(batch) for batch in self.committed.values()),
            "checkpoints": sum(_payloads(v.values()) for v in self.checkpoint_votes.values()),
            "future": sum(_payloads(messages) for messages in self.future.values()),
            "view_changes": sum(
                len(checked.signed.payload)
                for by_sender in self.view_changes.values()
                for checked in by_sender.values()
            ),
            "new_view": _payloads((self.last_new_view,)),
            "evidence": sum(_payloads((e.first, e.second)) for e in self.evidence.values()),
            "verified_cache": self.auth.cache_bytes(),
        }

    def store_limits(self) -> dict[str, int]:
        """The bound on each store of :meth:`store_bytes`, from the configuration."""
        bounds, n, window = self.bounds, self.config.n, self.params.log_window
        clients = len(self.config.client_keys)
        checkpoints_per_sender = window // self.params.checkpoint_interval + 2
        per_sender_evidence = 2 * (
            bounds.pre_prepare + 2 * bounds.vote + bounds.checkpoint + bounds.view_change
        )
        return {
            "pending": clients * bounds.request,
            "slots": window * (bounds.pre_prepare + 2 * n * bounds.vote),
            "certificates": window * (bounds.certificate + bounds.commit_certificate),
            "committed": window * bounds.pre_prepare,
            "checkpoints": n * checkpoints_per_sender * bounds.checkpoint,
            "future": n * self._future_share_bytes,
            "view_changes": n * bounds.view_change,
            "new_view": bounds.new_view,
            "evidence": n * per_sender_evidence,
            "verified_cache": self.params.verified_cache_entries * VERIFIED_ENTRY_BYTES,
        }
