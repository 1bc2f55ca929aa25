"""View changes (Castro & Liskov §4.4, TOCS §4.5).

A backup whose timer expires while it waits for a request moves to view v+1:
it stops accepting normal-case messages of v and multicasts VIEW-CHANGE with
its stable checkpoint, that checkpoint's proof, and a prepared certificate for
every request prepared above it. The primary of v+1 collects 2f+1 valid
VIEW-CHANGEs (its own included), computes O with
:func:`pbft.certificates.compute_new_view` and multicasts NEW-VIEW. A backup
accepts NEW-VIEW only after recomputing O itself from the VIEW-CHANGEs it
carries; a NEW-VIEW that differs is rejected.

Liveness (§4.5.2): a replica that sees f+1 VIEW-CHANGEs for views above its
own joins the smallest of them; a replica waiting for a NEW-VIEW moves on to
the next view when its timer expires and 2f+1 replicas are in this view
change or beyond, and each further view change doubles the timeout. While it
waits it re-sends its VIEW-CHANGE, so a lost message does not stall the
change, and a primary that already started the view re-sends its NEW-VIEW to
a replica still asking for it.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbft.certificates import (
    CheckedViewChange,
    NewViewPlan,
    check_view_change,
    compute_new_view,
    view_change_shape_defect,
)
from pbft.encoding import encode_message
from pbft.events import CancelTimer, NewViewEntered, SetTimer, ViewChangeStarted
from pbft.messages import NULL_DIGEST, NewView, PrePrepare, Signed, ViewChange

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object

#: Longest timeout, as a multiple of the base one, however many view changes fail.
_MAX_TIMEOUT_DOUBLINGS = 6


class ViewChangeMixin(_Base):
    # ---------------------------------------------------------------- starting

    def _start_view_change(self, new_view: int) -> None:
        """Move to ``new_view`` and multicast VIEW-CHANGE(v+1, n, C, P, i) (§4.4)."""
        if new_view <= self.view:
            return
        self.view = new_view
        self.view_active = False
        self.view_change_attempts += 1
        self.slots.clear()
        self.queue.clear()  # only a primary proposes, and we are in no view now
        self._timer_request = None
        self._prune_future_buffer()
        self._watch_for_gaps()
        prepared = tuple(
            certificate
            for seq, certificate in sorted(self.prepared_certificates.items())
            if seq > self.low_watermark
        )
        message = ViewChange(new_view, self.low_watermark, self.stable_proof, prepared, self.id)
        signed = self._sign(message)
        self._emit(ViewChangeStarted(new_view))
        # Wait for the NEW-VIEW with a timeout that doubles with each view change
        # that fails in a row (§4.5.2). The paper starts this timer only once 2f+1
        # VIEW-CHANGEs are in; with lossy links that can wait forever (the
        # replicas that moved on no longer send VIEW-CHANGEs for this view), so
        # the timer starts at once and the doubling keeps views from racing.
        self._emit(SetTimer("view-change", self._view_change_timeout()))
        self._emit(SetTimer("view-change-resend", self.params.view_change_timeout_ticks))
        self._broadcast(signed)
        checked = self._checked(signed)
        assert checked is not None, "a replica's own VIEW-CHANGE must be valid"
        self._record_view_change(checked)
        self._after_view_change_recorded(new_view)

    def _view_change_timer_expired(self) -> None:
        """A request waited too long (§4.4), or the NEW-VIEW did not come (§4.5.2).

        A replica waiting for the NEW-VIEW of v moves on to v+1 only when 2f+1
        replicas are known to be in view v or beyond; otherwise it keeps waiting
        (and re-sending its VIEW-CHANGE). This keeps a replica whose messages
        were lost from running ahead alone, and lets replicas left behind in v
        follow the ones that went on to v+1.
        """
        if self.view_active:
            self._start_view_change(self.view + 1)
        elif self._replicas_changing_to(self.view) >= self.config.quorum:
            self._start_view_change(self.view + 1)
        else:
            self._emit(SetTimer("view-change", self._view_change_timeout()))

    def _replicas_changing_to(self, view: int) -> int:
        """How many replicas sent a VIEW-CHANGE for ``view`` or a later view."""
        return sum(len(by_sender) for v, by_sender in self.view_changes.items() if v >= view)

    def _resend_view_change(self) -> None:
        """Re-send our VIEW-CHANGE while the view change is incomplete."""
        if self.view_active:
            return
        own = self.view_changes.get(self.view, {}).get(self.id)
        if own is not None:
            self._broadcast(own.signed)
        self._emit(SetTimer("view-change-resend", self.params.view_change_timeout_ticks))

    def _view_change_timeout(self) -> int:
        doublings = min(max(self.view_change_attempts - 1, 0), _MAX_TIMEOUT_DOUBLINGS)
        return self.params.view_change_timeout_ticks << doublings

    # --------------------------------------------------------------- receiving

    def _checked(self, signed: Signed[ViewChange]) -> CheckedViewChange | None:
        """Check a VIEW-CHANGE's content, or reuse the check of the very same bytes.

        A NEW-VIEW repeats VIEW-CHANGEs the backup has mostly received already:
        the one recorded for that sender and view is reused when its payload is
        byte-identical (no cache of its own, so nothing more to bound).
        """
        view_change = signed.message
        recorded = self.view_changes.get(view_change.new_view, {}).get(view_change.sender)
        if recorded is not None and recorded.signed.payload == signed.payload:
            return recorded
        return check_view_change(self.auth, self.config, self.params, signed)

    def _on_view_change(self, signed: Signed[ViewChange]) -> str | None:
        """§4.4: collect valid VIEW-CHANGEs for views not yet entered."""
        view_change = signed.message
        if view_change.new_view < self.view or (
            view_change.new_view == self.view and self.view_active
        ):
            if self.view_active:
                self._relay_new_view(view_change.sender)
            return "old-view"
        latest = self._latest_view_change_view(view_change.sender)
        if latest is not None and latest >= view_change.new_view:
            # One VIEW-CHANGE per sender counts, its highest: a sender going
            # back to lower views must not be counted twice.
            if latest > view_change.new_view:
                return "superseded"
            self._note_conflict(self.view_changes[latest][view_change.sender].signed, signed)
            return "duplicate"
        # The shape is checked apart so that a drop says what was wrong with it.
        defect = view_change_shape_defect(self.config, self.params, signed)
        if defect is not None:
            return defect
        checked = self._checked(signed)
        if checked is None:
            return "invalid-view-change"  # its checkpoint proof does not prove its stable seq
        self._record_view_change(checked)
        self._join_if_f_plus_one_ahead()
        self._after_view_change_recorded(view_change.new_view)
        return None

    def _relay_new_view(self, sender: int) -> None:
        """The sender is still changing to the view we entered: it missed the NEW-VIEW.

        Any replica may relay the NEW-VIEW, as it is signed by the new primary
        and proves itself. An honest replica re-sends its VIEW-CHANGE once per
        T, so one relay per sender per T is all it needs; a replayed VIEW-CHANGE
        must not buy a NEW-VIEW (up to a frame) each time it arrives.
        """
        if self.last_new_view is None or sender in self._new_view_relayed:
            return
        if not self._new_view_relayed:
            self._emit(SetTimer("new-view-relay", self.params.view_change_timeout_ticks))
        self._new_view_relayed.add(sender)
        self._send((sender,), self.last_new_view)

    def _latest_view_change_view(self, sender: int) -> int | None:
        for view, by_sender in self.view_changes.items():
            if sender in by_sender:
                return view
        return None

    def _record_view_change(self, checked: CheckedViewChange) -> None:
        """Keep each sender's VIEW-CHANGE for its highest view only (memory stays bounded)."""
        for view, by_sender in list(self.view_changes.items()):
            if view < checked.new_view and checked.sender in by_sender:
                del by_sender[checked.sender]
                if not by_sender:
                    del self.view_changes[view]
        self.view_changes.setdefault(checked.new_view, {})[checked.sender] = checked

    def _join_if_f_plus_one_ahead(self) -> None:
        """§4.5.2: on f+1 VIEW-CHANGEs for views above ours, join the smallest of them.

        One replica alone, however high the view it names, moves nobody.
        """
        ahead = sorted(
            view
            for view, by_sender in self.view_changes.items()
            if view > self.view
            for sender in by_sender
            if sender != self.id
        )
        if len(ahead) >= self.config.weak_quorum:
            self._start_view_change(ahead[0])

    def _after_view_change_recorded(self, view: int) -> None:
        if view != self.view or self.view_active:
            return
        self._maybe_send_new_view(view)

    # ------------------------------------------------------------- new primary

    def _maybe_send_new_view(self, view: int) -> None:
        """The primary of v+1 multicasts NEW-VIEW once it holds 2f+1 valid VIEW-CHANGEs."""
        if self.config.primary(view) != self.id or self.view != view or self.view_active:
            return
        collected = self.view_changes.get(view, {})
        if self.id not in collected or len(collected) < self.config.quorum:
            return
        others = [collected[sender] for sender in sorted(collected) if sender != self.id]
        chosen = [collected[self.id], *others[: self.config.quorum - 1]]
        plan = compute_new_view(self.config, view, chosen)
        pre_prepares = tuple(self._sign(pre_prepare) for pre_prepare in plan.pre_prepares)
        new_view = NewView(view, tuple(c.signed for c in chosen), pre_prepares, self.id)
        signed = self._sign(new_view)
        self.last_new_view = signed
        self._broadcast(signed)
        self._enter_view(view, plan, pre_prepares)

    # ---------------------------------------------------------------- backups

    def _on_new_view(self, signed: Signed[NewView]) -> str | None:
        """§4.4: accept NEW-VIEW only if V holds 2f+1 valid VIEW-CHANGEs for the view
        from distinct replicas and O is exactly what V yields."""
        new_view = signed.message  # of a view not yet entered, from its primary (_precheck)
        plan = self._verify_new_view(new_view)
        if plan is None:
            return "invalid-new-view"
        self.last_new_view = signed
        self._enter_view(new_view.view, plan, new_view.pre_prepares)
        return None

    def _verify_new_view(self, new_view: NewView) -> NewViewPlan | None:
        checked: list[CheckedViewChange] = []
        senders: set[int] = set()
        for signed in new_view.view_changes:
            view_change = signed.message
            if view_change.new_view != new_view.view or view_change.sender in senders:
                return None
            if self.auth.verify(signed) is not None:
                return None
            result = self._checked(signed)
            if result is None:
                return None
            senders.add(view_change.sender)
            checked.append(result)
        if len(checked) < self.config.quorum:
            return None
        plan = compute_new_view(self.config, new_view.view, checked)
        if len(plan.pre_prepares) != len(new_view.pre_prepares):
            return None
        for expected, signed in zip(plan.pre_prepares, new_view.pre_prepares, strict=True):
            # Byte for byte: decoded equality ignores the nested client signatures, so a
            # faulty new primary could re-sign O with junk ones (docs/protocol.md).
            if signed.payload != encode_message(expected) or self.auth.verify(signed):
                return None
        return plan

    # ---------------------------------------------------------- entering a view

    def _enter_view(
        self, view: int, plan: NewViewPlan, pre_prepares: tuple[Signed[PrePrepare], ...]
    ) -> None:
        """Start view v+1: adopt min-s, accept O's PRE-PREPAREs, resume the normal case."""
        self.view = view
        self.view_active = True
        self.slots.clear()
        self.assigned.clear()
        self._timer_request = None
        self._emit(CancelTimer("view-change"))
        self._emit(CancelTimer("view-change-resend"))
        self.view_changes = {v: s for v, s in self.view_changes.items() if v > view}
        if plan.min_seq > self.low_watermark:
            source = plan.checkpoint_source
            self._stabilize(plan.min_seq, source.stable_digest, source.checkpoint_proof)
        for signed in pre_prepares:
            if signed.message.seq > self.low_watermark:
                self._accept_pre_prepare(signed)
        reissued = sum(1 for pp in plan.pre_prepares if pp.digest != NULL_DIGEST)
        self._emit(NewViewEntered(view, reissued, len(plan.pre_prepares) - reissued))
        if self.primary == self.id:
            self.next_seq = max(plan.max_seq, self.low_watermark) + 1
            self.queue.clear()
            for client, request in self.pending.items():
                self.queue[client] = request
            self._propose()
        else:
            for request in self.pending.values():
                self._send((self.primary,), request)
        self._restart_request_timer()
        buffered = [signed for messages in self.future.values() for signed in messages]
        self.future = {}
        for signed in sorted(buffered, key=lambda signed: _view_of(signed)):
            self._dispatch(signed)
        self._execute_ready()


def _view_of(signed: Signed[object]) -> int:
    return signed.message.view  # type: ignore[attr-defined]
