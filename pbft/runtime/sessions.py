"""A replica's accepted connections: one live connection per principal, clients within their share.

Theory of operation
-------------------
Each accepted connection is served in its own task (:func:`pbft.runtime.links.serve_connection`)
inside a :class:`Session`: its cancel scope, and once the handshake has proved who
dialled, the identity. :class:`Sessions` keeps the live session of every identity:

* **one connection per principal.** When an identity authenticates again (a client
  reconnecting, or a faulty one dialling over and over), the older session's scope is
  cancelled: its task stops reading, closes the socket and frees its connection slot.
  The newest connection wins, because an honest peer reconnects only when it lost the
  old one. So a principal pins at most one connection, one read buffer and one task,
  whatever it dials: the clients of the configuration and the n - 1 peer replicas bound
  what authenticated peers hold;
* **the client share.** An authenticated client is admitted only within
  :attr:`ConnectionSlots.client_share <pbft.runtime.descriptors.ConnectionSlots.client_share>`;
  beyond it the connection is closed at once (logged ``connection-refused`` with reason
  ``client-share-full``), so clients never take the slots reserved for replicas. A client
  replacing its own older connection takes over that connection's place in the share;
* **replies.** A client cannot accept connections, so its REPLYs travel back over its own
  connection: each client session has a bounded :class:`~pbft.runtime.queues.FrameQueue`
  drained by a writer task; a client that does not read loses replies, never the
  replica's time.

Every method runs on the node's Trio thread between awaits, so the tables need no lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from pbft.runtime.descriptors import ConnectionSlots
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import Identity
from pbft.runtime.limits import CLIENT_QUEUE_FRAMES
from pbft.runtime.queues import FrameQueue
from pbft.runtime.ratelimit import RejectionLog, peer_host

#: A batch of REPLYs written to a client with one ``send_all``: frames, bytes.
REPLY_BATCH_FRAMES = 256
REPLY_BATCH_BYTES = 1024 * 1024


@attrs.define(eq=False)
class Session:
    """One accepted connection, from accept to close."""

    #: The peer's host, as the log names it before the handshake.
    address: str
    #: Cancelled to end the connection (a newer one of the same principal, or refused).
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: Who the handshake proved; None until then.
    identity: Identity | None = None
    #: REPLYs waiting for a client; None for a replica.
    replies: FrameQueue | None = None
    framed: FramedStream | None = None
    #: Counted in the client share (released when the session ends).
    counted: bool = False


class Sessions:
    """The live connection of each principal, and the REPLY queue of each client."""

    def __init__(
        self,
        slots: ConnectionSlots,
        rejections: RejectionLog,
        client_queue_bytes: int,
    ) -> None:
        self.slots = slots
        self.rejections = rejections
        self.client_queue_bytes = client_queue_bytes
        #: Where the REPLY writers run (the node's, set when it starts).
        self.nursery: trio.Nursery | None = None
        #: The live session of each authenticated identity.
        self.live: dict[Identity, Session] = {}
        #: Client index -> its live session, while its writer runs.
        self.clients: dict[int, Session] = {}
        #: TCP connections accepted so far (every attempt that reached us).
        self.accepted = 0
        #: Older connections closed because their principal authenticated again.
        self.replaced = 0

    async def serve(
        self,
        stream: trio.abc.Stream,
        serve: Callable[[trio.abc.Stream, Session], Awaitable[None]],
    ) -> None:
        """Serve one accepted ``stream`` with ``serve`` in a session, within the slots."""
        session = Session(peer_host(stream))  # now: a failed connection may no longer say
        self.accepted += 1
        if not self.slots.acquire():
            self.rejections.refused(session.address, "too-many-connections")
            await trio.aclose_forcefully(stream)
            return
        try:
            with session.scope:
                await serve(stream, session)
        finally:
            if session.counted:
                self.slots.release_client()
            self.slots.release()

    def connected(self, session: Session, identity: Identity, framed: FramedStream) -> None:
        """``session`` proved to be ``identity``: it replaces that identity's older session."""
        session.identity = identity
        role, principal = identity
        previous = self.live.get(identity)
        if role == "client":
            if previous is not None and previous.counted:
                previous.counted, session.counted = False, True  # takes over its place
            elif self.slots.admit_client():
                session.counted = True
            else:
                self.rejections.refused(session.address, "client-share-full")
                session.scope.cancel()
                return
        if previous is not None:
            previous.scope.cancel()
            self.replaced += 1
        self.live[identity] = session
        self.rejections.connection("connected", identity)
        if role == "client":
            if previous is not None and previous.replies is not None:
                previous.replies.close()
            session.framed = framed
            session.replies = FrameQueue(CLIENT_QUEUE_FRAMES, self.client_queue_bytes)
            self.clients[principal] = session
            assert self.nursery is not None
            self.nursery.start_soon(self._write_to_client, session)

    def disconnected(self, session: Session, identity: Identity) -> None:
        """``session``'s connection ended (closed by either side, or replaced)."""
        if self.live.get(identity) is not session:
            return  # refused at the client share, or replaced: its successor is live
        del self.live[identity]
        self.rejections.connection("disconnected", identity)
        if session.replies is not None:
            session.replies.close()  # its writer task ends and forgets the connection

    def send_to_client(self, client: int, frame: bytes) -> None:
        """Queue a REPLY for ``client``'s live connection; dropped when none or full."""
        session = self.clients.get(client)
        if session is not None and session.replies is not None:
            # A client that does not read loses replies (dropped, counted), never our time.
            session.replies.put_nowait(frame)
        # Not connected: the client retransmits and gets the cached reply.

    async def _write_to_client(self, session: Session) -> None:
        assert session.framed is not None and session.replies is not None
        try:
            while True:
                batch = await session.replies.get_batch(REPLY_BATCH_FRAMES, REPLY_BATCH_BYTES)
                await session.framed.send_frames(batch)
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        assert session.identity is not None
        if self.clients.get(session.identity[1]) is session:
            del self.clients[session.identity[1]]
