"""Invariants checked after every step of every honest replica (TigerBeetle's habit).

The end-of-run checkers see only what was executed; these see the protocol's
state as it evolves, so a wrong rule shows up as soon as it takes effect, even
in a run whose executions happen to agree:

* **window**: every slot a replica keeps lies within its watermarks (h, h+L]
  (§4.2); a replica that accepted a message outside them breaks it at once;
* **one view per slot**: every PRE-PREPARE, PREPARE and COMMIT in a slot is of
  the replica's current view (slots are per view; §4.2, §4.4);
* **committed stays committed**: once an honest replica has a batch
  committed-local at sequence number n, no honest replica ever prepares another
  batch at n, in any later view (the heart of the safety proof, §4.5.1: 2f+1
  replicas prepared it, and every NEW-VIEW quorum contains one of them).
* **bounded stores**: every bounded store of a replica holds at most its
  bound in bytes (``Replica.store_bytes()[k] <= Replica.store_limits()[k]``,
  the bounds coming from the configuration): a faulty client or replica must
  not be able to pin memory. Measuring the stores walks them, so this check
  runs on every ``store_every``-th step of each replica (deterministically,
  by a per-replica step count), and only on cores that have the two methods.
* **checkable by every honest replica**: whatever an honest replica accepts
  as part of a certificate must convince any other honest replica. Each
  prepared certificate an honest replica forms (the ``Prepared`` notice) is
  checked again with an independent authenticator (``checker``, holding only
  the cluster's public keys), nested client signatures included: a
  certificate that would be dropped from the next VIEW-CHANGE by its peers
  is how an acknowledged write gets lost (issue 8, hole 1).
* **honest messages within their bounds**: every message an honest replica
  sends, and every VIEW-CHANGE it keeps for the next NEW-VIEW, is no bigger
  than the largest honest message of its type (:mod:`pbft.bounds`); one that
  is bigger carries an adversary's padding, and a NEW-VIEW built from it may
  outgrow the frame limit (issue 8, hole 2).
"""

from __future__ import annotations

from typing import Any

from pbft.certificates import certificate_is_valid
from pbft.events import Committed, Prepared, SendToClient, SendToReplicas


class StepInvariants:
    def __init__(
        self,
        faulty: set[int],
        log_window: int,
        limit: int = 5,
        store_every: int = 8,
        checker: tuple[Any, Any, Any] | None = None,
    ) -> None:
        #: (Authenticator, ClusterConfig, ProtocolParams) to re-check certificates with.
        self.checker = checker
        self.faulty = faulty
        self.log_window = log_window
        self.limit = limit
        self.store_every = store_every
        self.violations: list[str] = []
        self._committed: dict[int, tuple[int, bytes]] = {}
        self._steps: dict[int, int] = {}
        self._bounds: dict[int, dict[str, int]] = {}

    def _report(self, text: str) -> None:
        if len(self.violations) < self.limit:
            self.violations.append(text)

    def after_step(self, replica_id: int, node: Any, effects: list[Any]) -> None:
        if replica_id in self.faulty:
            return
        replica = getattr(node, "replica", node)
        steps = self._steps[replica_id] = self._steps.get(replica_id, 0) + 1
        if steps % self.store_every == 0 and hasattr(replica, "store_limits"):
            self._check_stores(replica_id, replica)
        low = replica.low_watermark
        high = low + self.log_window
        view = replica.view
        for seq, slot in replica.slots.items():
            if not low < seq <= high:
                self._report(
                    f"window: replica {replica_id} keeps seq {seq} outside ({low}, {high}]"
                )
            pre_prepare = slot.pre_prepare
            if pre_prepare is not None and pre_prepare.message.view != view:
                self._report_view(replica_id, view, seq, pre_prepare)
                continue
            for vote in (*slot.prepares.values(), *slot.commits.values()):
                if vote.message.view != view:
                    self._report_view(replica_id, view, seq, vote)
                    break
        for effect in effects:
            kind = type(effect)
            if kind is SendToReplicas or kind is SendToClient:
                self._check_sent(replica_id, replica, effect.message)
            elif kind is Committed:
                message = effect.pre_prepare.message
                self._committed.setdefault(message.seq, (replica_id, message.digest))
            elif kind is Prepared:
                certificate = effect.certificate
                if self.checker is not None:
                    self._check_checkable(replica_id, certificate)
                digest = certificate.pre_prepare.message.digest
                known = self._committed.get(certificate.seq)
                if known is not None and known[1] != digest:
                    self._report(
                        f"committed stays committed: seq {certificate.seq} committed at "
                        f"replica {known[0]} as {known[1].hex()[:16]}, prepared at replica "
                        f"{replica_id} in view {certificate.view} as {digest.hex()[:16]}"
                    )

    def _report_view(self, replica_id: int, view: int, seq: int, vote: Any) -> None:
        self._report(
            f"one view per slot: replica {replica_id} in view {view} "
            f"counts a {vote.message.TYPE} of view {vote.message.view} at seq {seq}"
        )

    def _check_checkable(self, replica_id: int, certificate: Any) -> None:
        assert self.checker is not None
        auth, config, params = self.checker
        if not certificate_is_valid(auth, config, params, certificate):
            self._report(
                f"checkable by every honest replica: replica {replica_id} prepared seq "
                f"{certificate.seq} in view {certificate.view} with a certificate another "
                f"honest replica refuses (a nested signature or the digest does not check)"
            )

    def _check_sent(self, replica_id: int, replica: Any, signed: Any) -> None:
        by_type = self._bounds.get(replica_id)
        if by_type is None:
            bounds = getattr(replica, "bounds", None)
            by_type = self._bounds[replica_id] = bounds.by_type() if bounds is not None else {}
        bound = by_type.get(signed.message.TYPE)
        if bound is not None and len(signed.payload) > bound:
            self._report(
                f"honest messages within their bounds: replica {replica_id} sent a "
                f"{signed.message.TYPE} of {len(signed.payload)} bytes, above the largest "
                f"honest one ({bound})"
            )

    def _check_stores(self, replica_id: int, replica: Any) -> None:
        bound = replica.bounds.view_change
        for by_sender in replica.view_changes.values():
            for sender, checked in by_sender.items():
                if len(checked.signed.payload) > bound:
                    self._report(
                        f"honest messages within their bounds: replica {replica_id} keeps a "
                        f"VIEW-CHANGE of {len(checked.signed.payload)} bytes from replica "
                        f"{sender}, above the largest honest one ({bound})"
                    )
        limits = replica.store_limits()
        for store, size in replica.store_bytes().items():
            bound = limits.get(store)
            if bound is not None and size > bound:
                self._report(
                    f"bounded stores: replica {replica_id} holds {size} bytes in {store}, "
                    f"above its bound of {bound}"
                )
