"""Prometheus metrics of one replica node, served over HTTP (``--metrics-port``).

Theory of operation
-------------------
Each :class:`~pbft.runtime.node.ReplicaNode` given a :class:`MetricsServer`
owns one :class:`NodeMetrics` with its own ``CollectorRegistry`` (never
prometheus_client's global one: tests run several nodes in one process).

The hot path stays cheap. The node already walks every step's effects; it
hands the same list to :meth:`NodeMetrics.count_effects`, which adds to plain
integers (messages sent by type, requests and batches executed, view changes)
and observes the latency histogram. Everything else is read only when
Prometheus scrapes: the core's own :class:`~pbft.counters.Counters` (messages
accepted and rejected, by type and reason: the numbers ``status.json``
publishes), the bytes held by each bounded store
(:meth:`Replica.store_bytes <pbft.replica_stores.StoresMixin.store_bytes>`),
the view, the checkpoint lag and the links' statistics.

The HTTP server answers in a thread of its own, but the core may only be
touched from the Trio thread (the node steps it between two awaits). So a
scrape reads nothing itself: it asks the Trio thread for a snapshot with
``trio.from_thread.run_sync`` and builds the metric families from that copy.

Request latency is measured by the replica a client sent its request to
(normally the primary; every replica once a client retransmits to all): from
the moment the request first became pending there (received on the client's
own connection) to the moment that replica executed it. A backup that only
learns of a request from the primary's PRE-PREPARE observes nothing.

Handshake failures are counted by direction (``accepted``: a peer dialed us;
``dialed``: our link to a peer replica) and by the fixed label each
:class:`~pbft.runtime.handshake.HandshakeError` carries
(:func:`handshake_failure_reason`), so the label takes a handful of values.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import trio
from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pbft.events import (
    Effect,
    Executed,
    NewViewEntered,
    SendBytes,
    SendToClient,
    SendToReplicas,
    ViewChangeStarted,
)
from pbft.runtime.handshake import HandshakeError, Identity

if TYPE_CHECKING:
    from pbft.runtime.node import ReplicaNode

#: Request latency buckets, in seconds: a loopback cluster answers in milliseconds,
#: a loaded one in tenths of a second, a view change in seconds.
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

#: Requests remembered per client for the latency histogram; clients wait for one.
MAX_ARRIVALS_PER_CLIENT = 4

#: Handshake failure reasons, by a phrase of HandshakeError's message (first match wins).
_HANDSHAKE_REASONS = (
    ("refused as busy", "busy"),  # we refused: too many handshakes in progress
    ("refused the handshake: busy", "busy"),  # a peer refused us: we back off
    ("refused the handshake", "refused"),
    ("timed out", "timeout"),
    ("closed the connection", "closed"),
    ("connection failed", "connection-failed"),
    ("belongs to cluster", "wrong-cluster"),
    ("not a member of the cluster", "unknown-principal"),
    ("does not verify", "bad-signature"),
    ("answered", "wrong-peer"),
    ("handshake version", "version"),
)


def handshake_failure_reason(error: HandshakeError) -> str:
    """A short, bounded label for why a handshake failed: its ``label``, given where it
    was raised; for an error without one, by a phrase of its message, ``malformed`` for the rest.

    Every other HandshakeError is about the shape of a message (fields, lengths,
    encoding, roles, keys), which only a broken or hostile peer gets wrong.
    """
    if error.label is not None:  # set where it was raised: never read from a peer's text
        return error.label
    text = str(error)
    for phrase, reason in _HANDSHAKE_REASONS:
        if phrase in text:
            return reason
    return "malformed"


class NodeMetrics:
    """The metrics of one node: counts fed by the node, the rest read at scrape time."""

    def __init__(self, node: ReplicaNode, server: MetricsServer) -> None:
        self._node = node
        self.server = server
        self._token: trio.lowlevel.TrioToken | None = None
        # Plain integers, written only on the Trio thread; a scrape copies them there.
        self.sent: dict[str, int] = {}
        self.frames_received: dict[str, int] = {}
        self.requests_executed = 0
        self.batches_executed = 0
        self.view_changes_started = 0
        self.views_entered = 0
        self.handshake_failures: dict[tuple[str, str], int] = {}
        #: client -> {timestamp: Trio time it became pending here}, a few per client.
        self._arrivals: dict[int, dict[int, float]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "pbft_request_latency_seconds",
            "From a request's receipt over its client's connection to its execution here",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(self))

    # ------------------------------------------------------- fed by the node

    def count_effects(self, effects: list[Effect]) -> None:
        """Count one step's effects (called on the Trio thread, after the journal)."""
        for effect in effects:
            kind = type(effect)
            if kind is SendToReplicas:
                message_type = effect.message.message.TYPE
                self.sent[message_type] = self.sent.get(message_type, 0) + len(effect.replicas)
            elif kind is SendToClient:
                message_type = effect.message.message.TYPE
                self.sent[message_type] = self.sent.get(message_type, 0) + 1
            elif kind is SendBytes:
                # Only a traitor's wrapper emits raw bytes; they have no type to read.
                self.sent["raw-bytes"] = self.sent.get("raw-bytes", 0) + len(effect.replicas)
            elif kind is Executed:
                self._executed(effect)
            elif kind is ViewChangeStarted:
                self.view_changes_started += 1
            elif kind is NewViewEntered:
                self.views_entered += 1

    def frames_from(self, identity: Identity, count: int) -> None:
        """``count`` frames from ``identity`` were stepped; note a client's new request."""
        role, principal = identity
        self.frames_received[role] = self.frames_received.get(role, 0) + count
        if role != "client":
            return
        pending = self._node.replica.pending.get(principal)
        if pending is None:
            return
        # A client may send its next request before this replica executed the last
        # (f+1 other replicas replied first), so a few timestamps wait per client.
        arrivals = self._arrivals.setdefault(principal, {})
        timestamp = pending.message.timestamp
        if timestamp not in arrivals:
            arrivals[timestamp] = trio.current_time()
            if len(arrivals) > MAX_ARRIVALS_PER_CLIENT:
                del arrivals[min(arrivals)]

    def handshake_failed(self, direction: str, error: HandshakeError) -> None:
        key = (direction, handshake_failure_reason(error))
        self.handshake_failures[key] = self.handshake_failures.get(key, 0) + 1

    def _executed(self, effect: Executed) -> None:
        self.batches_executed += 1
        self.requests_executed += len(effect.requests)
        for client, timestamp in effect.requests:
            arrivals = self._arrivals.get(client)
            if not arrivals:
                continue
            arrival = arrivals.pop(timestamp, None)
            if arrival is not None:
                self.latency.observe(trio.current_time() - arrival)
            # Timestamps grow: an older request of the client can no longer execute.
            for older in [t for t in arrivals if t < timestamp]:
                del arrivals[older]

    # ------------------------------------------------------------- serving

    async def serve(self) -> None:
        """Serve the registry on the server until cancelled, then close the server."""
        server = self.server
        self._token = trio.lowlevel.current_trio_token()
        server.start(self.registry)
        try:
            await trio.sleep_forever()
        finally:
            self._token = None
            # shutdown() waits for the server's poll loop (up to half a second):
            # off the Trio thread, and shielded so that cancellation cannot skip it.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(server.close)

    def snapshot(self) -> dict[str, Any] | None:
        """Everything a scrape reports, copied on the Trio thread; None once it stopped."""
        token = self._token
        if token is None:
            return None
        try:
            return trio.from_thread.run_sync(self._read, trio_token=token)
        except trio.RunFinishedError:
            return None

    def _read(self) -> dict[str, Any]:
        node = self._node
        replica = node.replica
        return {
            "accepted": dict(replica.counters.accepted),
            "rejected": dict(replica.counters.dropped),
            "sent": dict(self.sent),
            "frames_received": dict(self.frames_received),
            "requests_executed": self.requests_executed,
            "batches_executed": self.batches_executed,
            "view_changes_started": self.view_changes_started,
            "views_entered": self.views_entered,
            "handshake_failures": dict(self.handshake_failures),
            "view": replica.view,
            "last_executed": replica.last_executed,
            "stable_checkpoint": replica.low_watermark,
            "store_bytes": replica.store_bytes(),
            "store_limits": replica.store_limits(),
            "links": {peer: link.statistics() for peer, link in node.links.items()},
            "clients_connected": len(node.client_sessions),
            "connections_accepted": node.connections_accepted,
            "handshakes_in_progress": node.handshake_slots.in_progress,
        }


