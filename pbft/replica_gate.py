"""Admission: what a replica refuses before spending a signature check, and the
buffer for messages of the next view.

A faulty client or replica can send anything it can sign, as often as it likes.
Verifying a signature is the most expensive thing a replica does with a
message, and keeping one is what pins memory, so both come last:

1. :meth:`GateMixin._precheck` refuses, on the message's fields alone (no
   crypto, no state change), whatever no honest sender sends or no honest
   receiver may use: a message bigger than its type's bound
   (:mod:`pbft.bounds`), a message claiming to be our own, a normal-case
   message of an old view, of a view beyond the next, or below the low
   watermark, a PRE-PREPARE or NEW-VIEW not from the primary of its view, a
   PREPARE from the primary, a CHECKPOINT off the checkpoint grid or below
   h, a commit certificate for what we executed already.
2. Only then is the signature verified (:meth:`pbft.auth.Authenticator.verify`).
3. The handler decides; a normal-case message of the next view (or of the
   view being changed into) is kept in :attr:`future` by
   :meth:`GateMixin._view_gate` until its NEW-VIEW arrives.

Messages replayed from the buffer go through step 1 again, as the view or
the watermark may have moved meanwhile.

The future buffer is bounded per sender, in messages and in bytes (a share
of ``future_buffer_messages`` and ``future_buffer_bytes``, but never less
than one largest PRE-PREPARE), so one faulty replica cannot crowd out the
others, and it takes only what the sender is entitled to send in that view.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PrePrepare,
    Read,
    Request,
    Signed,
)

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object

#: A handler's verdict for a message kept until its view starts.
BUFFERED = "buffered"


class GateMixin(_Base):
    def _precheck(self, signed: Signed[Any]) -> str | None:
        """The cheap reason to refuse ``signed`` before its signature is checked, or None."""
        message = signed.message
        kind = type(message)
        bound = self._payload_bounds.get(kind)
        if bound is not None and len(signed.payload) > bound:
            return "request-too-large" if kind is Request else "too-large"
        if kind is Request or kind is Read:
            return None
        if message.sender == self.id:
            return "own-message"
        if kind is PrePrepare or kind is Prepare or kind is Commit:
            reason = self._precheck_view(message.view, message.seq)
            if reason is not None:
                return reason
            primary = self.config.primary(message.view)
            if kind is PrePrepare and message.sender != primary:
                return "not-primary"
            if kind is Prepare and message.sender == primary:
                return "prepare-from-primary"
            return None
        if kind is Checkpoint:
            if message.seq % self.params.checkpoint_interval:
                return "not-a-checkpoint-seq"
            return "stale" if message.seq <= self.low_watermark else None
        if kind is NewView:
            if message.view < self.view or (message.view == self.view and self.view_active):
                return "old-view"
            return "not-primary" if message.sender != self.config.primary(message.view) else None
        if kind is CommitCertificate:
            seq = message.pre_prepare.message.seq
            if seq <= self.last_executed or seq in self.committed or seq <= self.low_watermark:
                return "stale"
        return None

    def _precheck_view(self, view: int, seq: int) -> str | None:
        """A normal-case message counts only in the current view or, buffered, the next
        one (§4.2, §4.4), and only above the low watermark."""
        if view < self.view:
            return "old-view"
        if view > self.view + 1:
            # A replica this far behind catches up through NEW-VIEW and checkpoints.
            return "future-view"
        if seq <= self.low_watermark:
            return "stale"
        return None

    def _view_gate(self, signed: Signed[Any], view: int) -> str | None:
        """Pass a message of the current, active view; keep one of the next view.

        :meth:`_precheck_view` let only the current and the next view through. A
        message of the next view (or of the view being changed into, before its
        NEW-VIEW) is kept and replayed when that view starts; it is never
        processed in the current view.
        """
        if view == self.view and self.view_active:
            return None
        sender = signed.message.sender
        messages = self.future.setdefault(sender, [])
        held = sum(len(kept.payload) for kept in messages)
        if (
            len(messages) >= self.params.future_buffer_messages // self.config.n
            or held + len(signed.payload) > self._future_share_bytes
        ):
            return "future-view-buffer-full"
        if any(kept.payload == signed.payload for kept in messages):
            return "duplicate"
        messages.append(signed)
        if self.view_active and view == self.view + 1:
            self._follow_next_view()
        return BUFFERED

    def _follow_next_view(self) -> None:
        """f+1 replicas work in view v+1 while we work in v: ask for its NEW-VIEW.

        One of them at least is correct, so v+1 started (its NEW-VIEW was sent) and we
        missed it, as a replica does that restarts from its journal after the others
        changed view: nobody sends VIEW-CHANGEs for v+1 any more, and clients send to
        the new primary only, so no timer of ours would ever fire. Our VIEW-CHANGE for
        v+1 makes the replicas in v+1 relay their NEW-VIEW (``_relay_new_view``).
        """
        senders = sum(
            any(kept.message.view == self.view + 1 for kept in messages)
            for messages in self.future.values()
        )
        if senders >= self.config.weak_quorum:
            self._start_view_change(self.view + 1)

    @property
    def _future_share_bytes(self) -> int:
        """Bytes of next-view messages kept per sender."""
        share = self.params.future_buffer_bytes // self.config.n
        return max(share, self.bounds.pre_prepare)

    def _prune_future_buffer(self) -> None:
        for sender, messages in list(self.future.items()):
            kept = [signed for signed in messages if signed.message.view >= self.view]
            if kept:
                self.future[sender] = kept
            else:
                del self.future[sender]
