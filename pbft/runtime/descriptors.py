"""File descriptors: a connection flood must cost connections, never the replica itself.

Every accepted connection holds a file descriptor, and so do the journal, the
status file and the links to the other replicas. A stranger who opens
connections faster than handshakes time out (thousands held open: they cost it
nothing) would otherwise drive the process to its descriptor limit; then
``accept`` fails in a loop, and so does every ``open``: the status file, the
journal, the evidence folder, and the replica stops.

Two measures:

* :func:`raise_open_files_limit` raises the soft ``RLIMIT_NOFILE`` to the hard
  limit at start (the soft default, often 1024, is far below what the kernel
  allows an unprivileged process);
* :class:`ConnectionSlots` caps the connections served at once, leaving
  :func:`reserved_descriptors` (:data:`RESERVED_DESCRIPTORS`, or half of a
  smaller limit) for everything else. A connection beyond the cap
  is closed as soon as it is accepted: under a flood, new connections fail (the
  handshake timeout frees a stalled one's slot within seconds) while
  established ones, and the replica, carry on.

Who connects is known only after the handshake, so the cap counts every
connection; but of the ``capacity`` slots, ``replica_reserve``
(:func:`replica_reserve`) are kept from authenticated clients: a client that
proves itself while :meth:`ConnectionSlots.admit_client` finds the client share
full is closed at once (``client-share-full``). Authenticated clients therefore
never hold more than ``capacity - replica_reserve`` slots, and since a
principal holds one connection at a time (:mod:`pbft.runtime.sessions`), the
reserve is room for the replicas' links and for handshakes in progress.
"""

from __future__ import annotations

import resource

#: Descriptors kept back from connections: journal, status and evidence files, peer
#: links, the listener, the metrics server, Python's own (half of a smaller limit).
RESERVED_DESCRIPTORS = 128
#: Slots kept from authenticated clients, per peer replica (its link, and its next
#: one while it reconnects) ...
REPLICA_SLOTS_PER_PEER = 2
#: ... and beyond those, for handshakes in progress (as ``HandshakeSlots``' reserve).
REPLICA_SLOTS_EXTRA = 16


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep what we have
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def reserved_descriptors(open_files_limit: int) -> int:
    """Descriptors kept back from connections: :data:`RESERVED_DESCRIPTORS`, or half the limit."""
    return min(RESERVED_DESCRIPTORS, open_files_limit // 2)


def connection_budget(open_files_limit: int | None = None) -> int:
    """How many connections a process with ``open_files_limit`` descriptors may serve.

    Never more than the limit minus :func:`reserved_descriptors` (at least one).
    """
    if open_files_limit is None:
        open_files_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, open_files_limit - reserved_descriptors(open_files_limit))


def replica_reserve(capacity: int, replicas: int) -> int:
    """Slots of ``capacity`` kept from authenticated clients in a cluster of ``replicas``."""
    wanted = REPLICA_SLOTS_PER_PEER * max(0, replicas - 1) + REPLICA_SLOTS_EXTRA
    return min(wanted, capacity // 2)


class ConnectionSlots:
    """A count of connections served, capped at ``capacity``; clients within their share.

    ``replica_reserve`` of the slots are never held by authenticated clients
    (:meth:`admit_client`); connections in their handshake and replicas may use
    all of them.
    """

    def __init__(self, capacity: int, replica_reserve: int = 0) -> None:
        if capacity < 1:
            raise ValueError("a connection cap must be at least 1")
        if not 0 <= replica_reserve < capacity:
            raise ValueError("the replica reserve must leave clients at least one slot")
        self.capacity = capacity
        self.replica_reserve = replica_reserve
        self.in_use = 0
        #: The most connections served at once, and the connections refused at the cap.
        self.peak = 0
        self.refused = 0
        #: Authenticated client connections served, and those closed at the client share.
        self.clients = 0
        self.clients_refused = 0

    @property
    def client_share(self) -> int:
        """The most slots authenticated clients hold at once."""
        return self.capacity - self.replica_reserve

    def acquire(self) -> bool:
        """Take a slot; False (counted) when all ``capacity`` are taken."""
        if self.in_use >= self.capacity:
            self.refused += 1
            return False
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return True

    def release(self) -> None:
        self.in_use -= 1

    def admit_client(self) -> bool:
        """An acquired slot turned out to be a client's: False (counted) beyond the share."""
        if self.clients >= self.client_share:
            self.clients_refused += 1
            return False
        self.clients += 1
        return True

    def release_client(self) -> None:
        """A connection :meth:`admit_client` admitted ended (call :meth:`release` too)."""
        self.clients -= 1
