"""Admission control: a replica stops reading its clients while its core is full.

Theory of operation
-------------------
A replica must never drop a request to shed load: a request dropped at the
primary leaves the client to retransmit to every replica, each backup starts
a view-change timer for it, and a primary that is merely busy looks faulty (a
storm of our own making, issue 9). Nor should it read every request offered:
each one read is verified and held, and at a thousand clients the primary
would spend its time on requests it cannot order yet, while the PREPAREs and
COMMITs that free room wait behind them.

So admission is *transport backpressure*, with no protocol change and nothing
a traitor could forge or abuse: :class:`AdmissionGate` holds back the bursts of
frames read from CLIENT connections while the core holds at least ``bound``
requests received and not yet executed (``Replica.requests_waiting``), and lets
them through once it holds fewer. A held connection is not read any further,
so its later requests wait in the kernel's socket buffers and then in the
client's own bounded queue (TCP flow control); nothing is dropped, and the
client's adaptive retransmission timer, not a drop, decides when it asks the
other replicas. Replica connections are never held: the agreement protocol
that executes requests, and so makes room, must keep moving.

The count rises only when a burst is stepped, and a client's channel carries
only that client's requests (``channel-mismatch`` otherwise), of which the core
keeps one (``pending`` is per client, §4.1). So a burst admitted below the
bound leaves the core at most *at* the bound: from client connections the
core never holds more. Requests a backup relays to the primary come over a
replica connection and are not held; each backup bounds its own, so they are
few (the gate works at every replica alike).

Waking: the driver calls :meth:`AdmissionGate.release` after every step; it
unparks, first come first served (a Trio ``ParkingLot``), as many held
connections as there is room, and each re-checks the count when it runs, so
the check and the step that follows are one atomic action between awaits.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from pbft.runtime.handshake import Identity


@attrs.frozen
class AdmissionStatistics:
    """A snapshot of one :class:`AdmissionGate`."""

    #: Requests held by the core at most before client connections are held back.
    bound: int
    #: Requests the core holds now (received, not yet executed).
    waiting: int
    #: The most the core held after any step so far (relayed requests included).
    peak_waiting: int
    #: Client connections held back right now.
    held: int
    #: Times a client connection was held back, in all.
    holds: int


class AdmissionGate:
    """Holds client connections back while ``waiting()`` is at least ``bound``."""

    def __init__(self, bound: int, waiting: Callable[[], int]) -> None:
        if bound < 1:
            raise ValueError("admission needs a bound of at least 1 request")
        self.bound = bound
        self._waiting = waiting
        self._lot = trio.lowlevel.ParkingLot()
        self._peak_waiting = waiting()
        self._holds = 0
        self._waking = 0

    async def admit(self, identity: Identity) -> None:
        """Return once a burst from ``identity`` may be stepped; replicas pass at once."""
        if identity[0] != "client":
            return
        while self._waiting() >= self.bound:
            self._holds += 1
            await self._lot.park()
            self._waking -= 1

    def release(self) -> None:
        """After a step: let through as many held connections as there is room for."""
        waiting = self._waiting()
        if waiting > self._peak_waiting:
            self._peak_waiting = waiting
        # Connections woken but not yet run will each take a place: count them as taken.
        room = self.bound - waiting - self._waking
        if room > 0 and self._lot:
            self._waking += len(self._lot.unpark(count=room))

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            bound=self.bound,
            waiting=self._waiting(),
            peak_waiting=self._peak_waiting,
            held=len(self._lot),
            holds=self._holds,
        )
