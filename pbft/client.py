"""A PBFT client as a sans-IO state machine (Castro & Liskov §4.1).

The client signs REQUEST(o, t, c) with a timestamp above every one it used
before and sends it to the replica it believes is the primary. It accepts a
result once f+1 distinct replicas sent REPLYs with the same timestamp and
result: at least one of them is honest. If no such quorum arrives before the
retransmission timer fires, it sends the *same* request (same timestamp, so
replicas can execute it at most once) to every replica, and keeps doing so.

Like a replica, a client takes events and returns effects; it has one
operation outstanding at a time.
"""

from __future__ import annotations

from typing import Any

from pbft.auth import Authenticator, Rejection
from pbft.config import ClusterConfig, ConfigError
from pbft.counters import Counters
from pbft.crypto import Signer, Verifier
from pbft.encoding import DEFAULT_MAX_MESSAGE_BYTES
from pbft.events import (
    CancelTimer,
    Completed,
    Dropped,
    Effect,
    Event,
    Invoke,
    Receive,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.messages import Reply, Request, Signed

RETRANSMIT_TIMER = "retransmit"


class ClientBusy(RuntimeError):
    """An operation was invoked while another is outstanding."""


class Client:
    """One PBFT client: ``step(event) -> list[Effect]``."""

    def __init__(
        self,
        client_id: int,
        config: ClusterConfig,
        signer: Signer,
        retransmit_timeout_ticks: int = 500,
        verifier: Verifier | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_request_bytes: int = 4096,
    ) -> None:
        if not 0 <= client_id < len(config.client_keys):
            raise ConfigError(f"client id {client_id} is not configured")
        if signer.public_key != config.client_keys[client_id]:
            raise ConfigError(f"the private key given does not belong to client {client_id}")
        if retransmit_timeout_ticks < 1:
            raise ConfigError("retransmit_timeout_ticks must be at least 1")
        self.id = client_id
        self.config = config
        self.auth = Authenticator(config, signer, verifier, max_message_bytes)
        self.counters = Counters()
        self.retransmit_timeout_ticks = retransmit_timeout_ticks
        self.max_request_bytes = max_request_bytes
        self.view = 0
        self.timestamp = 0
        self.outstanding: Signed[Request] | None = None
        self._replies: dict[int, Reply] = {}
        self._everyone = tuple(range(config.n))

    @property
    def busy(self) -> bool:
        return self.outstanding is not None

    def step(self, event: Event) -> list[Effect]:
        if type(event) is Invoke:
            return self._invoke(event)
        if type(event) is Receive:
            return self._receive(event)
        if type(event) is TimerFired:
            return self._retransmit(event.name)
        raise TypeError(f"a client does not take {type(event).__name__} events")

    def _invoke(self, event: Invoke) -> list[Effect]:
        if self.outstanding is not None:
            raise ClientBusy("a client has one operation outstanding at a time")
        timestamp = max(self.timestamp + 1, event.min_timestamp)
        request = self.auth.sign(Request(self.id, timestamp, event.operation))
        if len(request.payload) > self.max_request_bytes:
            raise ValueError(
                f"the request takes {len(request.payload)} bytes; replicas accept at most "
                f"{self.max_request_bytes}"
            )
        self.timestamp = timestamp
        self.outstanding = request
        self._replies = {}
        primary = self.config.primary(self.view)
        return [
            SendToReplicas((primary,), request),
            SetTimer(RETRANSMIT_TIMER, self.retransmit_timeout_ticks),
        ]

    def abandon(self) -> list[Effect]:
        """Give up on the outstanding operation (the application timed out).

        Its timestamp stays used: a later operation gets a higher one, so the
        abandoned request can execute at most once and never be confused with it.
        """
        self.outstanding = None
        self._replies = {}
        return [CancelTimer(RETRANSMIT_TIMER)]

    def _retransmit(self, name: str) -> list[Effect]:
        if name != RETRANSMIT_TIMER or self.outstanding is None:
            return []
        return [
            SendToReplicas(self._everyone, self.outstanding),
            SetTimer(RETRANSMIT_TIMER, self.retransmit_timeout_ticks),
        ]

    def _receive(self, event: Receive) -> list[Effect]:
        opened = self.auth.open(event.data, (Reply,), event.channel)
        if type(opened) is Rejection:
            return self._drop(opened.message_type, opened.reason)
        reply: Reply = opened.message
        if reply.client != self.id:
            return self._drop("REPLY", "wrong-recipient")
        outstanding = self.outstanding
        if outstanding is None or reply.timestamp != outstanding.message.timestamp:
            return self._drop("REPLY", "stale")
        if reply.sender in self._replies:
            return self._drop("REPLY", "duplicate")
        self.counters.accept("REPLY")
        self._replies[reply.sender] = reply
        agreeing = sorted(
            (other.view for other in self._replies.values() if other.result == reply.result),
            reverse=True,
        )
        if len(agreeing) < self.config.weak_quorum:
            return []
        # f+1 matching replies: at least one honest replica vouches for the
        # result, and for a view at least as high as the (f+1)-th highest.
        self.view = max(self.view, agreeing[self.config.f])
        self.outstanding = None
        self._replies = {}
        return [
            CancelTimer(RETRANSMIT_TIMER),
            Completed(reply.timestamp, outstanding.message.operation, reply.result),
        ]

    def _drop(self, message_type: str, reason: str) -> list[Any]:
        self.counters.drop(message_type, reason)
        return [Dropped(message_type, reason)]
