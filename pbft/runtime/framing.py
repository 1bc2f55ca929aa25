"""Length-prefixed frames over a byte stream.

TCP delivers a stream of bytes, not messages; this module cuts it into
*frames*. A frame on the wire is a 4-byte big-endian unsigned length followed
by that many bytes of payload::

    +----------------+---------------------------+
    | length (u32 BE) | payload (length bytes)   |
    +----------------+---------------------------+

Theory of operation
-------------------
Receiving: :class:`FramedStream` keeps one internal buffer of bytes read from
the stream but not yet returned. :meth:`FramedStream.receive_frame` returns a
frame as soon as the buffer holds a complete one, and otherwise reads more
with ``receive_some``. The length is checked the moment the 4-byte header is
complete: a frame above the limit is refused at once (:class:`FrameError`)
without waiting for, or storing, its body, so a peer cannot make us hold more
than one read's worth of bytes beyond the limit. End of stream is clean
(:class:`ConnectionClosed`) only on a frame boundary; anywhere else the peer
cut a frame short, which is a :class:`FrameError`.

Sending: :meth:`FramedStream.send_frames` encodes a whole list of frames into
one buffer and hands it to the stream in a single ``send_all`` call. One
system call for many small protocol messages (a replica multicasting PREPARE,
COMMIT and CHECKPOINT to the same peer) is the *coalesced writes*
optimisation. Sends are serialised by a lock, so one task may send (a replica
replying to a client over the client's own connection) while another task is
blocked receiving on the same stream. Only one task may receive at a time.

Once the handshake has agreed session keys, :meth:`FramedStream.protect`
makes every later frame carry a MAC (:mod:`pbft.runtime.channel`): the length
then counts the payload and its 16-byte tag, and a frame whose tag does not
check ends the connection. Tags are computed under the send lock, so frames
reach the wire in the order of their counters.

Errors split the h11 way: a peer's bad bytes are a *remote* problem
(:class:`FrameError`, which ends the connection), while asking to send an
oversized frame is a *local* bug (:class:`ValueError`).
"""

from __future__ import annotations

import trio

from pbft.runtime.channel import TAG_BYTES, FrameMac

#: Largest frame payload accepted or sent by default (bytes).
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Size of the 4-byte big-endian length that precedes every frame.
HEADER_BYTES = 4
#: Largest frame the 4-byte header can describe.
LARGEST_ENCODABLE_FRAME_BYTES = 2**32 - 1
#: How much one ``receive_some`` call asks for.
RECEIVE_CHUNK_BYTES = 65536


class FrameError(Exception):
    """The peer broke the framing: an oversized frame, or a frame cut short by end of stream."""


class ConnectionClosed(Exception):
    """The peer closed the stream cleanly, between two frames."""


class FramedStream:
    """Frames over a ``trio.abc.Stream``: one receiving task, any number of sending tasks."""

    def __init__(
        self, stream: trio.abc.Stream, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    ) -> None:
        if not 0 <= max_frame_bytes <= LARGEST_ENCODABLE_FRAME_BYTES:
            raise ValueError(
                f"max_frame_bytes must lie in [0, {LARGEST_ENCODABLE_FRAME_BYTES}], "
                f"got {max_frame_bytes}"
            )
        self.stream = stream
        self.max_frame_bytes = max_frame_bytes
        self._received = bytearray()
        self._send_lock = trio.Lock()
        self._mac: FrameMac | None = None

    def protect(self, mac: FrameMac) -> None:
        """From the next frame on, in both directions, every frame carries ``mac``'s tag."""
        self._mac = mac

    @property
    def protected(self) -> bool:
        return self._mac is not None

    async def receive_frame(self, max_frame_bytes: int | None = None) -> bytes:
        """Return the next frame's payload (possibly ``b""``).

        ``max_frame_bytes`` lowers the limit for this one frame (the handshake
        accepts only small frames from a peer that has not proven who it is).
        Raises :class:`FrameError` for an oversized or truncated frame and
        :class:`ConnectionClosed` on a clean end of stream.
        """
        limit = self.max_frame_bytes if max_frame_bytes is None else max_frame_bytes
        while True:
            frame = self._take_frame(limit)
            if frame is not None:
                return frame
            data = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                if self._received:
                    raise FrameError(
                        f"the stream ended in the middle of a frame "
                        f"({len(self._received)} bytes of it received)"
                    )
                raise ConnectionClosed("the peer closed the connection")
            self._received += data

    async def receive_frames(
        self, max_frames: int = 256, max_frame_bytes: int | None = None
    ) -> list[bytes]:
        """Wait for one frame, then return it with every complete frame already buffered.

        One ``receive_some`` often brings many frames under load; handing them
        over together lets the receiver step them in one go (one journal
        transaction, one write per peer) instead of one task switch per frame.
        ``max_frame_bytes`` lowers the limit for these frames, as in
        :meth:`receive_frame` (a replica reads a client's frames within the
        client bound, :func:`pbft.runtime.limits.client_frame_bytes`).
        """
        limit = self.max_frame_bytes if max_frame_bytes is None else max_frame_bytes
        frames = [await self.receive_frame(limit)]
        while len(frames) < max_frames:
            frame = self._take_frame(limit)
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _take_frame(self, limit: int) -> bytes | None:
        """Cut one complete frame off the front of the buffer; None if there is none yet."""
        if len(self._received) < HEADER_BYTES:
            return None
        length = int.from_bytes(self._received[:HEADER_BYTES], "big")
        mac = self._mac
        overhead = 0 if mac is None else TAG_BYTES
        if length - overhead > limit:
            raise FrameError(f"frame of {length - overhead} bytes exceeds the limit of {limit}")
        if length < overhead:
            raise FrameError(f"a frame of {length} bytes cannot hold its {overhead}-byte tag")
        end = HEADER_BYTES + length
        if len(self._received) < end:
            return None
        frame = bytes(self._received[HEADER_BYTES : end - overhead])
        if mac is not None and not mac.check(frame, bytes(self._received[end - overhead : end])):
            raise FrameError("a frame failed its MAC check (altered, replayed or out of order)")
        # Deleting from the front of a bytearray is cheap: CPython moves its start pointer.
        del self._received[:end]
        return frame

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send all ``frames`` with one ``send_all`` call (coalesced writes)."""
        if not frames:
            return
        for frame in frames:
            if len(frame) > self.max_frame_bytes:
                raise ValueError(
                    f"refusing to send a frame of {len(frame)} bytes: "
                    f"the limit is {self.max_frame_bytes}"
                )
        async with self._send_lock:
            wire = bytearray()
            mac = self._mac
            if mac is None:
                for frame in frames:
                    wire += len(frame).to_bytes(HEADER_BYTES, "big")
                    wire += frame
            else:
                for frame in frames:
                    wire += (len(frame) + TAG_BYTES).to_bytes(HEADER_BYTES, "big")
                    wire += frame
                    wire += mac.seal(frame)
            await self.stream.send_all(wire)

    async def send_frame(self, frame: bytes) -> None:
        """Send one frame."""
        await self.send_frames([frame])

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
