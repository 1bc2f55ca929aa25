"""A PBFT client as a sans-IO state machine (Castro & Liskov §4.1).

The client signs REQUEST(o, t, c) with a timestamp above every one it used
before and sends it to the replica it believes is the primary. It accepts a
result once f+1 distinct replicas sent REPLYs with the same timestamp and
result: at least one of them is honest. If no such quorum arrives before the
retransmission timer fires, it sends the *same* request (same timestamp, so
replicas can execute it at most once) to every replica, and keeps doing so.

Retransmission timing. By default the timer is fixed (the paper's, and the
simulator's). Given ``max_retransmit_timeout_ticks`` above the base, the
client backs off so that an overloaded cluster is not flooded by its own
clients (a thundering herd of retransmissions to every replica, each of which
forwards them to the primary and starts a view-change timer):

* the first timeout adapts to the latency the driver observes
  (:meth:`Client.observe_latency`, Jacobson/Karels as in TCP: smoothed
  latency plus four times its mean deviation), never below the base;
* each later retransmission waits a *full jitter* exponential delay, uniform
  in [0, min(cap, timeout * 2**attempt)], so clients that timed out together
  do not retransmit together. The "random" draw is a hash of (client,
  timestamp, attempt): the core stays deterministic.

Digest replies (§5.1.1, ``ProtocolParams.digest_replies``): a replica other
than the request's designated replier sends a REPLY-DIGEST, the SHA-256 of
the result. Replies match by that digest (a full REPLY by the digest of its
result), and a result is accepted only when one full REPLY whose result has
the quorum's digest is at hand; if the designated replier stays silent, the
retransmission brings full replies from everyone.

Replies are checked for recipient, staleness and duplicates before their
signature: a reply that arrives after f+1 already agreed costs no verification.

Fast reads (§5.1.3, ``read_only`` given: ``ProtocolParams.fast_reads``). An
operation the service calls read-only goes out as a READ to every replica,
which executes it at once on its committed state and replies. The client needs
2f+1 matching replies; when it cannot get them (a concurrent write, a slow or
lying replica: as soon as the replies held can no longer reach 2f+1, or when
the timer fires) it falls back to an ordered REQUEST with the same timestamp.
For reads answered this way to be linearizable, *every* operation needs 2f+1
matching replies, writes included (Castro's condition): a completed write
then executed at f+1 honest replicas, and any 2f+1 replies include one of
them. So with fast reads on, the quorum is 2f+1 for everything.

Like a replica, a client takes events and returns effects; it has one
operation outstanding at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pbft.auth import Authenticator, Rejection
from pbft.config import ClusterConfig, ConfigError
from pbft.counters import Counters
from pbft.crypto import Signer, Verifier
from pbft.encoding import DEFAULT_MAX_MESSAGE_BYTES, decode_signed, encode_message
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
from pbft.messages import Read, Reply, ReplyDigest, Request, Signed, result_digest

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
        max_retransmit_timeout_ticks: int | None = None,
        signed_replies: bool = False,
        decoder: Callable[[bytes, int], Signed[Any]] = decode_signed,
        read_only: Callable[[bytes], bool] | None = None,
    ) -> None:
        if not 0 <= client_id < len(config.client_keys):
            raise ConfigError(f"client id {client_id} is not configured")
        if signer.public_key != config.client_keys[client_id]:
            raise ConfigError(f"the private key given does not belong to client {client_id}")
        if retransmit_timeout_ticks < 1:
            raise ConfigError("retransmit_timeout_ticks must be at least 1")
        cap = max_retransmit_timeout_ticks
        if cap is not None and cap < retransmit_timeout_ticks:
            raise ConfigError("max_retransmit_timeout_ticks must be at least the base timeout")
        self.id = client_id
        self.config = config
        # Unless replies are signed, a reply is authentic by its channel alone.
        self.signed_replies = signed_replies
        channel_types = () if signed_replies else (Reply, ReplyDigest)
        self.auth = Authenticator(
            config, signer, verifier, max_message_bytes, channel_types=channel_types,
            decoder=decoder,
        )  # fmt: skip
        self.counters = Counters()
        self.retransmit_timeout_ticks = retransmit_timeout_ticks
        self.max_retransmit_timeout_ticks = cap if cap is not None else retransmit_timeout_ticks
        #: Smoothed latency and its mean deviation, in ticks (None until observed).
        self.smoothed_latency: float | None = None
        self.latency_deviation = 0.0
        self.max_request_bytes = max_request_bytes
        self.view = 0
        self.timestamp = 0
        self.outstanding: Signed[Request] | Signed[Read] | None = None
        #: Which operations go out as fast READs (None: fast reads off).
        self.read_only = read_only
        #: Matching replies needed: f+1, or 2f+1 with fast reads (module docstring).
        self.reply_quorum = config.quorum if read_only is not None else config.weak_quorum
        #: READs that went the ordered way (the replies could not agree in time).
        self.read_fallbacks = 0
        #: sender -> (view, digest of the result, held in full?) of the replies to the
        #: outstanding request.
        self._replies: dict[int, tuple[int, bytes, bool]] = {}
        #: The results held in full, by digest (at most one per replying replica).
        self._results: dict[bytes, bytes] = {}
        self._attempt = 0
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
        fast = self.read_only is not None and self.read_only(event.operation)
        if fast and not self.signed_replies:
            # Point-to-point, never forwarded: the channel to each replica vouches for it.
            read = Read(self.id, timestamp, event.operation)
            request = Signed(read, b"", encode_message(read))
        else:
            request = self.auth.sign(
                (Read if fast else Request)(self.id, timestamp, event.operation)
            )
        if len(request.payload) > self.max_request_bytes:
            raise ValueError(
                f"the request takes {len(request.payload)} bytes; replicas accept at most "
                f"{self.max_request_bytes}"
            )
        self.timestamp = timestamp
        self.outstanding = request
        self._forget_replies()
        self._attempt = 0
        to = self._everyone if fast else (self.config.primary(self.view),)
        return [SendToReplicas(to, request), SetTimer(RETRANSMIT_TIMER, self.first_timeout_ticks())]

    # ------------------------------------------------------------ retransmission

    def observe_latency(self, ticks: float) -> None:
        """Tell the client how long a completed operation took (the driver's clock)."""
        if self.smoothed_latency is None:
            self.smoothed_latency, self.latency_deviation = ticks, ticks / 2
            return
        error = ticks - self.smoothed_latency
        self.latency_deviation += (abs(error) - self.latency_deviation) / 4
        self.smoothed_latency += error / 8

    def first_timeout_ticks(self) -> int:
        """The first retransmission's delay: the observed latency with margin, in bounds."""
        base, cap = self.retransmit_timeout_ticks, self.max_retransmit_timeout_ticks
        if self.smoothed_latency is None or cap == base:
            return base
        estimate = self.smoothed_latency + 4 * self.latency_deviation
        return int(min(cap, max(base, estimate)))

    def retransmit_delay_ticks(self, attempt: int) -> int:
        """Delay before retransmission ``attempt + 1``: full jitter, exponential, capped."""
        first, cap = self.first_timeout_ticks(), self.max_retransmit_timeout_ticks
        if cap == self.retransmit_timeout_ticks:
            return first  # a fixed timer
        ceiling = min(cap, first * 2 ** min(attempt, 32))
        assert self.outstanding is not None
        draw = hashlib.blake2b(
            b"%d|%d|%d" % (self.id, self.outstanding.message.timestamp, attempt), digest_size=8
        ).digest()
        return max(1, ceiling * int.from_bytes(draw, "big") // 2**64)

    def abandon(self) -> list[Effect]:
        """Give up on the outstanding operation (the application timed out).

        Its timestamp stays used: a later operation gets a higher one, so the
        abandoned request can execute at most once and never be confused with it.
        """
        self.outstanding = None
        self._forget_replies()
        return [CancelTimer(RETRANSMIT_TIMER)]

    def _retransmit(self, name: str) -> list[Effect]:
        if name != RETRANSMIT_TIMER or self.outstanding is None:
            return []
        self._attempt += 1
        if type(self.outstanding.message) is Read:
            return self._order_read()
        return self._send_to_everyone()

    def _order_read(self) -> list[Effect]:
        """Fall back from a READ to an ordered REQUEST with the same timestamp."""
        assert self.outstanding is not None
        read = self.outstanding.message
        self.outstanding = self.auth.sign(Request(self.id, read.timestamp, read.operation))
        self._forget_replies()
        self.read_fallbacks += 1
        return self._send_to_everyone()

    def _send_to_everyone(self) -> list[Effect]:
        """The outstanding request to every replica, and the next retransmission's timer."""
        assert self.outstanding is not None
        return [
            SendToReplicas(self._everyone, self.outstanding),
            SetTimer(RETRANSMIT_TIMER, self.retransmit_delay_ticks(self._attempt)),
        ]

    def replies_so_far(self) -> dict[int, bytes]:
        """Sender -> digest of its result, for the outstanding operation (to explain a timeout)."""
        return {sender: key for sender, (_, key, _) in self._replies.items()}

    def _forget_replies(self) -> None:
        self._replies = {}
        self._results = {}

    def _receive(self, event: Receive) -> list[Effect]:
        # Every check that needs no signature first: late and duplicate replies are
        # the common case once f+1 agreed, and cost nothing then.
        opened = self.auth.decode(event.data, (Reply, ReplyDigest), event.channel)
        if type(opened) is Rejection:
            return self._drop(opened.message_type, opened.reason)
        reply: Reply | ReplyDigest = opened.message
        if reply.client != self.id:
            return self._drop(reply.TYPE, "wrong-recipient")
        outstanding = self.outstanding
        if outstanding is None or reply.timestamp != outstanding.message.timestamp:
            return self._drop(reply.TYPE, "stale")
        held = self._replies.get(reply.sender)
        # One vote per replica; a digest may be followed by the full result (resent
        # for a retransmission), which is what a silent designated replier needs.
        if held is not None and (type(reply) is ReplyDigest or held[2]):
            return self._drop(reply.TYPE, "duplicate")
        reason = self.auth.verify(opened, event.channel)
        if reason is not None:
            return self._drop(reply.TYPE, reason)
        self.counters.accept(reply.TYPE)
        # A reply counts by the digest of its result, whether it carries the result
        # (digest replies, §5.1.1: only the designated replier does) or the digest.
        full = type(reply) is Reply
        if full:
            key = result_digest(reply.result)
            self._results.setdefault(key, reply.result)
        else:
            key = reply.result_digest
        self._replies[reply.sender] = (reply.view, key, full)
        agreeing = sorted((v for v, k, _ in self._replies.values() if k == key), reverse=True)
        result = self._full_result(key)
        if len(agreeing) < self.reply_quorum or result is None:
            if type(outstanding.message) is Read and not self._read_can_agree():
                return self._order_read()
            return []
        # f+1 (or 2f+1) matching replies: at least one honest replica vouches for
        # the result, and for a view at least as high as the (f+1)-th highest.
        self.view = max(self.view, agreeing[self.config.f])
        self.outstanding = None
        self._forget_replies()
        return [
            CancelTimer(RETRANSMIT_TIMER),
            Completed(reply.timestamp, outstanding.message.operation, result),
        ]

    def _full_result(self, key: bytes) -> bytes | None:
        """A result held in full whose digest is ``key`` (None: only digests so far)."""
        return self._results.get(key)

    def _read_can_agree(self) -> bool:
        """Whether the replies still to come could make 2f+1 match the READ."""
        counts: dict[bytes, int] = {}
        for _, key, _ in self._replies.values():
            counts[key] = counts.get(key, 0) + 1
        missing = self.config.n - len(self._replies)
        return max(counts.values()) + missing >= self.reply_quorum

    def _drop(self, message_type: str, reason: str) -> list[Any]:
        self.counters.drop(message_type, reason)
        return [Dropped(message_type, reason)]