class _ScrapeCollector(Collector):
    """Builds every metric except the histogram from one snapshot per scrape."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the families depend on the snapshot; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot()
        if snapshot is None:
            return
        yield from _message_families(snapshot)
        yield from _progress_families(snapshot)
        yield from _store_families(snapshot)
        yield from _connection_families(snapshot)


def _counter(name: str, documentation: str, labels: list[str], values: dict[Any, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], value)
    return family


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _message_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    accepted: dict[str, int] = snapshot["accepted"]
    rejected: dict[tuple[str, str], int] = snapshot["rejected"]
    received = dict(accepted)
    for (message_type, _), count in rejected.items():
        received[message_type] = received.get(message_type, 0) + count
    yield _counter("pbft_messages_sent", "Messages handed to links or clients, by type",
                   ["type"], snapshot["sent"])  # fmt: skip
    yield _counter("pbft_messages_received", "Messages the core accepted or rejected, by type",
                   ["type"], received)  # fmt: skip
    yield _counter("pbft_messages_accepted", "Messages the core accepted, by type",
                   ["type"], accepted)  # fmt: skip
    yield _counter("pbft_messages_rejected", "Messages the core rejected, by type and reason",
                   ["type", "reason"], rejected)  # fmt: skip
    yield _counter("pbft_frames_received", "Frames received, by the sender's role",
                   ["role"], snapshot["frames_received"])  # fmt: skip


def _progress_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily("pbft_requests_executed", "Client requests executed",
                              value=snapshot["requests_executed"])  # fmt: skip
    yield CounterMetricFamily("pbft_batches_executed", "Batches (sequence numbers) executed",
                              value=snapshot["batches_executed"])  # fmt: skip
    yield CounterMetricFamily("pbft_view_changes", "View changes this replica started",
                              value=snapshot["view_changes_started"])  # fmt: skip
    yield CounterMetricFamily("pbft_views_entered", "New views this replica entered",
                              value=snapshot["views_entered"])  # fmt: skip
    yield _gauge("pbft_view", "The current view", snapshot["view"])
    yield _gauge("pbft_last_executed_seq", "The last sequence number executed",
                 snapshot["last_executed"])  # fmt: skip
    yield _gauge("pbft_stable_checkpoint_seq", "The stable checkpoint (low watermark)",
                 snapshot["stable_checkpoint"])  # fmt: skip
    yield _gauge("pbft_checkpoint_lag", "Last executed minus the stable checkpoint, in seqs",
                 snapshot["last_executed"] - snapshot["stable_checkpoint"])  # fmt: skip


def _store_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    held = GaugeMetricFamily("pbft_store_bytes", "Bytes held by each bounded store",
                             labels=["store"])  # fmt: skip
    limit = GaugeMetricFamily("pbft_store_limit_bytes", "The bound on each store, in bytes",
                              labels=["store"])  # fmt: skip
    for store, size in sorted(snapshot["store_bytes"].items()):
        held.add_metric([store], size)
    for store, size in sorted(snapshot["store_limits"].items()):
        limit.add_metric([store], size)
    yield held
    yield limit


def _connection_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    links = snapshot["links"]
    connected = GaugeMetricFamily("pbft_peer_connected", "1 when the link to a peer is up",
                                  labels=["peer"])  # fmt: skip
    for peer, statistics in sorted(links.items()):
        connected.add_metric([str(peer)], int(statistics.connected))
    yield connected
    yield _gauge("pbft_peers_connected", "Peer replicas this replica's links reach",
                 sum(statistics.connected for statistics in links.values()))  # fmt: skip
    yield _gauge("pbft_clients_connected", "Clients connected to this replica",
                 snapshot["clients_connected"])  # fmt: skip
    for name, field, documentation in (
        ("pbft_link_frames_sent", "frames_sent", "Frames written to a peer"),
        ("pbft_link_frames_dropped", "frames_dropped", "Frames dropped: a peer's queue was full"),
        ("pbft_link_failures", "failures", "Failed connects or handshakes and ended sessions"),
    ):
        values = {str(peer): getattr(statistics, field) for peer, statistics in links.items()}
        yield _counter(name, documentation, ["peer"], values)
    yield _counter("pbft_handshake_failures", "Failed handshakes, by direction and reason",
                   ["direction", "reason"], snapshot["handshake_failures"])  # fmt: skip
    yield CounterMetricFamily("pbft_connections_accepted", "TCP connections accepted",
                              value=snapshot["connections_accepted"])  # fmt: skip
    yield _gauge("pbft_handshakes_in_progress", "Accepted handshakes holding a slot now",
                 snapshot["handshakes_in_progress"])  # fmt: skip


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are routine: not one line on stderr per request."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never keeps the process alive


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """prometheus_client's WSGI app on a socket bound at once, served once started.

    Binding in the constructor lets ``pbft replica`` report a port in use as one
    line before the node starts; :meth:`NodeMetrics.serve` starts and closes it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(
            host, port, make_wsgi_app(CollectorRegistry()), server_class, _QuietHandler
        )
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self, registry: CollectorRegistry) -> None:
        self._server.set_app(make_wsgi_app(registry))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics :{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
