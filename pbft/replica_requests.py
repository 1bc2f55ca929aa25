"""Client requests at a replica: admission, relays, replies (Castro & Liskov §4.1, §5.1.3).

A client sends REQUEST(o, t, c) signed; the replica executes each (client,
timestamp) at most once and answers a request it already executed with the
cached reply. A backup relays a new request to the primary and starts its
view-change timer (§4.4); the primary queues it for a PRE-PREPARE
(:mod:`pbft.replica_normal`). A client has one request outstanding, so
``pending`` holds at most one per client. Copies of one request (a client's
retransmissions, or a faulty client's flood) are answered at most once per
period (``_resend_allowed``). READs (§5.1.3) execute at once on committed state.

This is a mixin of :class:`pbft.replica.Replica`; it shares the replica's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbft.encoding import encode_message
from pbft.events import CancelTimer, SendToClient, SetTimer
from pbft.messages import (
    Read,
    Reply,
    ReplyDigest,
    Request,
    Signed,
    designated_replier,
    result_digest,
)

if TYPE_CHECKING:
    from pbft.replica import Replica

    _Base = Replica
else:
    _Base = object

#: The view-change timer (§4.4): runs while a request waits at a backup.
VIEW_CHANGE_TIMER = "view-change"
#: Ends a period of request relays and PRE-PREPARE resends (``_resend_allowed``).
REQUEST_RESEND_TIMER = "request-resend"


class RequestsMixin(_Base):
    def _on_request(self, signed: Signed[Request]) -> str | None:
        """§4.1: execute each (client, timestamp) at most once; resend the last reply.

        A backup forwards a new request to the primary and starts its view
        change timer; the primary queues it for a PRE-PREPARE.
        """
        request = signed.message
        if len(signed.payload) > self.params.max_request_bytes:
            return "request-too-large"
        last = self.client_table.get(request.client)
        if last is not None and request.timestamp <= last[0]:
            if request.timestamp == last[0]:
                if self._resend_allowed(self._replied, request.client, request.timestamp):
                    self._send_reply(request.client, request.timestamp, last[1], resent=True)
                return None
            return "stale-timestamp"
        waiting = self.pending.get(request.client)
        if waiting is not None and waiting.message.timestamp > request.timestamp:
            return "stale-timestamp"
        is_new = waiting is None or waiting.message.timestamp < request.timestamp
        if is_new:
            # Clients have one request outstanding at a time (§4.1), so a newer
            # timestamp replaces an older one and memory stays bounded.
            self.pending[request.client] = signed
        if not self.view_active:
            return None
        if self.primary == self.id:
            key = (request.client, request.timestamp)
            seq = self.assigned.get(key)
            if seq is not None:
                if self._resend_allowed(self._resent, seq, self.view):
                    self._resend_pre_prepare(seq)
            elif is_new:
                self.queue[request.client] = signed
                self._propose()
        elif self._resend_allowed(self._relayed, request.client, (self.view, request.timestamp)):
            self._send((self.primary,), signed)
        self._start_request_timer(request)
        return None

    def _on_read(self, signed: Signed[Read]) -> str | None:
        """§5.1.3: execute a read-only operation at once and reply; never ordered.

        Only committed batches are ever executed here, so the state read is a
        committed prefix; the client's 2f+1 matching replies do the rest (see
        :mod:`pbft.client`). The client table is left alone: the timestamp may
        yet be ordered as a REQUEST, when the replies do not agree.
        """
        read = signed.message
        if not self.service.is_read_only(read.operation):
            return "not-read-only"
        self._send_reply(read.client, read.timestamp, self.service.execute(read.operation))
        return None

    def _start_request_timer(self, request: Request) -> None:
        """Start the view-change timer if it is not running (§4.4)."""
        if self._timer_request is None and self.view_active:
            self._timer_request = (request.client, request.timestamp)
            self._emit(SetTimer(VIEW_CHANGE_TIMER, self._view_change_timeout()))

    def _restart_request_timer(self) -> None:
        """Stop the timer when nothing waits; restart it for the next waiting request."""
        if not self.view_active:
            return
        self._timer_request = None
        oldest = next(iter(self.pending.values()), None)
        if oldest is None:
            self._emit(CancelTimer(VIEW_CHANGE_TIMER))
        else:
            self._start_request_timer(oldest.message)

    def _resend_allowed(self, sent: dict[Any, Any], key: Any, value: Any) -> bool:
        """Whether to answer a copy of a request again: once per key and period.

        A client's retransmission (§4.1: it re-sends the same request to every
        replica) asks a backup to relay it to the primary again and the primary to
        resend its PRE-PREPARE, in case a message was lost. A faulty client can send
        copies as fast as it likes; each would cost a message to the primary, or a
        PRE-PREPARE of up to ``batch_size`` requests to every backup; a copy of an
        executed request, the whole cached REPLY (and anyone holding the signed request,
        a faulty replica too, could aim those at the client). So each is
        answered at most once per period of ``view_change_timeout_ticks // 4`` (an
        honest client's first retransmission comes ``retransmit_timeout_ticks``,
        500 by default, after its request). A new request, or one in a new view,
        differs from what was recorded and is always answered.
        """
        if sent.get(key) == value:
            return False
        if not (self._relayed or self._resent or self._replied):
            period = max(1, self.params.view_change_timeout_ticks // 4)
            self._emit(SetTimer(REQUEST_RESEND_TIMER, period))
        sent[key] = value
        return True

    def _resend_pre_prepare(self, seq: int) -> None:
        slot = self.slots.get(seq)
        if slot is not None and slot.pre_prepare is not None and seq > self.last_executed:
            self._broadcast(slot.pre_prepare)

    def _send_reply(self, client: int, timestamp: int, result: bytes, resent: bool = False) -> None:
        message: Reply | ReplyDigest = Reply(self.view, timestamp, client, self.id, result)
        if (
            self.params.digest_replies
            and not resent
            and designated_replier(client, timestamp, self.config.n) != self.id
        ):
            message = ReplyDigest(self.view, timestamp, client, self.id, result_digest(result))
        if self.params.signed_replies:
            reply = self._sign(message)
        else:  # point-to-point: the channel's MAC authenticates it (pbft.auth)
            reply = Signed(message, b"", encode_message(message))
        self._emit(SendToClient(client, reply))
