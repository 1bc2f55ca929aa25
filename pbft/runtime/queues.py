"""A queue of frames bounded in frames *and* bytes, that drops instead of blocking.

The protocol must never wait for a slow or faulty peer, and a peer must never
pin more memory than the configuration allows, so :meth:`FrameQueue.put_nowait`
refuses (and counts) a frame that would take the queue past either bound.
PBFT tolerates the loss: retransmission, view changes and state transfer
recover. Underneath is a Trio memory channel, so a writer task can wait for
the first frame and a closed queue ends that task with ``trio.EndOfChannel``.
"""

from __future__ import annotations

import trio


class FrameQueue:
    """Frames waiting for one connection; at most ``max_frames`` and ``max_bytes``."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("a frame queue needs room for at least one frame and one byte")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._send, self._receive = trio.open_memory_channel[bytes](max_frames)
        #: Bytes of the frames now queued.
        self.bytes_queued = 0
        #: Frames refused: the queue was full, in frames or bytes, or closed.
        self.frames_dropped = 0

    @property
    def frames_queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def put_nowait(self, frame: bytes) -> bool:
        """Queue ``frame``; False, and counted as dropped, if it does not fit."""
        if self.bytes_queued + len(frame) > self.max_bytes:
            self.frames_dropped += 1
            return False
        try:
            self._send.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.frames_dropped += 1
            return False
        self.bytes_queued += len(frame)
        return True

    async def get_batch(self, max_frames: int, max_bytes: int) -> list[bytes]:
        """Wait for one frame, then take those already queued, up to the limits given.

        One frame may exceed ``max_bytes`` alone. Raises ``trio.EndOfChannel``
        once the queue is closed and empty.
        """
        batch = [await self._receive.receive()]
        batch_bytes = len(batch[0])
        while len(batch) < max_frames and batch_bytes < max_bytes:
            try:
                frame = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            batch.append(frame)
            batch_bytes += len(frame)
        self.bytes_queued -= batch_bytes
        return batch

    def close(self) -> None:
        """Refuse further frames; the reader gets those queued, then EndOfChannel."""
        self._send.close()
