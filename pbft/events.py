"""What goes into a node's ``step`` and what comes out.

Events are inputs (bytes arrived, a timer fired, the application invoked an
operation); effects are instructions to the driver (send, set or cancel a
timer) and notices about what happened (executed, checkpoint stable, view
changed, message dropped) that drivers log, trace and check. Every effect is a
small frozen value, so a run can be recorded and compared.
"""

from __future__ import annotations

from typing import Any

import attrs

from pbft.evidence import Evidence
from pbft.messages import PreparedCertificate, PrePrepare, Signed

# ---------------------------------------------------------------------------- events


@attrs.frozen(slots=True)
class Receive:
    """Bytes arrived from the network.

    ``channel`` names the principal an authenticated channel vouches for, when
    there is one; today every message is authenticated by its own signature.
    """

    data: bytes
    channel: tuple[str, int] | None = None


@attrs.frozen(slots=True)
class TimerFired:
    name: str


@attrs.frozen(slots=True)
class Invoke:
    """The application asks a client to run ``operation`` (clients only)."""

    operation: bytes
    #: Lowest timestamp to use; drivers pass a wall-clock value so that
    #: timestamps keep increasing across client processes.
    min_timestamp: int = 0


Event = Receive | TimerFired | Invoke

# --------------------------------------------------------------------------- effects


@attrs.frozen(slots=True)
class SendToReplicas:
    replicas: tuple[int, ...]
    message: Signed[Any]


@attrs.frozen(slots=True)
class SendToClient:
    client: int
    message: Signed[Any]


@attrs.frozen(slots=True)
class SendBytes:
    """Send raw bytes to replicas. Honest nodes never emit it: it lets a traitor
    (see the ``faults`` package) put junk on the wire through the same drivers."""

    replicas: tuple[int, ...]
    data: bytes


@attrs.frozen(slots=True)
class SetTimer:
    """(Re)start timer ``name`` to fire after ``ticks``; an earlier setting is replaced."""

    name: str
    ticks: int


@attrs.frozen(slots=True)
class CancelTimer:
    name: str


# --------------------------------------------------------------------------- notices


@attrs.frozen(slots=True)
class Prepared:
    """prepared(m, v, n, i) became true; the certificate is what a VIEW-CHANGE will carry."""

    certificate: PreparedCertificate

    @property
    def seq(self) -> int:
        return self.certificate.seq

    @property
    def view(self) -> int:
        return self.certificate.view


@attrs.frozen(slots=True)
class Committed:
    """committed-local(m, v, n, i) became true: the batch will execute at ``seq``."""

    pre_prepare: Signed[PrePrepare]

    @property
    def seq(self) -> int:
        return self.pre_prepare.message.seq

    @property
    def view(self) -> int:
        return self.pre_prepare.message.view


@attrs.frozen(slots=True)
class Executed:
    """The batch at ``seq`` was executed (committed-local and all lower executed)."""

    seq: int
    view: int
    digest: bytes
    requests: tuple[tuple[int, int], ...]  # (client, timestamp) actually executed


@attrs.frozen(slots=True)
class CheckpointStable:
    seq: int
    state_digest: bytes


@attrs.frozen(slots=True)
class ViewChangeStarted:
    new_view: int


@attrs.frozen(slots=True)
class NewViewEntered:
    view: int
    reissued: int  # PRE-PREPAREs in O that carry a prepared request
    null_requests: int  # gaps filled with null requests


@attrs.frozen(slots=True)
class StateTransferred:
    seq: int


@attrs.frozen(slots=True)
class Dropped:
    message_type: str
    reason: str


@attrs.frozen(slots=True)
class EquivocationDetected:
    """A replica signed two conflicting messages for one slot; ``evidence`` proves it.

    Emitted once per (sender, phase, view, seq) while the replica remembers it
    (see :mod:`pbft.evidence`).
    """

    evidence: Evidence


@attrs.frozen(slots=True)
class Completed:
    """A client's operation finished: f+1 replicas sent the same result."""

    timestamp: int
    operation: bytes
    result: bytes


Notice = (
    Prepared
    | Committed
    | Executed
    | CheckpointStable
    | ViewChangeStarted
    | NewViewEntered
    | StateTransferred
    | Dropped
    | EquivocationDetected
)
Effect = SendToReplicas | SendToClient | SendBytes | SetTimer | CancelTimer | Notice | Completed
