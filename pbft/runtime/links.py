"""Connections between nodes: one send-only link per peer out, one reader per connection in.

Theory of operation
-------------------
Each node *dials* one :class:`PeerLink` per peer and uses it only to send;
it *accepts* connections from every peer and only reads from them (with one
exception, below). So between two replicas there are two TCP connections,
one per direction, and each side owns the one it writes on: there is no
race over who dials whom, and a link's only job is to move frames out.

A :class:`PeerLink` is a bounded queue in front of a connection
(:class:`~pbft.runtime.queues.FrameQueue`: ``queue_frames`` frames and
``queue_bytes`` bytes, :func:`pbft.runtime.limits.link_queue_bytes` for a
replica). :meth:`PeerLink.send_nowait` never blocks the protocol: when the
queue is full, in frames or in bytes, the frame is dropped and counted, so a
slow or faulty peer pins at most ``queue_bytes`` of our memory. Dropping is
correct for PBFT because the protocol already tolerates lost messages
(retransmission, view changes and state transfer recover).
:meth:`PeerLink.run` is a loop of sessions::

    connect -> dial_handshake -> [ write batches  |  watch for close ] -> close -> back off

While connected, the writer waits for one queued frame, then takes every
frame already queued (up to :data:`BATCH_MAX_FRAMES` / :data:`BATCH_MAX_BYTES`)
and writes them with one ``send_all`` (coalesced writes). A second task reads
from the connection: a send-only link should never receive anything, so the
peer closing the connection is noticed at once instead of at the next write,
and any bytes that do arrive are a protocol violation that ends the session.
Frames queued while disconnected wait in the queue; frames in the batch being
written when the connection broke are lost.

Reconnection uses :class:`Backoff`, exponential backoff with *full jitter*
(AWS Architecture Blog, "Exponential Backoff and Jitter"): the n-th retry
sleeps ``uniform(0, min(cap, base * 2**n))``, which spreads the reconnection
storm after a replica restarts. Every failure counts: a refused connect, a
failed handshake (an acceptor that refuses as ``busy`` asks for exactly this,
:mod:`pbft.runtime.handshake_slots`) and a session that ended. Only a session
that lasted :data:`STABLE_SESSION_SECONDS` proves the peer is up again and
resets the backoff, so a peer that accepts and drops connections in a loop is
not re-dialled ever faster.

:func:`serve_connection` is the acceptor side of one connection: handshake,
then every frame is handed to ``on_frame`` with the identity the peer
*proved*, never one it claims in a frame. The exception to "accepted
connections are read-only": a client cannot accept connections, so replicas
send REPLYs back over the client's own connection; ``on_connect`` hands the
:class:`FramedStream` to the node for that, and its sends are safe while this
function reads. A misbehaving peer only ever loses its own connection.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from pbft.config import ClusterConfig
from pbft.crypto import Signer, Verifier, make_verifier
from pbft.runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    ConnectionClosed,
    FramedStream,
    FrameError,
)
from pbft.runtime.handshake import (
    REPLICA,
    HandshakeError,
    Identity,
    accept_handshake,
    check_member,
    dial_handshake,
    format_identity,
)
from pbft.runtime.handshake_slots import HandshakeSlots
from pbft.runtime.queues import FrameQueue

logger = logging.getLogger("pbft.runtime.transport")

#: Most frames written by one coalesced ``send_all``.
BATCH_MAX_FRAMES = 512
#: A batch stops growing once it holds this many bytes (one frame may exceed it alone).
BATCH_MAX_BYTES = 1024 * 1024
#: How long a TCP connect may take before it counts as a failure.
CONNECT_TIMEOUT_SECONDS = 5.0
#: A session that lasted this long proves the peer is up again: the backoff starts over.
STABLE_SESSION_SECONDS = 1.0

#: Everything a connection can fail with because of the network or the peer.
_CONNECTION_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    FrameError,
    ConnectionClosed,
)

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]


class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**n)]."""

    def __init__(
        self,
        base_seconds: float = 0.05,
        cap_seconds: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base_seconds <= cap_seconds:
            raise ValueError("backoff needs 0 < base_seconds <= cap_seconds")
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling_seconds(self) -> float:
        """The largest delay the next call to :meth:`next_delay` may return."""
        return min(self.cap_seconds, self.base_seconds * 2**self.attempt)

    def next_delay(self) -> float:
        """The time to sleep before the next retry; each call doubles the ceiling up to the cap."""
        ceiling = self.ceiling_seconds()
        # Stop counting once the cap is reached, so 2**attempt never grows without bound.
        if ceiling < self.cap_seconds:
            self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """Start again from the base delay (after a success)."""
        self.attempt = 0


@attrs.frozen
class LinkStatistics:
    """A snapshot of one :class:`PeerLink`."""

    #: True while a handshaken connection is up.
    connected: bool
    #: Frames waiting in the queue.
    frames_queued: int
    #: Bytes of the frames waiting in the queue (at most the link's ``queue_bytes``).
    bytes_queued: int
    #: Frames handed to the operating system (not necessarily delivered).
    frames_sent: int
    #: Frames dropped because the queue was full, in frames or in bytes.
    frames_dropped: int
    #: Connections that completed the handshake.
    connects: int
    #: Failed connects and handshakes, and sessions that ended.
    failures: int


class PeerLink:
    """The outgoing, send-only connection from this node (``me``) to one ``peer`` replica."""

    def __init__(
        self,
        config: ClusterConfig,
        me: Identity,
        signer: Signer,
        peer: Identity,
        address: tuple[str, int],
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        queue_frames: int = 10_000,
        queue_bytes: int | None = None,
        backoff: Backoff | None = None,
        connect: Connect = trio.open_tcp_stream,
        verifier: Verifier | None = None,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        on_handshake_failure: Callable[[HandshakeError], None] | None = None,
    ) -> None:
        check_member(config, me, "me")
        check_member(config, peer, "peer")
        if peer[0] != "replica":
            raise ValueError(f"links go to replicas, not to {format_identity(peer)}")
        self.config = config
        self.me = me
        self.peer = peer
        self.address = address
        self.max_frame_bytes = max_frame_bytes
        self._signer = signer
        self._verifier = verifier or make_verifier(config.scheme)
        self._backoff = backoff or Backoff()
        self._connect = connect
        self._connect_timeout_seconds = connect_timeout_seconds
        #: Told of every failed handshake (the node's metrics count them by reason).
        self._on_handshake_failure = on_handshake_failure
        # By default room for two frames of the limit; a replica passes link_queue_bytes.
        self._queue = FrameQueue(queue_frames, queue_bytes or 2 * max_frame_bytes)
        self._connected = False
        self._frames_sent = 0
        self._connects = 0
        self._failures = 0

    def __repr__(self) -> str:
        return f"PeerLink({format_identity(self.me)} -> {format_identity(self.peer)})"

    def send_nowait(self, frame: bytes) -> bool:
        """Queue ``frame`` for the peer; never blocks.

        Returns False, and counts the frame as dropped, when the queue is full
        in frames or in bytes.
        """
        if len(frame) > self.max_frame_bytes:
            raise ValueError(
                f"refusing to queue a frame of {len(frame)} bytes: "
                f"the limit is {self.max_frame_bytes}"
            )
        return self._queue.put_nowait(frame)

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            connected=self._connected,
            frames_queued=self._queue.frames_queued,
            bytes_queued=self._queue.bytes_queued,
            frames_sent=self._frames_sent,
            frames_dropped=self._queue.frames_dropped,
            connects=self._connects,
            failures=self._failures,
        )

    async def run(self) -> None:
        """Keep a connection to the peer and write queued frames to it, until cancelled."""
        while True:
            framed = await self._establish()
            started = trio.current_time()
            try:
                await self._session(framed)
            finally:
                self._connected = False
                await trio.aclose_forcefully(framed)
            self._failures += 1
            if trio.current_time() - started >= STABLE_SESSION_SECONDS:
                self._backoff.reset()
            await trio.sleep(self._backoff.next_delay())

    async def _establish(self) -> FramedStream:
        """Connect and handshake, retrying with backoff until both succeed."""
        while True:
            framed = await self._try_establish()
            if framed is not None:
                self._connects += 1
                self._connected = True
                return framed
            self._failures += 1
            await trio.sleep(self._backoff.next_delay())

    async def _try_establish(self) -> FramedStream | None:
        host, port = self.address
        try:
            with trio.fail_after(self._connect_timeout_seconds):
                stream = await self._connect(host, port)
        except (OSError, trio.TooSlowError) as error:
            logger.debug("%r: cannot connect to %s:%d: %s", self, host, port, error)
            return None
        framed = FramedStream(stream, self.max_frame_bytes)
        try:
            await dial_handshake(
                framed, self.config, self.me, self._signer, self.peer, self._verifier
            )
        except HandshakeError as error:
            logger.debug("%r: handshake failed: %s", self, error)
            if self._on_handshake_failure is not None:
                self._on_handshake_failure(error)
            await trio.aclose_forcefully(framed)
            return None
        except BaseException:
            await trio.aclose_forcefully(framed)
            raise
        return framed

    async def _session(self, framed: FramedStream) -> None:
        """Write until the connection breaks or the watcher sees it close.

        Connection errors are handled inside the nursery, by the task that meets
        them: an error leaving a nursery arrives wrapped in an exception group
        (Trio's strict exception groups), where ``except`` would not see it.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_for_close, framed, nursery.cancel_scope)
            try:
                await self._write_batches(framed)
            except _CONNECTION_ERRORS as error:
                logger.debug("%r: connection lost: %s", self, error)
                nursery.cancel_scope.cancel()

    async def _write_batches(self, framed: FramedStream) -> None:
        while True:
            batch = await self._queue.get_batch(BATCH_MAX_FRAMES, BATCH_MAX_BYTES)
            await framed.send_frames(batch)
            self._frames_sent += len(batch)

    async def _watch_for_close(self, framed: FramedStream, session: trio.CancelScope) -> None:
        """End the session as soon as the peer closes the connection or sends anything."""
        try:
            await framed.receive_frame()
            reason = "the peer sent a frame on a send-only link"
        except ConnectionClosed:
            reason = "the peer closed the connection"
        except _CONNECTION_ERRORS as error:
            reason = f"the connection failed: {error}"
        logger.debug("%r: %s", self, reason)
        session.cancel()


async def serve_connection(
    stream: trio.abc.Stream,
    config: ClusterConfig,
    me: Identity,
    signer: Signer,
    on_frame: Callable[[Identity, bytes], None],
    on_connect: Callable[[Identity, FramedStream], None] | None = None,
    on_disconnect: Callable[[Identity], None] | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    verifier: Verifier | None = None,
    on_frames: Callable[[Identity, list[bytes]], None] | None = None,
    admit: Callable[[Identity], Awaitable[None]] | None = None,
    on_handshake_failure: Callable[[HandshakeError], None] | None = None,
    slots: HandshakeSlots | None = None,
    host: str = "unknown",
    max_client_frame_bytes: int | None = None,
) -> None:
    """Serve one accepted connection: handshake, then hand every frame to ``on_frame``.

    Given ``on_frames``, frames are handed over in bursts instead: every frame
    that one read of the socket completed, in order
    (:meth:`~pbft.runtime.framing.FramedStream.receive_frames`).

    Given ``admit``, each burst (or frame) is handed over only once
    ``admit(identity)`` returns; meanwhile the connection is not read, so the
    peer's further frames wait in the socket buffers (backpressure, never a
    drop: :mod:`pbft.runtime.admission`). ``on_handshake_failure`` is told of
    a handshake that failed (the node's metrics count them by reason). Given
    ``slots``, the handshake waits for none: beyond the caps it is refused as
    busy (:mod:`pbft.runtime.handshake_slots`; ``host`` is the peer's address).
    Given ``max_client_frame_bytes``, a dialer that proved to be a client may
    send frames of at most that many bytes (its REQUESTs and READs:
    :func:`pbft.runtime.limits.client_frame_bytes`), not ``max_frame_bytes``;
    a larger one ends the connection before its body is read.

    Returns when the connection ends, for whatever reason the peer or the
    network caused; the stream is always closed. Errors raised by the
    callbacks are local bugs and do propagate.
    """
    framed = FramedStream(stream, max_frame_bytes)
    dialer: Identity | None = None
    try:
        dialer = await accept_handshake(
            framed, config, me, signer, verifier, slots=slots, host=host
        )
        logger.debug("%s: %s connected", format_identity(me), format_identity(dialer))
        limit = max_frame_bytes
        if max_client_frame_bytes is not None and dialer[0] != REPLICA:
            limit = min(limit, max_client_frame_bytes)
        if on_connect is not None:
            on_connect(dialer, framed)
        if on_frames is not None:
            while True:
                frames = await framed.receive_frames(max_frame_bytes=limit)
                if admit is not None:
                    await admit(dialer)
                on_frames(dialer, frames)
        while True:
            frame = await framed.receive_frame(limit)
            if admit is not None:
                await admit(dialer)
            on_frame(dialer, frame)
    except (HandshakeError, *_CONNECTION_ERRORS) as error:
        peer = "an unauthenticated peer" if dialer is None else format_identity(dialer)
        logger.debug("%s: dropping the connection of %s: %s", format_identity(me), peer, error)
        if dialer is None and isinstance(error, HandshakeError) and on_handshake_failure:
            on_handshake_failure(error)
    finally:
        try:
            await trio.aclose_forcefully(framed)
        finally:
            if dialer is not None and on_disconnect is not None:
                on_disconnect(dialer)
