"""A PBFT client on the network: the sans-IO :class:`pbft.client.Client` driven by Trio.

A :class:`RemoteClient` keeps one connection to every replica (dialled,
authenticated by the handshake, re-dialled with full-jitter backoff, capped at
``reconnect_cap_seconds`` (2 s), when it breaks or the replica refuses the handshake as busy; only a
session that lasted :data:`~pbft.runtime.links.STABLE_SESSION_SECONDS` starts
the backoff over, so a replica restarting does not see every client at once).
Requests go out on them; REPLYs come back on them and are stepped into the
core, which decides when f+1 replicas agree. Retransmission is the core's
timer (full-jitter backoff too, capped at 16 s). Timestamps start from the
wall clock, so that successive client processes with the same identity keep
using increasing timestamps (replicas execute each (client, timestamp) at
most once and ignore older ones).

When no quorum agrees in time, :class:`NoQuorum` says why as far as the client
can tell (:meth:`RemoteClient.diagnosis`): each connection remembers its last
failure (connection refused, no answer, the handshake refused and the
replica's reason, the connection closed right after the handshake), and the
core's replies so far show whether replicas answered but disagreed.
"""

from __future__ import annotations

import os
import socket
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
from pbft.runtime.eventlog import EventLog
from pbft.runtime.files import ClusterFiles
from pbft.runtime.framing import ConnectionClosed, FramedStream, FrameError
from pbft.runtime.handshake import (
    HandshakeError,
    HandshakeProofRejected,
    HandshakeRefused,
    Identity,
    dial_handshake,
)
from pbft.runtime.limits import max_frame_bytes
from pbft.runtime.links import STABLE_SESSION_SECONDS, Backoff
from pbft.runtime.queues import FrameQueue
from pbft.runtime.timers import Timers

TICK_SECONDS = 0.001
DEFAULT_RETRANSMIT_TICKS = 1000
#: The most a retransmission waits once backoff has grown (16 s).
DEFAULT_MAX_RETRANSMIT_TICKS = 16_000
#: How long a TCP connect to a replica may take.
CONNECT_TIMEOUT_SECONDS = 5.0
#: A connection re-dials after uniform(0, min(this, 50 ms * 2**n)) seconds (n: failures).
RECONNECT_CAP_SECONDS = 2.0
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
    """No f+1 replicas agreed on a result in time; the message says what the client saw."""


