"""A PBFT client on the network: the sans-IO :class:`pbft.client.Client` driven by Trio.

A :class:`RemoteClient` keeps one connection to every replica (dialled,
authenticated by the handshake, re-dialled with full-jitter backoff when it
breaks). Requests go out on them; REPLYs come back on them and are stepped
into the core, which decides when f+1 replicas agree. Retransmission is the
core's timer. Timestamps start from the wall clock, so that successive client
processes with the same identity keep using increasing timestamps (replicas
execute each (client, timestamp) at most once and ignore older ones).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from pbft import service as kv
from pbft.client import Client
from pbft.config import ConfigError
from pbft.crypto import ED25519, Signer
from pbft.encoding import encode_signed
from pbft.events import (
    CancelTimer,
    Completed,
    Effect,
    Event,
    Invoke,
    Receive,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.runtime.files import ClusterFiles
from pbft.runtime.framing import ConnectionClosed, FramedStream, FrameError
from pbft.runtime.handshake import HandshakeError, Identity, dial_handshake
from pbft.runtime.limits import max_frame_bytes
from pbft.runtime.links import Backoff
from pbft.runtime.queues import FrameQueue
from pbft.runtime.timers import Timers

TICK_SECONDS = 0.001
DEFAULT_RETRANSMIT_TICKS = 1000
#: The most a retransmission waits once backoff has grown (16 s).
DEFAULT_MAX_RETRANSMIT_TICKS = 16_000
_CONNECTION_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    FrameError,
    ConnectionClosed,
    HandshakeError,
    trio.TooSlowError,
)


class NoQuorum(TimeoutError):
    """No f+1 replicas agreed on a result in time."""


def wall_clock_timestamp() -> int:
    """Microseconds since the epoch: increasing across client processes."""
    return time.time_ns() // 1000


class ReplicaConnection:
    """The client's connection to one replica: requests out, replies in."""

    def __init__(self, client: RemoteClient, replica_id: int) -> None:
        self.client = client
        self.replica_id = replica_id
        self.connected = False
        # Only this client's own requests queue here; a replica that does not read
        # makes them wait, at most 256 frames and one frame of the limit in bytes.
        self._queue = FrameQueue(256, client.max_frame_bytes)
        self._backoff = Backoff()

    def send_nowait(self, frame: bytes) -> None:
        self._queue.put_nowait(frame)  # dropped when full: the core retransmits

    async def run(self) -> None:
        files = self.client.files
        peer: Identity = ("replica", self.replica_id)
        while True:
            try:
                with trio.fail_after(5):
                    stream = await trio.open_tcp_stream(*files.address(self.replica_id))
                framed = FramedStream(stream, self.client.max_frame_bytes)
                try:
                    await dial_handshake(
                        framed, files.config, self.client.me, self.client.signer, peer
                    )
                    self.connected = True
                    self._backoff.reset()
                    # Each task handles its own connection errors and ends the
                    # session: errors leaving a nursery come as exception groups.
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write, framed, nursery.cancel_scope)
                        await self._read(framed)
                        nursery.cancel_scope.cancel()
                finally:
                    self.connected = False
                    await trio.aclose_forcefully(framed)
            except _CONNECTION_ERRORS:
                pass
            await trio.sleep(self._backoff.next_delay())

    async def _write(self, framed: FramedStream, session: trio.CancelScope) -> None:
        try:
            while True:
                await framed.send_frames(await self._queue.get_batch(64, 1024 * 1024))
        except _CONNECTION_ERRORS:
            session.cancel()

    async def _read(self, framed: FramedStream) -> None:
        try:
            while True:
                frame = await framed.receive_frame()
                self.client._step(Receive(frame, channel=("replica", self.replica_id)))
        except _CONNECTION_ERRORS:
            return


class RemoteClient:
    """One client identity connected to the cluster; ``execute`` runs one operation."""

    def __init__(
        self,
        files: ClusterFiles,
        client_id: int,
        signer: Signer | None = None,
        retransmit_ticks: int = DEFAULT_RETRANSMIT_TICKS,
        max_retransmit_ticks: int | None = DEFAULT_MAX_RETRANSMIT_TICKS,
    ) -> None:
        if files.config.scheme != ED25519:
            raise ConfigError("the runtime signs with Ed25519 only")
        self.files = files
        self.id = client_id
        self.me: Identity = ("client", client_id)
        self.signer = signer or files.load_signer("client", client_id)
        self.max_frame_bytes = max_frame_bytes(files.params)
        self.core = Client(
            client_id,
            files.config,
            self.signer,
            retransmit_timeout_ticks=retransmit_ticks,
            max_message_bytes=files.params.max_message_bytes,
            max_request_bytes=files.params.max_request_bytes,
            signed_replies=bool(files.params.signed_replies),
            read_only=kv.is_read_only if files.params.fast_reads else None,
            max_retransmit_timeout_ticks=(
                None
                if max_retransmit_ticks is None
                else max(retransmit_ticks, max_retransmit_ticks)
            ),
        )
        self.timers = Timers(TICK_SECONDS)
        self.connections = {
            replica.id: ReplicaConnection(self, replica.id) for replica in files.replicas
        }
        self._done: trio.Event | None = None
        self._result: bytes | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for connection in self.connections.values():
                nursery.start_soon(connection.run)
            nursery.start_soon(self.timers.run, lambda name: self._step(TimerFired(name)))
            task_status.started()

    async def wait_connected(self, count: int | None = None, timeout: float = 10.0) -> None:
        """Wait until ``count`` replicas (default: all) are connected."""
        count = len(self.connections) if count is None else count
        with trio.fail_after(timeout):
            while sum(c.connected for c in self.connections.values()) < count:
                await trio.sleep(0.01)

    async def execute(self, operation: bytes, timeout: float = 10.0) -> bytes:
        """Run one operation through the cluster; raise :class:`NoQuorum` on timeout."""
        self._done = done = trio.Event()
        self._result = None
        started = trio.current_time()
        self._step(Invoke(operation, min_timestamp=wall_clock_timestamp()))
        try:
            with trio.fail_after(timeout):
                await done.wait()
            self.core.observe_latency((trio.current_time() - started) / TICK_SECONDS)
        except trio.TooSlowError:
            for effect in self.core.abandon():
                self._carry_out(effect)
            raise NoQuorum(
                f"no {self.core.reply_quorum} replicas agreed on a result within {timeout:g} s"
            ) from None
        assert self._result is not None
        return self._result

    def _step(self, event: Event) -> None:
        for effect in self.core.step(event):
            self._carry_out(effect)

    def _carry_out(self, effect: Effect) -> None:
        kind = type(effect)
        if kind is SendToReplicas:
            frame = encode_signed(effect.message)
            for replica in effect.replicas:
                self.connections[replica].send_nowait(frame)
        elif kind is SetTimer:
            self.timers.set(effect.name, effect.ticks)
        elif kind is CancelTimer:
            self.timers.cancel(effect.name)
        elif kind is Completed:
            self._result = effect.result
            if self._done is not None:
                self._done.set()
