"""Length-prefixed framing: round trips, partial arrival, limits, end of stream, coalescing."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from pbft.runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    ConnectionClosed,
    FramedStream,
    FrameError,
)


def header(length: int) -> bytes:
    return length.to_bytes(4, "big")


def receive_only() -> tuple[trio.testing.MemoryReceiveStream, FramedStream]:
    """A framed stream whose incoming bytes the test puts in by hand."""
    incoming = trio.testing.MemoryReceiveStream()
    stream = trio.StapledStream(trio.testing.MemorySendStream(), incoming)
    return incoming, FramedStream(stream, max_frame_bytes=1024)


class CountingStream(trio.abc.Stream):
    """Wraps a stream and records every ``send_all`` call."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_many_frames_round_trip_including_empty_and_large_ones() -> None:
    rng = random.Random(1)
    frames = [b"", b"x", b"", rng.randbytes(70_000), rng.randbytes(DEFAULT_MAX_FRAME_BYTES)]
    frames += [rng.randbytes(rng.randrange(0, 300)) for _ in range(500)]
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = FramedStream(left), FramedStream(right)
    received: list[bytes] = []

    async def receive_all() -> None:
        for _ in range(len(frames)):
            received.append(await receiver.receive_frame())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        await sender.send_frame(frames[0])
        await sender.send_frames(frames[1:250])
        for frame in frames[250:]:
            await sender.send_frame(frame)
    assert received == frames


async def test_bytes_arriving_one_at_a_time_reassemble_into_frames() -> None:
    incoming, framed = receive_only()
    frames = [b"hello", b"", b"PBFT" * 20]
    wire = b"".join(header(len(frame)) + frame for frame in frames)
    ends = [sum(4 + len(frame) for frame in frames[: i + 1]) for i in range(len(frames))]
    received: list[bytes] = []

    async def receive_all() -> None:
        for _ in frames:
            received.append(await framed.receive_frame())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        for position in range(len(wire)):
            incoming.put_data(wire[position : position + 1])
            await trio.testing.wait_all_tasks_blocked()
            # A frame is returned exactly when its last byte has arrived, never earlier.
            assert len(received) == sum(1 for end in ends if end <= position + 1)
    assert received == frames


async def test_oversized_frame_is_refused_from_its_header_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    incoming, framed = receive_only()
    # The header announces a gigabyte and no body follows: waiting for the body
    # (or buffering it) would hang, so refusing at once is the only way to pass.
    incoming.put_data(header(10**9) + b"abc")
    with trio.fail_after(1), pytest.raises(FrameError, match="frame of 1000000000 bytes exceeds"):
        await framed.receive_frame()


async def test_frame_at_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(1024) + bytes(1024) + header(1025))
    assert await framed.receive_frame() == bytes(1024)
    with pytest.raises(FrameError, match="frame of 1025 bytes exceeds the limit of 1024"):
        await framed.receive_frame()


async def test_a_lower_limit_can_be_asked_for_one_frame() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(100) + bytes(100))
    with pytest.raises(FrameError, match="exceeds the limit of 50"):
        await framed.receive_frame(max_frame_bytes=50)


async def test_end_of_stream_in_the_middle_of_a_frame_is_a_frame_error() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(10) + b"12345")
    incoming.put_eof()
    with pytest.raises(FrameError, match="middle of a frame"):
        await framed.receive_frame()


async def test_end_of_stream_in_the_middle_of_a_header_is_a_frame_error() -> None:
    incoming, framed = receive_only()
    incoming.put_data(b"\x00\x00")
    incoming.put_eof()
    with pytest.raises(FrameError):
        await framed.receive_frame()


async def test_end_of_stream_between_frames_is_a_clean_close() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(3) + b"abc")
    incoming.put_eof()
    assert await framed.receive_frame() == b"abc"
    with pytest.raises(ConnectionClosed):
        await framed.receive_frame()


async def test_sending_an_oversized_frame_is_a_local_error_and_sends_nothing() -> None:
    left, _ = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    framed = FramedStream(counting, max_frame_bytes=16)
    with pytest.raises(ValueError, match="refusing to send a frame of 17 bytes"):
        await framed.send_frames([b"fine", bytes(17)])
    assert counting.sends == []


async def test_send_frames_coalesces_many_frames_into_one_write() -> None:
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    sender, receiver = FramedStream(counting), FramedStream(right)
    frames = [b"frame-%d" % i for i in range(100)] + [b""]
    await sender.send_frames(frames)
    assert len(counting.sends) == 1
    assert counting.sends[0] == b"".join(header(len(frame)) + frame for frame in frames)
    assert [await receiver.receive_frame() for _ in frames] == frames
    await sender.send_frames([])
    assert len(counting.sends) == 1


async def test_concurrent_senders_never_interleave_their_frames() -> None:
    # A lockstep stream blocks every send_all until the reader takes the bytes,
    # so two unserialised senders would collide (trio raises BusyResourceError).
    left, right = trio.testing.lockstep_stream_pair()
    sender, receiver = FramedStream(left), FramedStream(right)
    batches = {name: [b"%s-%d" % (name, i) for i in range(50)] for name in (b"a", b"b", b"c")}
    received: list[bytes] = []

    async def receive_all() -> None:
        for _ in range(150):
            received.append(await receiver.receive_frame())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_all)
        for batch in batches.values():
            nursery.start_soon(sender.send_frames, batch)
    # Each batch arrives whole and in order, whatever order the batches went in.
    blocks = [received[start : start + 50] for start in range(0, 150, 50)]
    assert sorted(blocks) == sorted(batches.values())


async def test_receive_frames_returns_every_complete_frame_one_read_brought() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(1) + b"a" + header(0) + header(2) + b"bc" + header(3) + b"d")
    assert await framed.receive_frames() == [b"a", b"", b"bc"]  # the 4th is incomplete
    incoming.put_data(b"ef" + header(1) + b"g")
    assert await framed.receive_frames(max_frames=1) == [b"def"]
    assert await framed.receive_frames() == [b"g"]


async def test_receive_frames_refuses_an_oversized_frame_behind_good_ones() -> None:
    incoming, framed = receive_only()
    incoming.put_data(header(1) + b"a" + header(1025))
    with pytest.raises(FrameError, match="frame of 1025 bytes"):
        await framed.receive_frames()
