"""Same-run costs of the operations PBFT pays per message, measured in this process.

Each figure is the median of several timed rounds, so that a round disturbed by
another process does not set it. They are CPU costs on one core: the hop has
both of its ends in this process, so it includes the sender's encoding and
write and the receiver's read and decoding, and the kernel's loopback work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import attrs
import trio

from pbft.crypto import Ed25519Signer, Ed25519Verifier
from pbft.encoding import decode_signed, encode_message, encode_signed
from pbft.messages import Prepare, Signed
from pbft.runtime.channel import FrameMac
from pbft.runtime.framing import FramedStream

#: A PREPARE's payload is about this long; requests and replies are similar.
SAMPLE = bytes(range(256))[:120]


@attrs.frozen
class Costs:
    """Seconds of one core per operation."""

    sign_s: float
    verify_s: float
    mac_s: float
    hop_s: float

    def as_us(self) -> dict[str, float]:
        return {
            name.removesuffix("_s") + "_us": round(value * 1e6, 1)
            for name, value in attrs.asdict(self).items()
        }


def _median_per_call(call: Callable[[], object], calls: int, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        timings.append((time.perf_counter() - started) / calls)
    return statistics.median(timings)


async def _hop_seconds(messages: int, rounds: int) -> float:
    """Median seconds for one framed, signed message to go one way over loopback TCP."""
    signer = Ed25519Signer.generate()
    prepare = Prepare(0, 1, bytes(32), 1)
    payload = encode_message(prepare)
    frame = encode_signed(Signed(prepare, signer.sign(payload), payload))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []
    ready = trio.Event()

    async def accept() -> None:
        accepted.append(await listeners[0].accept())
        ready.set()

    timings = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await ready.wait()
        near = FramedStream(client, 1 << 20)
        far = FramedStream(accepted[0], 1 << 20)

        async def echo() -> None:
            while True:
                received = await far.receive_frame()
                decode_signed(received)
                await far.send_frames([received])

        nursery.start_soon(echo)
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(messages):
                await near.send_frames([frame])
                decode_signed(await near.receive_frame())
            timings.append((time.perf_counter() - started) / (2 * messages))
        nursery.cancel_scope.cancel()
    for stream in (client, accepted[0]):
        await stream.aclose()
    await listeners[0].aclose()
    return statistics.median(timings)


def calibrate(calls: int = 400, rounds: int = 5) -> Costs:
    """Measure sign, verify, MAC and one hop on this machine, now."""
    signer = Ed25519Signer.generate()
    public = signer.public_key
    signature = signer.sign(SAMPLE)
    verifier = Ed25519Verifier()
    mac = FrameMac(bytes(32), bytes(32))  # what every frame's tag costs (pbft.runtime.channel)
    return Costs(
        sign_s=_median_per_call(lambda: signer.sign(SAMPLE), calls, rounds),
        verify_s=_median_per_call(
            lambda: verifier.verify(public, signature, SAMPLE), calls, rounds
        ),
        mac_s=_median_per_call(lambda: mac.seal(SAMPLE), calls, rounds),
        hop_s=trio.run(_hop_seconds, calls, rounds),
    )
