"""A replica on the network: the sans-IO core driven by Trio.

Theory of operation
-------------------
:class:`ReplicaNode` is a thin nursery around one :class:`pbft.replica.Replica`:

* it listens on TCP; every accepted connection is authenticated by the
  handshake (:func:`pbft.runtime.links.serve_connection`; at most
  ``handshake_slots`` at once, :mod:`pbft.runtime.handshake_slots`, beyond
  which a dialer is refused as busy and backs off; at most a budget of
  connections below the descriptor limit, :mod:`pbft.runtime.descriptors`,
  beyond which a connection is closed unserved, part of it kept from clients;
  one live connection per principal, the newest, :mod:`pbft.runtime.sessions`;
  a client's frames within :func:`~pbft.runtime.limits.client_frame_bytes`) and
  each frame is stepped into the core as ``Receive(frame, channel=identity)``; the frames
  one socket read completed are stepped together and journalled in one
  transaction (group commit) before any of their messages leaves;
* it keeps one outgoing :class:`~pbft.runtime.links.PeerLink` per peer
  replica, and sends REPLYs back to a client over the client's own
  connection;
* it turns SetTimer/CancelTimer effects into :class:`~pbft.runtime.timers.Timers`;
* after every step, *before* any message leaves, it records the step's
  effects in the :class:`~pbft.runtime.storage.SqliteJournal`, so a replica
  killed at any instant restarts from its database without contradicting
  what it sent (:meth:`Replica.recover <pbft.replica_recovery.RecoveryMixin.recover>`);
* admission control (:mod:`pbft.runtime.admission`): while the core holds
  ``admission_requests`` requests not yet executed, the bursts read from
  client connections are held back, so clients wait in the socket buffers
  instead of being dropped; replica connections are never held;
* it logs refusals of a peer's input (failed handshakes, dropped frames,
  refused connections, reconnections) at most once per peer, reason and
  interval (:mod:`pbft.runtime.ratelimit`), never once per hostile input;
* it writes a small ``status.json`` for ``pbft cluster`` and the tests, and,
  given a metrics server, serves Prometheus metrics (:mod:`pbft.runtime.metrics`);
* given ``network_faults`` (see ``faults.traitors.network``), it asks them about every
  frame it sends to another replica, at :meth:`ReplicaNode.now_ms`, and drops,
  delays or duplicates the frame as told. Every node judges only what it
  sends, so a partition, applied by both sides, cuts both directions.

The core is only ever touched from Trio tasks of one thread, between two
awaits, so every step is atomic.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import trio

from pbft.config import ConfigError
from pbft.crypto import ED25519, Signer
from pbft.encoding import encode_signed
from pbft.events import (
    CancelTimer,
    Effect,
    EquivocationDetected,
    Event,
    Receive,
    SendBytes,
    SendToClient,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.replica import Replica
from pbft.runtime.admission import AdmissionGate
from pbft.runtime.descriptors import (
    ConnectionSlots,
    connection_budget,
    raise_open_files_limit,
    replica_reserve,
)
from pbft.runtime.eventlog import EventLog
from pbft.runtime.evidence_store import EvidenceStore
from pbft.runtime.files import ClusterFiles
from pbft.runtime.handshake import HandshakeError, Identity
from pbft.runtime.handshake_slots import HandshakeSlots
from pbft.runtime.limits import (
    LINK_QUEUE_FRAMES,
    check_limits,
    client_frame_bytes,
    client_queue_bytes,
    evidence_sender_bytes,
    link_queue_bytes,
    max_frame_bytes,
)
from pbft.runtime.links import PeerLink, serve_connection
from pbft.runtime.metrics import MetricsServer, NodeMetrics
from pbft.runtime.ratelimit import RejectionLog
from pbft.runtime.sessions import Session, Sessions
from pbft.runtime.status import node_status
from pbft.runtime.storage import SqliteJournal
from pbft.runtime.timers import Timers
from pbft.simnet import FaultModel

#: One tick of the core is one millisecond of Trio's clock.
TICK_SECONDS = 0.001
STATUS_INTERVAL_SECONDS = 0.2


class ReplicaNode:
    """One replica process (or task tree): core, journal, listener, links, timers."""

    def __init__(
        self,
        files: ClusterFiles,
        replica_id: int,
        data_dir: Path,
        *,
        signer: Signer | None = None,
        log: EventLog | None = None,
        tick_seconds: float = TICK_SECONDS,
        network_faults: FaultModel | None = None,
        clock_origin: float | None = None,
        metrics_server: MetricsServer | None = None,
        handshake_slots: HandshakeSlots | None = None,
    ) -> None:
        config = files.config
        if config.scheme != ED25519:
            raise ConfigError("the runtime signs with Ed25519 only; keyed-hash is for simulation")
        check_limits(files.params, config)
        self.files = files
        self.id = replica_id
        self.me: Identity = ("replica", replica_id)
        self.signer = signer or files.load_signer("replica", replica_id)
        self.data_dir = Path(data_dir)
        self.log = log or EventLog(f"replica {replica_id}")
        #: Refused handshakes and frames, (dis)connections: one line per peer and reason a while.
        self.rejections = RejectionLog(self.log)
        # Connections served at once, capped below the descriptor limit (a flood of
        # connections must not starve the journal and status files: :mod:`.descriptors`).
        budget = connection_budget(raise_open_files_limit())
        slots = ConnectionSlots(budget, replica_reserve(budget, config.n))
        self.replica = Replica(replica_id, config, self.signer, files.params)
        #: Holds client connections back while the core is full (never replica ones).
        self.admission = AdmissionGate(
            files.params.admission_requests, lambda: self.replica.requests_waiting
        )
        self.max_frame_bytes = max_frame_bytes(files.params)
        self.client_frame_bytes = client_frame_bytes(files.params, config)
        self.timers = Timers(tick_seconds)
        #: Prometheus metrics, served on ``metrics_server``; None: not kept at all.
        self.metrics = NodeMetrics(self, metrics_server) if metrics_server is not None else None
        self.links = {
            peer.id: PeerLink(
                config,
                self.me,
                self.signer,
                ("replica", peer.id),
                (peer.host, peer.port),
                max_frame_bytes=self.max_frame_bytes,
                queue_frames=LINK_QUEUE_FRAMES,
                queue_bytes=link_queue_bytes(files.params, config),
                on_handshake_failure=self._dial_failed if self.metrics is not None else None,
            )
            for peer in files.replicas
            if peer.id != replica_id
        }
        #: Accepted connections: one per principal, clients within their share.
        self.sessions = Sessions(slots, self.rejections, client_queue_bytes(files.params))
        #: Caps the handshakes in progress; beyond it a dialer is refused as busy.
        self.handshake_slots = handshake_slots or HandshakeSlots()
        self._journal: SqliteJournal | None = None
        self._nursery: trio.Nursery | None = None
        self.status_path = self.data_dir / "status.json"
        #: Where each EquivocationDetected is written, for ``pbft verify-evidence``.
        self.evidence_dir = self.data_dir / "evidence"
        self.evidence = EvidenceStore(
            self.evidence_dir, config, evidence_sender_bytes(files.params, config)
        )
        #: Decides the fate of each frame to another replica
        #: (``faults.traitors.network``); None: none.
        self.network_faults = network_faults
        #: The Trio time at which this run's millisecond clock reads 0 (default: run() start).
        self.clock_origin = clock_origin

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` gets the listening port."""
        if self.clock_origin is None:
            self.clock_origin = trio.current_time()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port = self.files.address(self.id)
        listeners = await trio.open_tcp_listeners(port, host=host)
        self._journal = SqliteJournal(
            self.data_dir / "replica.db",
            self.files.config.cluster_id,
            self.id,
            durability=self.files.durability,
            replicas=self.files.config.n,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self.sessions.nursery = nursery
                state = self._journal.load()
                self._carry_out(self.replica.recover(state))
                self.log.event(
                    "started",
                    self.replica.view,
                    self.replica.last_executed,
                    address=f"{host}:{port}",
                    pid=os.getpid(),
                    n=self.files.config.n,
                    f=self.files.config.f,
                    clients=len(self.files.config.client_keys),
                )
                for link in self.links.values():
                    nursery.start_soon(link.run)
                nursery.start_soon(self.timers.run, self._fire)
                nursery.start_soon(trio.serve_listeners, self._serve, listeners)
                nursery.start_soon(self._write_status_forever)
                if self.metrics is not None:
                    nursery.start_soon(self.metrics.serve)
                task_status.started(listeners[0].socket.getsockname()[1])
        finally:
            self._write_status("stopped")
            self._journal.close()
            self.log.event("stopped", self.replica.view, self.replica.last_executed)

    def _fire(self, name: str) -> None:
        self._step(TimerFired(name))

    def _step(self, event: Event) -> None:
        self._carry_out(self.replica.step(event))

    def _carry_out(self, effects: list[Effect]) -> None:
        assert self._journal is not None
        # Durable first: nothing leaves that the database would not remember.
        self._journal.record(self.replica, effects)
        if self.metrics is not None:
            self.metrics.count_effects(effects)
        self.log.effects(self.replica.view, effects)
        for effect in effects:
            kind = type(effect)
            if kind is SendToReplicas:
                frame = encode_signed(effect.message)
                if self.log.detailed:
                    self.log.sent(frame, self._receivers(effect.replicas), effect.message)
                for replica in effect.replicas:
                    link = self.links.get(replica)
                    if link is not None:
                        self._send_to_replica(link, replica, frame)
            elif kind is SendToClient:
                frame = encode_signed(effect.message)
                if self.log.detailed:
                    self.log.sent(frame, [("client", effect.client)], effect.message)
                self.sessions.send_to_client(effect.client, frame)
            elif kind is SendBytes:
                if self.log.detailed:
                    self.log.sent(effect.data, self._receivers(effect.replicas))
                for replica in effect.replicas:
                    link = self.links.get(replica)
                    if link is not None and len(effect.data) <= self.max_frame_bytes:
                        self._send_to_replica(link, replica, effect.data)
            elif kind is SetTimer:
                self.timers.set(effect.name, effect.ticks)
            elif kind is CancelTimer:
                self.timers.cancel(effect.name)
            elif kind is EquivocationDetected:
                self._keep_evidence(effect)
        # Executions may have made room for clients held back.
        self.admission.release()

    def _keep_evidence(self, effect: EquivocationDetected) -> None:
        """Write the proof within the evidence folder's bounds; log it, or its first refusal."""
        evidence = effect.evidence
        try:
            saved = self.evidence.save(evidence)
        except OSError as error:  # a full disk must not stop the replica
            written = f"not written: {error.strerror or error}"
        else:
            if saved.path is None and not saved.first_refusal:
                return  # counted in status.json; logged once per sender
            written = str(saved.path) if saved.path is not None else f"not kept: {saved.reason}"
        self.log.event(
            "equivocation", evidence.view, evidence.seq,
            sender=evidence.sender, phase=evidence.phase, file=written,
        )  # fmt: skip

    def now_ms(self) -> int:
        """Milliseconds since ``clock_origin``: the run's clock for faults and scenarios."""
        if self.clock_origin is None:
            return 0
        return math.floor((trio.current_time() - self.clock_origin) * 1000)

    def _send_to_replica(self, link: PeerLink, replica: int, frame: bytes) -> None:
        """Queue a frame for a peer, through the network faults when there are any."""
        if len(frame) > self.max_frame_bytes:
            # Larger than any peer accepts (a huge state snapshot): sending it would
            # only get the connection closed. Dropped; the peer retries elsewhere.
            self.log.event(
                "error", self.replica.view, reason=f"frame of {len(frame)} bytes dropped"
            )
            return
        if self.network_faults is None:
            link.send_nowait(frame)
            return
        delays_ms = self.network_faults.decide(self.now_ms(), self.id, replica)
        if self.log.detailed and delays_ms != [0]:
            self._log_network_fault(frame, replica, delays_ms)
        for delay_ms in delays_ms:
            if delay_ms <= 0 or self._nursery is None:
                link.send_nowait(frame)
            else:
                self._nursery.start_soon(self._send_later, link, frame, delay_ms)

    def _receivers(self, replicas: tuple[int, ...]) -> list[Identity]:
        """The peers among ``replicas`` a frame goes to (never this replica itself)."""
        return [("replica", replica) for replica in replicas if replica in self.links]

    def _log_network_fault(self, frame: bytes, replica: int, delays_ms: list[int]) -> None:
        # A drop is a partition's cut or a lost message; rules that can tell say which.
        partitioned = getattr(self.network_faults, "partitioned", None)
        cut = (
            not delays_ms
            and partitioned is not None
            and partitioned(self.now_ms(), self.id, replica)
        )
        self.log.network_fault(frame, ("replica", replica), delays_ms, partitioned=bool(cut))

    async def _send_later(self, link: PeerLink, frame: bytes, delay_ms: int) -> None:
        await trio.sleep(delay_ms / 1000)
        link.send_nowait(frame)

    # -------------------------------------------------------------- connections

    @property
    def connection_slots(self) -> ConnectionSlots:
        """Connections served at once, and how many clients hold (:mod:`.descriptors`)."""
        return self.sessions.slots

    @connection_slots.setter
    def connection_slots(self, slots: ConnectionSlots) -> None:
        self.sessions.slots = slots

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (every attempt that reached us)."""
        return self.sessions.accepted

    @property
    def client_sessions(self) -> dict[int, Session]:
        """The clients connected now (their live sessions)."""
        return self.sessions.clients

    async def _serve(self, stream: trio.abc.Stream) -> None:
        await self.sessions.serve(stream, self._serve_connection)

    async def _serve_connection(self, stream: trio.abc.Stream, session: Session) -> None:
        await serve_connection(
            stream,
            self.files.config,
            self.me,
            self.signer,
            on_frame=self._on_frame,
            on_frames=self._on_frames,
            on_connect=lambda identity, framed: self.sessions.connected(session, identity, framed),
            on_disconnect=lambda identity: self.sessions.disconnected(session, identity),
            max_frame_bytes=self.max_frame_bytes,
            max_client_frame_bytes=self.client_frame_bytes,
            admit=self.admission.admit,
            on_handshake_failure=lambda error: self._accept_failed(session.address, error),
            slots=self.handshake_slots,
            host=session.address,
        )

    def _dial_failed(self, error: HandshakeError) -> None:
        assert self.metrics is not None
        self.metrics.handshake_failed("dialed", error)

    def _accept_failed(self, address: str, error: HandshakeError) -> None:
        if self.metrics is not None:
            self.metrics.handshake_failed("accepted", error)
        self.rejections.handshake_failed(address, error)

    def _on_frame(self, identity: Identity, frame: bytes) -> None:
        self._on_frames(identity, [frame])

    def _on_frames(self, identity: Identity, frames: list[bytes]) -> None:
        """Step a burst of frames from one connection, then journal and send once.

        Group commit: the journal records the effects of every step of the burst
        in one transaction, still before any message of the burst leaves.
        """
        effects: list[Effect] = []
        for frame in frames:
            step = self.replica.step(Receive(frame, channel=identity))
            if self.log.detailed:
                self.log.received(frame, identity, step)
            else:
                self.rejections.dropped(identity, step)
            effects += step
        if self.metrics is not None:  # before the effects: a request's arrival, then execution
            self.metrics.frames_from(identity, len(frames))
        self._carry_out(effects)

    # ------------------------------------------------------------------- status

    def status(self, state: str | None = None) -> dict[str, Any]:
        """What ``status.json`` says (:func:`pbft.runtime.status.node_status`)."""
        return node_status(self, state)

    def _write_status(self, state: str | None = None) -> None:
        temporary = self.status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.status(state)))
        os.replace(temporary, self.status_path)

    async def _write_status_forever(self) -> None:
        while True:
            self.rejections.flush()  # the count of lines held back from other peers, if due
            try:
                self._write_status()
            except OSError as error:  # out of descriptors or disk: the status is only a report
                self.rejections.status_not_written(error)
            await trio.sleep(STATUS_INTERVAL_SECONDS)
