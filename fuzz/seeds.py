"""Write the seed corpus of every target from real messages: ``python -m fuzz.seeds``.

* ``decoder``: every distinct frame delivered in the step target's simulated run
  (:func:`fuzz.step.world`), one file per message type and size class, plus one
  signed sample of every message type the unit tests build (nested ones too);
* ``handshake``: the two byte streams of a real handshake between a client and
  replica 0, recorded over an in-memory stream pair, one per side;
* ``step``: the honest pool replayed in order to a backup and to the primary,
  and a few forged messages.

Seeds are named ``seed-*``; files the fuzzer adds are named by their SHA-1, as
libFuzzer names them. Existing files are kept.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio
import trio.testing

from fuzz.step import FAULTY, pool
from fuzz.targets import keys
from pbft.encoding import decode_signed, encode_message, encode_signed
from pbft.messages import Checkpoint, FetchCommitted, FetchState, Prepare, Request
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import accept_handshake, dial_handshake

CORPUS = Path(__file__).parent / "corpus"


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seed-{name}"
    if not path.exists():
        path.write_bytes(data)


def decoder_seeds() -> None:
    seen: set[tuple[str, int]] = set()
    for _, frame in pool():
        kind = decode_signed(frame).message.TYPE
        size_class = len(frame).bit_length()
        if (kind, size_class) not in seen:
            seen.add((kind, size_class))
            _write("decoder", f"{kind.lower()}-{len(frame)}", frame)
    try:  # every message type, signed the way the unit tests sign them
        from tests.unit.conftest import build_keyring, build_samples
    except ImportError:
        return
    keyring = build_keyring()
    for message in build_samples(keyring).values():
        signed = keyring.signer_of(message).sign(message)
        _write("decoder", f"sample-{message.TYPE.lower()}", encode_signed(signed))
        _write("decoder", f"payload-{message.TYPE.lower()}", encode_message(message))


class _Recorder(trio.abc.Stream):
    """Passes bytes through and keeps a copy of everything sent."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _record_handshake() -> tuple[bytes, bytes]:
    config, replicas, clients = keys()
    dialer_end, acceptor_end = trio.testing.memory_stream_pair()
    dialer, acceptor = _Recorder(dialer_end), _Recorder(acceptor_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_handshake, FramedStream(acceptor), config, ("replica", 0),
                           replicas[0])  # fmt: skip
        await dial_handshake(
            FramedStream(dialer), config, ("client", 0), clients[0], ("replica", 0)
        )
    return bytes(dialer.sent), bytes(acceptor.sent)


def handshake_seeds() -> None:
    dialer_sent, acceptor_sent = trio.run(_record_handshake)
    _write("handshake", "acceptor-side", b"\x00" + dialer_sent)
    _write("handshake", "dialer-side", b"\x01" + acceptor_sent)


def _replay(indices: range) -> bytes:
    return b"".join(b"\x00" + (i % 65536).to_bytes(2, "big") for i in indices)


def _forged(message: object, channel: int = 0) -> bytes:
    payload = encode_message(message)
    return b"\x01" + bytes([channel]) + len(payload).to_bytes(2, "big") + payload


def step_seeds() -> None:
    count = len(pool())
    for header, role in ((0, "backup"), (2, "primary"), (1, "trusting-backup")):
        for start in range(0, count, 40):
            part = _replay(range(start, min(start + 40, count)))
            _write("step", f"{role}-replay-{start}", bytes([header]) + part)
    forged = [
        Request(client=0, timestamp=5, operation=b"\x93\xa3put\xa1k\xa1v"),
        Prepare(view=0, seq=1, digest=bytes(32), sender=FAULTY),
        Checkpoint(seq=2, state_digest=bytes(32), sender=FAULTY),
        FetchState(seq=2, sender=FAULTY),
        FetchCommitted(first_seq=1, last_seq=4, sender=FAULTY),
    ]
    _write("step", "forged", b"\x00" + b"".join(_forged(m, 1) for m in forged) + b"\x02\x00")
    # Templates: the first honest message of each type, re-sent as the faulty replica's.
    firsts: dict[str, bytes] = {}
    for index, (_, frame) in enumerate(pool()):
        message = decode_signed(frame).message
        if message.TYPE in firsts:
            continue
        fields = bytes(FAULTY if name == "sender" else 255 for name, kind in message.SCHEMA
                       if kind == "u64")  # fmt: skip
        firsts[message.TYPE] = b"\x04\x01" + index.to_bytes(2, "big") + fields
    templates = b"".join(firsts.values())
    _write("step", "templates", b"\x00" + _replay(range(24)) + templates + b"\x02\x00")
    _write("step", "trusting-templates", b"\x01" + _replay(range(24)) + templates)


def main() -> None:
    decoder_seeds()
    handshake_seeds()
    step_seeds()
    for target in ("decoder", "handshake", "step"):
        files = sorted((CORPUS / target).iterdir())
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
        print(f"{target}: {len(files)} files, {sum(p.stat().st_size for p in files)} bytes "
              f"({digest})")  # fmt: skip


if __name__ == "__main__":
    main()