def _connect_failure(error: BaseException) -> str:
    """``connection refused`` rather than Trio's "all attempts to connect ... failed"."""
    if isinstance(error, trio.TooSlowError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    # open_tcp_stream chains the errors of every address it tried.
    causes = getattr(error.__cause__, "exceptions", None) or [error.__cause__ or error]
    cause = causes[-1]
    if isinstance(cause, socket.gaierror):  # its errno is the resolver's, not the OS's
        return f"cannot resolve the host: {cause.strerror}".lower()
    if isinstance(cause, OSError) and cause.errno is not None:
        # Trio's strerror repeats the address ("Error connecting to (...): ..."); the OS's
        # own text for the number is what a person expects.
        return os.strerror(cause.errno).lower()
    return str(cause)


def wall_clock_timestamp() -> int:
    """Microseconds since the epoch: increasing across client processes."""
    return time.time_ns() // 1000


class ReplicaConnection:
    """The client's connection to one replica: requests out, replies in."""

    def __init__(self, client: RemoteClient, replica_id: int) -> None:
        self.client = client
        self.replica_id = replica_id
        self.connected = False
        #: Why the last attempt or session failed, for people (None: none failed yet).
        self.problem: str | None = None
        # Only this client's own requests queue here; a replica that does not read
        # makes them wait, at most 256 frames and one frame of the limit in bytes.
        self._queue = FrameQueue(256, client.max_frame_bytes)
        self._backoff = Backoff(cap_seconds=client.reconnect_cap_seconds)
        #: TCP connections attempted to this replica so far (tools count reconnect storms).
        self.dials = 0

    def send_nowait(self, frame: bytes) -> None:
        self._queue.put_nowait(frame)  # dropped when full: the core retransmits

    async def run(self) -> None:
        files = self.client.files
        peer: Identity = ("replica", self.replica_id)
        host, port = files.address(self.replica_id)
        while True:
            self.dials += 1
            try:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_SECONDS):
                        stream = await trio.open_tcp_stream(host, port)
                except (OSError, trio.TooSlowError) as error:
                    self.problem = f"cannot connect: {_connect_failure(error)}"
                    raise
                framed = FramedStream(stream, self.client.max_frame_bytes)
                try:
                    await self._handshake(framed, peer)
                    started = trio.current_time()
                    await self._session(framed)
                    if trio.current_time() - started >= STABLE_SESSION_SECONDS:
                        self._backoff.reset()  # the replica was up: start over from the base
                finally:
                    self.connected = False
                    await trio.aclose_forcefully(framed)
            except _CONNECTION_ERRORS:
                pass
            await trio.sleep(self._backoff.next_delay())

    async def _handshake(self, framed: FramedStream, peer: Identity) -> None:
        client = self.client
        try:
            await dial_handshake(framed, client.files.config, client.me, client.signer, peer)
        except HandshakeRefused as error:
            self.problem = f"refused the handshake: {error.reason}"
            raise
        except HandshakeProofRejected:
            # The replica hangs up instead of confirming when our PROOF does not verify:
            # the likely cause is a key that its cluster.toml does not have for this client.
            self.problem = (
                "closed the connection right after the handshake "
                "(does its cluster.toml have this client's key?)"
            )
            raise
        except HandshakeError as error:
            self.problem = f"handshake failed: {error}"
            raise
        self.connected = True

    async def _session(self, framed: FramedStream) -> None:
        # Each task handles its own connection errors and ends the session:
        # errors leaving a nursery come as exception groups.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, framed, nursery.cancel_scope)
            await self._read(framed)
            nursery.cancel_scope.cancel()
        self.problem = "closed the connection"

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
        log: EventLog | None = None,
        reconnect_cap_seconds: float = RECONNECT_CAP_SECONDS,
    ) -> None:
        if files.config.scheme != ED25519:
            raise ConfigError("the runtime signs with Ed25519 only")
        self.files = files
        #: Where a traced run logs this client's operations, sends and receives.
        self.log = log if log is not None and log.detailed else None
        self.id = client_id
        self.me: Identity = ("client", client_id)
        self.signer = signer or files.load_signer("client", client_id)
        self.max_frame_bytes = max_frame_bytes(files.params)
        #: The longest a connection waits between two dials (full jitter below it).
        self.reconnect_cap_seconds = reconnect_cap_seconds
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
            why = self.diagnosis()
            for effect in self.core.abandon():
                self._carry_out(effect)
            raise NoQuorum(
                f"no {self.core.reply_quorum} replicas agreed on a result within {timeout:g} s: "
                + why
            ) from None
        assert self._result is not None
        return self._result

    def diagnosis(self) -> str:
        """What the client saw of the outstanding operation, in one line for people."""
        addresses = {r.id: f"{r.host}:{r.port}" for r in self.files.replicas}
        return describe_failure(
            self.core.replies_so_far(),
            [r for r, connection in self.connections.items() if connection.connected],
            {
                r: (addresses[r], connection.problem)
                for r, connection in self.connections.items()
                if not connection.connected
            },
            self.core.reply_quorum,
        )

    def _step(self, event: Event) -> None:
        effects = self.core.step(event)
        if self.log is not None:
            self._log_step(self.log, event, effects)
        for effect in effects:
            self._carry_out(effect)

    @staticmethod
    def _log_step(log: EventLog, event: Event, effects: list[Effect]) -> None:
        """Trace an operation's start, a frame received, and what the step sends or completes."""
        if type(event) is Invoke:
            sends = [effect for effect in effects if type(effect) is SendToReplicas]
            timestamp = sends[0].message.message.timestamp if sends else None
            log.invoked(event.operation, timestamp)
        elif type(event) is Receive and event.channel is not None:
            log.received(event.data, event.channel, effects)
        for effect in effects:
            if type(effect) is SendToReplicas:
                receivers = [("replica", replica) for replica in effect.replicas]
                log.sent(encode_signed(effect.message), receivers, effect.message)
            elif type(effect) is Completed:
                log.completed(effect)

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


def describe_failure(
    replies: dict[int, bytes],
    connected: list[int],
    problems: dict[int, tuple[str, str | None]],
    quorum: int,
) -> str:
    """One line: how the replies disagree, and why the replicas that did not reply did not.

    ``replies`` maps each replica that replied to the digest of its result;
    ``connected`` lists the connected replicas; ``problems`` maps each other
    replica to its address and its last failure (None: still trying).
    """
    parts = []
    if replies:
        groups: dict[bytes, list[int]] = {}
        for replica, digest in sorted(replies.items()):
            groups.setdefault(digest, []).append(replica)
        if len(groups) == 1:
            parts.append(f"only {_replicas(list(replies))} replied (agreeing)")
        else:
            ordered = sorted(groups.values(), key=len, reverse=True)
            shown = "; ".join(
                f"{_replicas(group)}: result {i + 1}" for i, group in enumerate(ordered)
            )
            parts.append(f"{len(replies)} replies, {len(groups)} distinct results ({shown})")
    silent = [replica for replica in connected if replica not in replies]
    if silent:
        parts.append(f"{_replicas(silent)} connected but did not reply")
    by_problem: dict[str, list[tuple[int, str]]] = {}
    for replica, (address, problem) in sorted(problems.items()):
        if replica not in replies:
            by_problem.setdefault(problem or "not connected yet", []).append((replica, address))
    for problem, group in by_problem.items():
        addresses = ", ".join(address for _, address in group)
        hint = " (nothing listens there: is the cluster running?)" if "refused" in problem else ""
        parts.append(f"{_replicas([r for r, _ in group])} ({addresses}): {problem}{hint}")
    return "; ".join(parts) or "no replica replied"


def _replicas(ids: list[int]) -> str:
    if len(ids) == 1:
        return f"replica {ids[0]}"
    return "replicas " + ", ".join(map(str, ids))
