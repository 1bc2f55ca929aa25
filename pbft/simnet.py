"""An in-memory, deterministic network that drives replicas and clients.

Not part of the sans-IO core: this is one of its drivers, used by the tests
(and the simulator builds on it). Time is a virtual tick counter; every
delivery and timer sits in one heap ordered by (time, insertion order); every
random choice (loss, delay, duplication) comes from one ``random.Random``
seeded by the caller. The same seed, nodes and calls therefore give the same
run, message for message, and :attr:`Network.trace_hash` summarises it.

Messages travel as bytes, exactly as they would on a socket, so decoding and
authentication are exercised on every delivery.

Faults: per-network or per-call loss, duplication and delay ranges (a delay
range reorders messages), isolated replicas (nothing in or out), crashed nodes
(deliveries and timers are discarded) and an ``intercept`` hook through which a
test may drop or inspect any single message. A :class:`FaultModel` (the
scenario's partitions, delays, loss, duplication and reordering, see
``faults.traitors.network``) may take over the fate of messages between replicas.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

from pbft import service as kv
from pbft.client import Client
from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import ED25519, KEYED_HASH, Ed25519Signer, KeyedHashSigner, Signer
from pbft.encoding import decode_signed, encode_signed
from pbft.events import (
    CancelTimer,
    Completed,
    Effect,
    Event,
    Executed,
    Invoke,
    Receive,
    SendBytes,
    SendToClient,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.messages import Signed
from pbft.replica import Replica

#: A node's address: ("replica", id) or ("client", id).
Address = tuple[str, int]


class Node(Protocol):
    def step(self, event: Event) -> list[Effect]: ...


class FaultModel(Protocol):
    """Faults between replicas decided per message (e.g. ``faults.traitors.network.NetworkFaults``).

    ``decide`` returns the extra delay in milliseconds of each copy to deliver:
    ``[]`` drops the message, ``[0]`` delivers it as usual.
    """

    def decide(self, now_ms: int, source: int, destination: int) -> list[int]: ...


@attrs.define
class LinkFaults:
    """Random faults applied to every message (probabilities in [0, 1], delays in ticks)."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay_ticks: int = 1
    max_delay_ticks: int = 1


@attrs.define
class Operation:
    """One client operation as observed by the network: for history checks."""

    client: int
    operation: bytes
    invoke_tick: int
    return_tick: int | None = None
    result: bytes | None = None
    #: The request timestamp the client used (for validity checks).
    timestamp: int | None = None


#: intercept(source, destination, message) -> deliver? Called once per copy sent;
#: ``message`` is None for raw bytes (SendBytes).
Intercept = Callable[[Address, Address, Signed[Any] | None], bool]
#: on_transmit(source, destination, frame, arrivals): the network decided the fate of one
#: frame sent source -> destination; ``arrivals`` are the ticks from now at which its copies
#: will arrive (empty: dropped, two entries: duplicated).
OnTransmit = Callable[[Address, Address, bytes, list[int]], None]
#: on_deliver(source, destination, frame): the frame is handed to ``destination`` now.
OnDeliver = Callable[[Address, Address, bytes], None]


