"""A traitor's forgeries in a runtime trace: the faults side marks the frames it made up.

The honest node logs every frame it sends, forged or not, since it cannot tell (and must
not: honest code has no traitor branches). The composition root that wraps a replica in a
:class:`~faults.traitors.base.Traitor` (``pbft replica --traitor``, the scenario runner)
calls :func:`report_forgeries`, and from then on each send a behaviour rewrote, forged,
replayed or added is also logged as a ``fault`` event of fault ``traitor`` with the
behaviour's name, ``forged: true`` and the frame's id: the same id as the ``send`` the node
logs for it, since both hash the same encoded bytes (``docs/trace.md``). A ``crash``
behaviour's going down and coming back are logged as ``fault`` events ``crash`` and
``restart`` too, when the step that made them happen returns.
"""

from __future__ import annotations

from typing import Any

from faults.traitors.base import Traitor
from faults.traitors.behaviours import Crash
from pbft.encoding import encode_signed
from pbft.events import Effect, Event, SendBytes, SendToClient, SendToReplicas
from pbft.runtime.eventlog import EventLog, describe, lane
from pbft.trace.format import frame_id


def report_forgeries(traitor: Traitor, log: EventLog) -> None:
    """Log every made-up send of ``traitor`` on ``log``, and its crashes and restarts (nothing
    unless the log is detailed)."""
    if not log.detailed:
        return
    me = traitor.replica.id

    def report(behaviour: str, effect: Effect) -> None:
        fields: dict[str, Any]
        if type(effect) is SendBytes:
            frame, fields = effect.data, {"type": "BYTES"}
            to = [lane(("replica", r)) for r in effect.replicas if r != me]
        elif type(effect) is SendToReplicas:
            frame, fields = encode_signed(effect.message), describe(effect.message)
            to = [lane(("replica", r)) for r in effect.replicas if r != me]
        elif type(effect) is SendToClient:
            frame, fields = encode_signed(effect.message), describe(effect.message)
            to = [lane(("client", effect.client))]
        else:
            return
        if not to:
            return  # sent to nobody but itself: never on the wire
        log.event(
            "fault",
            fault="traitor",
            behaviour=behaviour,
            forged=True,
            frame=frame_id(frame),
            detail=f"{behaviour}: {fields['type']} made up",
            to=to,
            **fields,
        )

    traitor.on_forged = report
    _report_crashes(traitor, log)


def _report_crashes(traitor: Traitor, log: EventLog) -> None:
    """Wrap ``traitor.step`` to log each crash behaviour's crash and restart once."""
    crashes = [behaviour for behaviour in traitor.behaviours if isinstance(behaviour, Crash)]
    if not crashes:
        return
    honest_step = traitor.step
    reported = {id(crash): (False, False) for crash in crashes}  # (crashed, restarted)
    name = lane(("replica", traitor.replica.id))

    def step(event: Event) -> list[Effect]:
        effects = honest_step(event)
        for crash in crashes:
            crashed, restarted = reported[id(crash)]
            if crash.crashed_at is not None and not crashed:
                log.event("fault", fault="crash", detail=f"{name} crashed")
            if crash.restarted and not restarted:
                log.event("fault", fault="restart", detail=f"{name} restarted from its journal")
            reported[id(crash)] = (crash.crashed_at is not None, crash.restarted)
        return effects

    traitor.step = step  # type: ignore[method-assign]
