"""Hostile input at one replica's socket: every way a stranger or a faulty client can misuse TCP.

The protocol traitors (:mod:`.byzantine`, :mod:`.clients`) speak PBFT; these speak to
the transport, below it: they open connections to one replica's listening port and
send it what no honest node ever sends. Each kind of attack is a loop that runs until
cancelled and counts every hostile input it tries in :attr:`SocketAttacker.sent`
(one per connection for the connection-level kinds, one per frame after a valid
handshake):

* before any handshake: ``random-bytes``; ``truncated-prefix`` (1 to 3 bytes of a
  length, then close); ``oversized-prefix`` (a length far above the handshake's
  limit); ``slow-loris`` (a frame announced, then a byte every half second);
* the handshake stopped at each step: ``stop-after-connect``, ``stop-after-hello``,
  ``stop-after-welcome`` (held open until the replica gives up on them);
  ``outsider-key`` (a complete handshake as a configured client, proved with a key
  outside the configuration) and ``unknown-principal`` (a HELLO from a client the
  configuration does not list);
* after a valid handshake with a configured client's key (a Byzantine client can
  sign anything): ``malformed-message`` (:func:`.wire.corrupt` of a valid REQUEST),
  ``bad-signature``, ``replay`` (one old valid REQUEST again and again),
  ``outsider-signed`` (a REQUEST signed by a key outside the configuration),
  ``oversized-frame`` and ``bad-mac`` (framing broken after the handshake);
* ``connection-flood``: ``connections`` connections held open at once, each
  reopened as soon as the replica closes it.

A replica keeps one authenticated connection per principal, and a new one replaces the
old, so the kinds that need a valid handshake (:data:`SESSION_KINDS`) evict each other.
Their workers are shared: each session plays the kind that has delivered in the fewest
sessions so far, so on a loaded machine no kind goes without a delivered frame (with a
worker per kind, ``malformed-message`` once delivered none in a CI run).

:attr:`SocketAttacker.open_connections` and :attr:`~SocketAttacker.peak_connections`
count the attacker's sockets that are connected and not yet closed by the replica.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgpack
import trio

from faults.traitors.wire import corrupt
from pbft.auth import Authenticator
from pbft.config import ClusterConfig
from pbft.crypto import Ed25519Signer, Signer
from pbft.encoding import encode_signed
from pbft.messages import Request, Signed
from pbft.runtime.channel import TAG_BYTES, EphemeralKey
from pbft.runtime.framing import HEADER_BYTES, FramedStream
from pbft.runtime.handshake import (
    HANDSHAKE_MAX_FRAME_BYTES,
    HANDSHAKE_VERSION,
    HELLO_TAG,
    NONCE_BYTES,
    HandshakeError,
    dial_handshake,
)
from pbft.service import put

#: What the attacker meets when the replica closes a connection on it.
_HUNG_UP = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError)

CONNECTION_KINDS = (
    "random-bytes", "truncated-prefix", "oversized-prefix", "slow-loris",
    "stop-after-connect", "stop-after-hello", "stop-after-welcome",
    "outsider-key", "unknown-principal", "oversized-frame", "bad-mac",
)  # fmt: skip
MESSAGE_KINDS = ("malformed-message", "bad-signature", "replay", "outsider-signed")
KINDS = (*CONNECTION_KINDS, *MESSAGE_KINDS, "connection-flood")
#: The kinds that need a valid handshake as the configured client: they take turns.
SESSION_KINDS = ("oversized-frame", "bad-mac", *MESSAGE_KINDS)
#: Frames of one kind written together after a valid handshake.
FRAMES_PER_BURST = 32
#: The longest a held connection waits for the replica to close it.
HOLD_SECONDS = 30.0
#: The size :func:`.wire.corrupt` builds an oversized message to (bytes).
MALFORMED_MAX_BYTES = 4096
#: Slow loris sends one byte this often.
DRIP_SECONDS = 0.5


class SocketAttacker:
    """Attacks the replica ``target`` of ``config``; ``client``/``signer``: a configured client."""

    def __init__(
        self,
        config: ClusterConfig,
        address: tuple[str, int],
        target: int,
        client: int,
        signer: Signer,
        *,
        max_frame_bytes: int,
        connections: int = 2000,
        workers_per_kind: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.address = address
        self.target = ("replica", target)
        self.client = client
        self.signer = signer
        self.max_frame_bytes = max_frame_bytes
        self.connections = connections
        self.workers_per_kind = workers_per_kind
        self.rng = rng or random.Random(0)
        self.auth = Authenticator(config, signer)
        self.outsider = Ed25519Signer.generate()
        #: Hostile inputs tried, by kind.
        self.sent: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.open_connections = 0
        self.peak_connections = 0
        #: Connections the replica refused outright (connect failed, e.g. out of descriptors).
        self.connect_failures = 0
        self._timestamp = 1 << 40
        self._old_request = self._request()
        #: Per session kind: sessions that delivered hostile input, and sessions tried.
        self._delivered: dict[str, int] = dict.fromkeys(SESSION_KINDS, 0)
        self._tried: dict[str, int] = dict.fromkeys(SESSION_KINDS, 0)
        self._session_kinds: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    async def run(self, kinds: tuple[str, ...] = KINDS) -> None:
        """Run every kind in ``kinds`` at once until cancelled."""
        attacks: dict[str, Callable[[], Awaitable[None]]] = {
            kind: getattr(self, "_" + kind.replace("-", "_")) for kind in kinds
        }
        self._session_kinds = tuple(kind for kind in kinds if kind in SESSION_KINDS)
        async with trio.open_nursery() as nursery:
            for kind, attack in attacks.items():
                if kind == "connection-flood":
                    for _ in range(self.connections):
                        nursery.start_soon(self._forever, kind, self._connection_flood)
                elif kind not in SESSION_KINDS:
                    for _ in range(self.workers_per_kind):
                        nursery.start_soon(self._forever, kind, attack)
            for _ in range(self.workers_per_kind * len(self._session_kinds)):
                nursery.start_soon(self._forever, "session", self._next_session)

    async def _forever(self, kind: str, attack: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await attack()
            except* _HUNG_UP:
                pass  # the replica hung up on us: what it should do
            await trio.sleep(0.01 if kind == "connection-flood" else 0)

    # ---------------------------------------------------------------- connections

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[trio.SocketStream]:
        try:
            stream = await trio.open_tcp_stream(*self.address)
        except OSError:
            self.connect_failures += 1
            await trio.sleep(0.05)
            raise
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            yield stream
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _held(self, stream: trio.abc.Stream, drip: bytes = b"") -> None:
        """Keep ``stream`` open, sending nothing (or a ``drip`` byte now and then), until
        the replica closes it."""
        with trio.move_on_after(HOLD_SECONDS):
            while True:
                if drip:
                    await stream.send_all(drip)
                    with trio.move_on_after(DRIP_SECONDS):
                        if not await stream.receive_some(4096):
                            return
                elif not await stream.receive_some(4096):
                    return

    async def _send_and_close(self, kind: str, data: bytes) -> None:
        async with self._connect() as stream:
            self.sent[kind] += 1
            await stream.send_all(data)

    async def _random_bytes(self) -> None:
        await self._send_and_close("random-bytes", self.rng.randbytes(self.rng.randrange(1, 4096)))

    async def _truncated_prefix(self) -> None:
        length = self.rng.randrange(1, HEADER_BYTES)
        await self._send_and_close("truncated-prefix", b"\x00\x00\x01"[:length])

    async def _oversized_prefix(self) -> None:
        length = self.rng.choice([HANDSHAKE_MAX_FRAME_BYTES + 1, self.max_frame_bytes, 2**32 - 1])
        await self._send_and_close("oversized-prefix", length.to_bytes(HEADER_BYTES, "big"))

    async def _slow_loris(self) -> None:
        async with self._connect() as stream:
            self.sent["slow-loris"] += 1
            await stream.send_all((200).to_bytes(HEADER_BYTES, "big") + b"\x97")
            await self._held(stream, drip=b"\x00")

    async def _stop_after_connect(self) -> None:
        async with self._connect() as stream:
            self.sent["stop-after-connect"] += 1
            await self._held(stream)

    async def _connection_flood(self) -> None:
        async with self._connect() as stream:
            self.sent["connection-flood"] += 1
            await self._held(stream)

    def _hello(self, client: int) -> bytes:
        return msgpack.packb(
            [HELLO_TAG, HANDSHAKE_VERSION, self.config.cluster_id, "client", client,
             secrets.token_bytes(NONCE_BYTES), EphemeralKey().public],
            use_bin_type=True,
        )  # fmt: skip

    async def _stop_after_hello(self) -> None:
        async with self._connect() as stream:
            self.sent["stop-after-hello"] += 1
            framed = FramedStream(stream, HANDSHAKE_MAX_FRAME_BYTES)
            await framed.send_frame(self._hello(self.client))
            await self._held(stream)

    async def _stop_after_welcome(self) -> None:
        async with self._connect() as stream:
            self.sent["stop-after-welcome"] += 1
            framed = FramedStream(stream, HANDSHAKE_MAX_FRAME_BYTES)
            await framed.send_frame(self._hello(self.client))
            await framed.receive_frame()  # WELCOME: then no PROOF
            await self._held(stream)

    async def _unknown_principal(self) -> None:
        async with self._connect() as stream:
            self.sent["unknown-principal"] += 1
            framed = FramedStream(stream, HANDSHAKE_MAX_FRAME_BYTES)
            await framed.send_frame(self._hello(len(self.config.client_keys) + 7))
            await self._held(stream)  # REFUSED, then closed

    async def _outsider_key(self) -> None:
        async with self._connect() as stream:
            self.sent["outsider-key"] += 1
            framed = FramedStream(stream, self.max_frame_bytes)
            me = ("client", self.client)
            await dial_handshake(framed, self.config, me, self.outsider, self.target)
            await self._held(stream)  # the PROOF does not verify: closed

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[FramedStream, trio.Event]]:
        """A connection with a valid handshake as the configured client, and an event set
        once the replica closes it; its replies are read and thrown away meanwhile."""
        async with self._connect() as stream:
            framed = FramedStream(stream, self.max_frame_bytes)
            me = ("client", self.client)
            await dial_handshake(framed, self.config, me, self.signer, self.target)
            closed = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, framed, closed)
                yield framed, closed
                nursery.cancel_scope.cancel()

    @staticmethod
    async def _drain(framed: FramedStream, closed: trio.Event) -> None:
        try:
            while True:
                await framed.receive_frame()
        except Exception:  # the replica closed the connection: the attack's loop reconnects
            closed.set()

    @staticmethod
    async def _until_closed(closed: trio.Event) -> None:
        with trio.move_on_after(HOLD_SECONDS):
            await closed.wait()

    async def _next_session(self) -> None:
        """One authenticated session, of the kind that delivered in the fewest so far."""
        kind = min(self._session_kinds, key=lambda k: (self._delivered[k], self._tried[k]))
        self._tried[kind] += 1
        before = self.sent[kind]
        try:
            await getattr(self, "_" + kind.replace("-", "_"))()
        finally:
            if self.sent[kind] > before:
                self._delivered[kind] += 1

    async def _oversized_frame(self) -> None:
        async with self._session() as (framed, closed):
            self.sent["oversized-frame"] += 1
            length = self.max_frame_bytes + TAG_BYTES + 1
            await framed.stream.send_all(length.to_bytes(HEADER_BYTES, "big") + b"\0" * 64)
            await self._until_closed(closed)

    async def _bad_mac(self) -> None:
        async with self._session() as (framed, closed):
            self.sent["bad-mac"] += 1
            frame = encode_signed(self._request())
            wire = (len(frame) + TAG_BYTES).to_bytes(HEADER_BYTES, "big") + frame
            await framed.stream.send_all(wire + secrets.token_bytes(TAG_BYTES))
            await self._until_closed(closed)

    # ------------------------------------------------------------------- messages

    def _request(self, signer: Authenticator | None = None) -> Signed[Request]:
        self._timestamp += 1
        request = Request(self.client, self._timestamp, put(f"hostile-{self.client}", "x"))
        return (signer or self.auth).sign(request)

    def _frames(self, kind: str) -> list[bytes]:
        if kind == "replay":
            return [encode_signed(self._old_request)] * FRAMES_PER_BURST
        if kind == "outsider-signed":
            outsider = Authenticator(self.config, self.outsider)
            return [encode_signed(self._request(outsider)) for _ in range(FRAMES_PER_BURST)]
        frames = []
        for _ in range(FRAMES_PER_BURST):
            valid = encode_signed(self._request())
            if kind == "bad-signature":
                frames.append(valid[:-1] + bytes([valid[-1] ^ 0x01]))
            else:
                # A small "over the limit" body: the malformation, not the bytes, is the point.
                _, broken = corrupt(self.rng, valid, MALFORMED_MAX_BYTES, [])
                frames.append(broken)
        return [frame for frame in frames if len(frame) <= self.max_frame_bytes]

    async def _messages(self, kind: str) -> None:
        async with self._session() as (framed, closed):
            for _ in range(64):
                if closed.is_set():
                    return
                frames = self._frames(kind)
                await framed.send_frames(frames)
                self.sent[kind] += len(frames)
                await trio.sleep(0.01)

    async def _malformed_message(self) -> None:
        await self._messages("malformed-message")

    async def _bad_signature(self) -> None:
        await self._messages("bad-signature")

    async def _replay(self) -> None:
        await self._messages("replay")

    async def _outsider_signed(self) -> None:
        await self._messages("outsider-signed")