class Network:
    """Drives nodes by delivering their messages and firing their timers in virtual time."""

    def __init__(
        self,
        seed: int = 0,
        faults: LinkFaults | None = None,
        fault_model: FaultModel | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or LinkFaults()
        #: When set, decides the fate of every replica-to-replica message instead of
        #: ``faults`` (a tick is a millisecond). Seed its randomness from the run's seed.
        self.fault_model = fault_model
        self.now = 0
        self.nodes: dict[Address, Node] = {}
        self.crashed: set[Address] = set()
        self.isolated: set[int] = set()
        self.intercept: Intercept | None = None
        #: Twins (Bano et al.): a second node with replica k's identity and key, at
        #: address ("twin", k). ``twin_route(now, peer, k)`` says which copy talks
        #: to ``peer``: "replica", "twin", "both" or "none".
        self.twin_route: Callable[[int, Address, int], str] | None = None
        #: Called with each node's effects before they are carried out (journals, traces).
        self.on_step: Callable[[Address, list[Effect]], None] | None = None
        #: Told of each frame's fate and of each delivery (a trace); observers only.
        self.on_transmit: OnTransmit | None = None
        self.on_deliver: OnDeliver | None = None
        self.executed: dict[int, list[Executed]] = {}
        self.operations: list[Operation] = []
        self.notices: list[tuple[int, Address, Any]] = []
        self.messages_sent = 0
        self._heap: list[tuple[int, int, int, Address, Any]] = []
        self._order = itertools.count()
        self._timer_generation: dict[tuple[Address, str], int] = {}
        self._workload: dict[int, deque[bytes]] = {}
        self._open: dict[int, Operation] = {}
        self._trace = hashlib.sha256()
        #: Deliver each message with its sender's channel (as the runtime's MAC'd
        #: connections do). Off, every message must stand on its signature alone and
        #: a traitor may relay any message it holds to anyone.
        self.channels = True

    # ------------------------------------------------------------------- setup

    def add_replica(self, replica: Node, replica_id: int) -> None:
        self.nodes[("replica", replica_id)] = replica
        self.executed.setdefault(replica_id, [])

    def add_client(self, client: Node, client_id: int) -> None:
        self.nodes[("client", client_id)] = client

    def replace(self, address: Address, node: Node, effects: Iterable[Effect] = ()) -> None:
        """Put a new node (a restarted or a faulty one) at an address; old timers die.

        ``effects`` are carried out for it at once (a recovered replica's first ones).
        """
        self.nodes[address] = node
        self.crashed.discard(address)
        for key in list(self._timer_generation):
            if key[0] == address:
                self._timer_generation[key] += 1
        for effect in effects:
            self._apply(address, effect)

    # ----------------------------------------------------------------- control

    def crash(self, address: Address) -> None:
        self.crashed.add(address)

    def isolate(self, replica_id: int) -> None:
        self.isolated.add(replica_id)

    def heal(self, replica_id: int) -> None:
        self.isolated.discard(replica_id)

    def invoke(self, client_id: int, operation: bytes) -> None:
        """Have a client start one operation now."""
        record = Operation(client_id, operation, self.now)
        self._open[client_id] = record
        self.operations.append(record)
        self._step(("client", client_id), Invoke(operation))
        record.timestamp = getattr(self.nodes[("client", client_id)], "timestamp", None)

    def submit(self, client_id: int, operations: Iterable[bytes]) -> None:
        """Queue operations for a client; each starts when the previous one returns."""
        queue = self._workload.setdefault(client_id, deque())
        queue.extend(operations)
        if client_id not in self._open and queue:
            self.invoke(client_id, queue.popleft())

    def deliver_bytes(self, destination: Address, data: bytes) -> None:
        """Inject raw bytes at a node now, as if they arrived from the network."""
        self._step(destination, Receive(data))

    # ------------------------------------------------------------------ running

    @property
    def idle(self) -> bool:
        """No client has an operation outstanding or queued."""
        return not self._open and not any(self._workload.values())

    @property
    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def run(self, ticks: int) -> None:
        """Process everything due in the next ``ticks`` ticks."""
        self.run_until(lambda: False, ticks)

    def run_until(self, predicate: Callable[[], bool], max_ticks: int) -> bool:
        """Run until ``predicate()`` holds (checked after each event) or time runs out."""
        deadline = self.now + max_ticks
        if predicate():
            return True
        while self._heap and self._heap[0][0] <= deadline:
            time, _, kind, address, payload = heapq.heappop(self._heap)
            self.now = time
            if address in self.crashed:
                continue
            if kind == _DELIVERY:
                channel, data, source = payload
                self._trace.update(b"d%d|%s%d|" % (time, address[0].encode(), address[1]))
                self._trace.update(data)
                if self.on_deliver is not None:
                    self.on_deliver(source, address, data)
                self._step(address, Receive(data, channel=channel))
            else:
                name, generation = payload
                if self._timer_generation.get((address, name)) != generation:
                    continue
                self._trace.update(
                    b"t%d|%s%d|%s" % (time, address[0].encode(), address[1], name.encode())
                )
                self._step(address, TimerFired(name))
            if predicate():
                return True
        self.now = max(self.now, deadline)
        return predicate()

    def run_until_idle(self, max_ticks: int) -> bool:
        return self.run_until(lambda: self.idle, max_ticks)

    # ---------------------------------------------------------------- internals

    def _step(self, address: Address, event: Event) -> None:
        node = self.nodes[address]
        effects = node.step(event)
        if self.on_step is not None:
            self.on_step(address, effects)
        for effect in effects:
            self._apply(address, effect)

    def _apply(self, source: Address, effect: Effect) -> None:
        kind = type(effect)
        if kind is SendToReplicas:
            data = encode_signed(effect.message)
            for replica in effect.replicas:
                self._send(source, ("replica", replica), effect.message, data)
        elif kind is SendToClient:
            data = encode_signed(effect.message)
            self._send(source, ("client", effect.client), effect.message, data)
        elif kind is SendBytes:
            for replica in effect.replicas:
                self._send(source, ("replica", replica), None, effect.data)
        elif kind is SetTimer:
            key = (source, effect.name)
            generation = self._timer_generation.get(key, 0) + 1
            self._timer_generation[key] = generation
            self._push(self.now + effect.ticks, _TIMER, source, (effect.name, generation))
        elif kind is CancelTimer:
            key = (source, effect.name)
            self._timer_generation[key] = self._timer_generation.get(key, 0) + 1
        elif kind is Executed:
            if source[0] == "replica":  # a twin's executions are no honest history
                self.executed[source[1]].append(effect)
        elif kind is Completed:
            self._complete(source[1], effect)
        else:
            self.notices.append((self.now, source, effect))

    def _complete(self, client_id: int, completed: Completed) -> None:
        record = self._open.pop(client_id, None)
        if record is not None:
            record.return_tick = self.now
            record.result = completed.result
        queue = self._workload.get(client_id)
        if queue:
            self.invoke(client_id, queue.popleft())

    def _send(
        self, source: Address, destination: Address, message: Signed[Any] | None, data: bytes
    ) -> None:
        if destination not in self.nodes and ("twin", destination[1]) not in self.nodes:
            return  # a traitor may address anyone; nobody is there
        if self.twin_route is not None:
            destinations = self._twin_destinations(source, destination)
            if destinations is not None:
                for target in destinations:
                    self._send_one(source, target, message, data)
                return
        self._send_one(source, destination, message, data)

    def _twin_destinations(self, source: Address, destination: Address) -> list[Address] | None:
        """Where a message goes when the sender or the destination has a twin."""
        assert self.twin_route is not None
        if destination[0] == "replica" and ("twin", destination[1]) in self.nodes:
            route = self.twin_route(self.now, source, destination[1])
            return [
                *([destination] if route in ("replica", "both") else []),
                *([("twin", destination[1])] if route in ("twin", "both") else []),
            ]
        if source[0] in ("replica", "twin") and ("twin", source[1]) in self.nodes:
            route = self.twin_route(self.now, destination, source[1])
            return [destination] if route in (source[0], "both") else []
        return None

    def _send_one(
        self, source: Address, destination: Address, message: Signed[Any] | None, data: bytes
    ) -> None:
        if destination not in self.nodes:
            return
        self.messages_sent += 1
        if (
            self._cut(source)
            or self._cut(destination)
            or (self.intercept is not None and not self.intercept(source, destination, message))
        ):
            if self.on_transmit is not None:
                self.on_transmit(source, destination, data, [])
            return
        # The channel: who the receiver knows sent it (an authenticated connection
        # in the runtime); a twin holds replica k's identity and keys. The source
        # travels along for on_deliver only: the receiver never sees it.
        delivery = (_channel(source) if self.channels else None, data, source)
        if self.fault_model is not None and {source[0], destination[0]} <= {"replica", "twin"}:
            # The model's delays come on top of the usual one tick in flight.
            arrivals = [
                1 + delay for delay in self.fault_model.decide(self.now, source[1], destination[1])
            ]
            for arrival in arrivals:
                self._push(self.now + arrival, _DELIVERY, destination, delivery)
            if self.on_transmit is not None:
                self.on_transmit(source, destination, data, arrivals)
            return
        faults = self.faults
        rng = self.rng
        copies = 1
        if faults.drop and rng.random() < faults.drop:
            copies = 0
        elif faults.duplicate and rng.random() < faults.duplicate:
            copies = 2
        arrivals = []
        for _ in range(copies):
            delay = faults.min_delay_ticks
            if faults.max_delay_ticks > faults.min_delay_ticks:
                delay = rng.randint(faults.min_delay_ticks, faults.max_delay_ticks)
            self._push(self.now + delay, _DELIVERY, destination, delivery)
            arrivals.append(delay)
        if self.on_transmit is not None:
            self.on_transmit(source, destination, data, arrivals)

    def _cut(self, address: Address) -> bool:
        return address[0] == "replica" and address[1] in self.isolated

    def _push(self, time: int, kind: int, address: Address, payload: Any) -> None:
        heapq.heappush(self._heap, (time, next(self._order), kind, address, payload))


_DELIVERY = 0
_TIMER = 1


def _channel(address: Address) -> tuple[str, int]:
    return ("replica", address[1]) if address[0] == "twin" else address


# ------------------------------------------------------------------- a cluster


class SharedDecoder:
    """A memo of :func:`pbft.encoding.decode_signed` shared by a simulated cluster's nodes.

    Every replica still decodes and checks every frame it receives, but a frame
    broadcast to n - 1 replicas is parsed once: decoding is a pure function of
    the bytes and the size limit, and decoded messages are frozen values, so
    handing each receiver the same object changes nothing it can observe.
    Failures are not remembered (each receiver raises its own
    ``DecodeError``). The memo holds at most ``max_bytes`` of frames, then
    starts over, so a traitor's flood cannot grow it.
    """

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self._memo: dict[tuple[bytes, int], Signed[Any]] = {}

    def __call__(self, data: bytes, max_bytes: int) -> Signed[Any]:
        key = (data, max_bytes)
        signed = self._memo.get(key)
        if signed is not None:
            return signed
        signed = decode_signed(data, max_bytes)
        if self.held_bytes + len(data) > self.max_bytes:
            self._memo.clear()
            self.held_bytes = 0
        self._memo[key] = signed
        self.held_bytes += len(data)
        return signed


def derive_signer(seed: int, role: str, index: int, scheme: str = ED25519) -> Signer:
    """A deterministic key for a test or simulated principal (never for real use)."""
    secret = hashlib.sha256(b"pbft-test-key|%d|%s|%d" % (seed, role.encode(), index)).digest()
    if scheme == KEYED_HASH:
        return KeyedHashSigner(secret)
    return Ed25519Signer.from_seed(secret)


@attrs.define
class SimCluster:
    """n replicas and some clients wired to one :class:`Network`."""

    config: ClusterConfig
    params: ProtocolParams
    network: Network
    replicas: dict[int, Replica]
    clients: dict[int, Client]
    replica_signers: dict[int, Signer]
    client_signers: dict[int, Signer]
    decoder: SharedDecoder = attrs.field(factory=SharedDecoder)

    def fresh_replica(self, replica_id: int) -> Replica:
        """A new, empty replica with ``replica_id``'s identity (to recover or to wrap)."""
        signer = self.replica_signers[replica_id]
        return Replica(replica_id, self.config, signer, self.params, decoder=self.decoder)

    def restart(self, replica_id: int, journal: Any) -> Replica:
        """Crash-restart: a fresh replica recovered from ``journal`` (anything with
        ``load()`` and ``record(replica, effects)``) takes the old one's place."""
        fresh = self.fresh_replica(replica_id)
        effects = fresh.recover(journal.load())
        journal.record(fresh, effects)
        self.replicas[replica_id] = fresh
        self.network.replace(("replica", replica_id), fresh, effects)
        return fresh

    def honest_histories(
        self, exclude: Iterable[int] = ()
    ) -> dict[int, list[tuple[int, int, bytes]]]:
        skip = set(exclude)
        return {
            replica: [(e.seq, e.view, e.digest) for e in executed]
            for replica, executed in self.network.executed.items()
            if replica not in skip
        }


def make_cluster(
    f: int = 1,
    clients: int = 2,
    seed: int = 0,
    params: ProtocolParams | None = None,
    faults: LinkFaults | None = None,
    scheme: str = ED25519,
    n: int | None = None,
    retransmit_timeout_ticks: int = 500,
) -> SimCluster:
    """Build a cluster of n = 3f+1 replicas (or ``n``) and ``clients`` clients on a network."""
    n = n if n is not None else 3 * f + 1
    params = params or ProtocolParams()
    replica_signers = {i: derive_signer(seed, "replica", i, scheme) for i in range(n)}
    client_signers = {c: derive_signer(seed, "client", c, scheme) for c in range(clients)}
    config = ClusterConfig(
        cluster_id=f"sim-{seed}",
        f=f,
        replica_keys=tuple(replica_signers[i].public_key for i in range(n)),
        client_keys=tuple(client_signers[c].public_key for c in range(clients)),
        scheme=scheme,
    )
    network = Network(seed, faults)
    # Channels are needed only when replies rely on them.
    network.channels = not params.signed_replies
    decoder = SharedDecoder()
    replicas = {
        i: Replica(i, config, replica_signers[i], params, decoder=decoder) for i in range(n)
    }
    client_nodes = {
        c: Client(
            c,
            config,
            client_signers[c],
            retransmit_timeout_ticks,
            signed_replies=bool(params.signed_replies),
            decoder=decoder,
            read_only=kv.is_read_only if params.fast_reads else None,
        )
        for c in range(clients)
    }
    for i, replica in replicas.items():
        network.add_replica(replica, i)
    for c, client in client_nodes.items():
        network.add_client(client, c)
    return SimCluster(
        config, params, network, replicas, client_nodes, replica_signers, client_signers, decoder
    )
