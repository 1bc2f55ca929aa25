"""Logs of what a node does: human-readable lines, or one trace event per JSON line.

A replica node (and, when asked, a :class:`~pbft.runtime.client.RemoteClient`) hands its log
what it does: every frame it sends (:meth:`EventLog.sent`), every frame it receives with the
effects of the step that frame caused (:meth:`EventLog.received`: a ``Dropped`` effect of that
step means the frame was rejected, and why), the protocol's notices (:meth:`EventLog.effects`:
prepared, committed, executed, checkpoint-stable, view changes, state transfer), network
faults applied to a send (:meth:`EventLog.network_fault`), a client's operations
(:meth:`EventLog.invoked`, :meth:`EventLog.completed`) and its own life (``started``,
``connected``, ``error``...: :meth:`EventLog.event`).

With ``json_lines`` every event is one line of the trace format (:mod:`pbft.trace.format`,
``docs/trace.md``): ``{"t", "wall_ms", "node": "replica-0", "event": "send", ...}``. Each
process writes its own log, so time must be comparable across processes: ``wall_ms`` is the
wall clock in milliseconds since the Unix epoch (microsecond resolution), and ``t`` is
milliseconds since the log's ``origin_ms`` (by default the moment the log was made). Merging
(:mod:`pbft.trace.merge`) orders the logs of a run by ``wall_ms`` and measures ``t`` from the
run's earliest event; on one host every process reads the same clock, across hosts the
merge is as good as their clock synchronisation. A frame is named by
:func:`~pbft.trace.format.frame_id` of its bytes, so a ``send`` in one log pairs with the
``receive`` events in others.

Without ``json_lines``, lines are for people (``HH:MM:SS.ffffff replica 1 view 0 seq 5:
executed ...``); the rarer events are always shown and per-message events (``sent``,
``received``, ``rejected``) only with ``verbose``. A node pays for none of this when its log
is not ``detailed``: callers test :attr:`EventLog.detailed` before encoding anything for it.
Private keys are never logged: nothing here ever sees one, and messages are logged by type,
numbers and digest prefixes, never by content.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from pbft import service as kv
from pbft.encoding import DecodeError, decode_signed
from pbft.events import (
    CheckpointStable,
    Committed,
    Completed,
    Dropped,
    Effect,
    Executed,
    NewViewEntered,
    Prepared,
    StateTransferred,
    ViewChangeStarted,
)
from pbft.messages import PrePrepare, Request, Signed, request_digest
from pbft.trace.format import digest_prefix, frame_id

#: Events a human sees without --verbose.
NOTABLE = {
    "view-change-started",
    "view-change-completed",
    "checkpoint-stable",
    "state-transferred",
    "connected",
    "disconnected",
    "started",
    "stopped",
    "equivocation",
    "error",
    "handshake-failed",
    "input-rejected",
    "connection-refused",
    "traitor",
}

#: A peer as the handshake names it: ("replica", 2) or ("client", 0).
Identity = tuple[str, int]


def lane(identity: Identity) -> str:
    """``("replica", 2)`` -> ``"replica-2"``: the node's name in a trace."""
    return f"{identity[0]}-{identity[1]}"


def wall_clock_ms() -> float:
    """Milliseconds since the Unix epoch, to the microsecond: comparable across processes."""
    return time.time_ns() / 1_000_000


def describe(signed: Signed[Any]) -> dict[str, Any]:
    """The trace fields of a message: type, and view, seq and digest prefix where it has them."""
    message = signed.message
    fields: dict[str, Any] = {"type": message.TYPE}
    view = getattr(message, "view", None)
    if view is None:
        view = getattr(message, "new_view", None)  # a VIEW-CHANGE is about the view it asks for
    if view is not None:
        fields["view"] = view
    seq = getattr(message, "seq", None)
    if seq is not None:
        fields["seq"] = seq
    if type(message) is Request:
        fields["digest"] = digest_prefix(request_digest(signed))
    elif message.TYPE in ("PRE-PREPARE", "PREPARE", "COMMIT"):
        fields["digest"] = digest_prefix(message.digest)
    return fields


def _describe_frame(frame: bytes) -> dict[str, Any]:
    try:
        return describe(decode_signed(frame))
    except DecodeError:
        return {"type": "BYTES"}  # not a message: a traitor's junk


def operation_fields(operation: bytes) -> dict[str, Any]:
    """A key-value operation as the trace shows it: op, key and its values."""
    try:
        name, arguments = kv.decode_operation(operation)
    except ValueError:
        return {"op": "invalid"}  # a Byzantine client's malformed operation
    names = {"put": ("value",), "cas": ("expected", "new")}.get(name, ())
    fields: dict[str, Any] = {"op": name, "key": arguments[0]}
    fields.update(zip(names, arguments[1:], strict=True))
    return fields


def _rejection(effects: Sequence[Effect], message_type: str | None) -> Dropped | None:
    """The ``Dropped`` that refused the frame a step was about, or None if it was accepted.

    A refused frame's ``Dropped`` is the last effect of its step (the core reports the
    refusal once it is done with the frame). A ``Dropped`` of another type earlier in the
    step is about a buffered message the frame released, not about the frame.
    """
    if not effects:
        return None
    last = effects[-1]
    if type(last) is not Dropped:
        return None
    if message_type is not None and last.message_type != message_type:
        return None
    return last


class EventLog:
    def __init__(
        self,
        node: str,
        json_lines: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        origin_ms: float | None = None,
    ) -> None:
        #: The node as people read it ("replica 0"); :attr:`lane` is its trace name.
        self.node = node
        self.lane = node.replace(" ", "-")
        self.json_lines = json_lines
        self.verbose = verbose
        self.stream = stream or sys.stderr
        #: Whether per-message events are written: callers skip their work when not.
        self.detailed = json_lines or verbose
        #: The wall-clock instant (ms since the epoch) at which this log's ``t`` is 0.
        self.origin_ms = wall_clock_ms() if origin_ms is None else origin_ms

    # ------------------------------------------------------------------ writing

    def event(
        self,
        event: str,
        view: int | None = None,
        seq: int | None = None,
        *,
        at_wall_ms: float | None = None,
        **fields: Any,
    ) -> None:
        """Log ``event``; ``at_wall_ms``: when it happened, if earlier than now (JSON only)."""
        if not (self.detailed or event in NOTABLE):
            return
        if self.json_lines:
            record: dict[str, Any] = {}
            if view is not None:
                record["view"] = view
            if seq is not None:
                record["seq"] = seq
            record.update(fields)
            self._write_json(event, record, at_wall_ms)
            return
        now = datetime.datetime.now(datetime.UTC)
        where = "" if view is None else f" view {view}"
        where += "" if seq is None else f" seq {seq}"
        details = " ".join(f"{key}={_plain(value)}" for key, value in fields.items())
        self.stream.write(
            f"{now:%H:%M:%S.%f} {self.node}{where}: {event} {details}".rstrip() + "\n"
        )
        self.stream.flush()

    def _write_json(
        self, event: str, fields: dict[str, Any], at_wall_ms: float | None = None
    ) -> None:
        wall_ms = wall_clock_ms() if at_wall_ms is None else at_wall_ms
        record: dict[str, Any] = {
            "t": round(wall_ms - self.origin_ms, 3),
            "wall_ms": round(wall_ms, 3),
            "node": self.lane,
            "event": event,
        }
        record.update({key: _plain(value) for key, value in fields.items()})
        self.stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.stream.flush()

    # ----------------------------------------------------------------- messages

    def sent(
        self, frame: bytes, receivers: Iterable[Identity], signed: Signed[Any] | None = None
    ) -> None:
        """A frame (``signed``, encoded) went out to ``receivers``; call only when :attr:`detailed`.

        Without ``signed`` (raw bytes a traitor put on the wire) the frame is decoded here,
        and a frame that does not decode is of type ``BYTES``.
        """
        receivers = list(receivers)
        if not receivers:
            return
        fields = _describe_frame(frame) if signed is None else describe(signed)
        if self.json_lines:
            fields["frame"] = frame_id(frame)
            fields["to"] = [lane(receiver) for receiver in receivers]
            self._write_json("send", fields)
        else:
            # As plain lines always said it: replica ids, or "client C".
            clients = [f"client {index}" for role, index in receivers if role == "client"]
            to: Any = clients[0] if clients else [index for _, index in receivers]
            self.event("sent", fields.get("view"), fields.get("seq"), type=fields["type"], to=to)

    def received(self, frame: bytes, sender: Identity, step: Sequence[Effect]) -> None:
        """A frame arrived from ``sender`` and was stepped; ``step`` is what that step returned.

        Call only when :attr:`detailed`. The frame is decoded again here, for its type and
        numbers: only traced runs pay for it.
        """
        fields = _describe_frame(frame)
        known = fields["type"] != "BYTES"
        rejection = _rejection(step, fields["type"] if known else None)
        if not self.json_lines:
            if known:
                self.event(
                    "received", fields.get("view"), fields.get("seq"),
                    type=fields["type"], sender=f"{sender[0]} {sender[1]}",
                )  # fmt: skip
            return
        if not known and rejection is not None:
            fields["type"] = rejection.message_type
        fields["frame"] = frame_id(frame)
        fields["from"] = lane(sender)
        fields["accepted"] = rejection is None
        if rejection is not None:
            fields["reason"] = rejection.reason
        self._write_json("receive", fields)

    def network_fault(
        self, frame: bytes, receiver: Identity, delays_ms: Sequence[int], partitioned: bool
    ) -> None:
        """The network-fault layer dropped, delayed or duplicated a frame to ``receiver``."""
        common = {"frame": frame_id(frame), "to": [lane(receiver)]}
        if not delays_ms:
            detail = "cut by a partition" if partitioned else "dropped by a loss rule"
            self.event("fault", fault="loss", detail=detail, **common)
            return
        if len(delays_ms) > 1:
            self.event("fault", fault="duplicate", detail=f"{len(delays_ms)} copies", **common)
        if any(delays_ms):
            shown = "+".join(str(delay) for delay in delays_ms)
            self.event(
                "fault", fault="delay", detail=f"{shown} ms", delay_ms=list(delays_ms), **common
            )

    # ----------------------------------------------------------- client operations

    def invoked(self, operation: bytes, timestamp: int | None) -> None:
        """A client started an operation (call only when :attr:`detailed`)."""
        self.event("invoke", **operation_fields(operation), timestamp=timestamp)

    def completed(self, completed: Completed) -> None:
        """A client's operation finished: f+1 (or 2f+1) replicas agreed on its result."""
        fields = operation_fields(completed.operation)
        fields = {"op": fields["op"], "key": fields.get("key")}
        try:
            result: Any = kv.decode_result(completed.result)
        except ValueError:
            result = completed.result.hex()[:16]
        self.event("complete", **fields, result=result, timestamp=completed.timestamp)

    # ------------------------------------------------------------------ notices

    def effects(self, view: int, effects: list[Effect]) -> None:
        """Log the protocol's notices among one step's (or one burst's) effects."""
        for effect in effects:
            kind = type(effect)
            if kind is Dropped:
                # In a trace the refusal is on the frame's ``receive`` event.
                if not self.json_lines:
                    self.event("rejected", view, type=effect.message_type, reason=effect.reason)
            elif kind is Prepared:
                batch = self._batch(effect.certificate.pre_prepare)
                self.event("prepared", effect.view, effect.seq, **batch)
            elif kind is Committed:
                self.event("committed", effect.view, effect.seq, **self._batch(effect.pre_prepare))
            elif kind is Executed:
                self.event(
                    "executed", effect.view, effect.seq,
                    digest=digest_prefix(effect.digest), requests=len(effect.requests),
                )  # fmt: skip
            elif kind is CheckpointStable:
                self.event(
                    "checkpoint-stable", view, effect.seq, digest=digest_prefix(effect.state_digest)
                )
            elif kind is ViewChangeStarted:
                if self.json_lines:
                    self.event("view-change-started", view, new_view=effect.new_view)
                else:
                    self.event("view-change-started", effect.new_view)
            elif kind is NewViewEntered:
                self.event(
                    "view-change-completed", effect.view,
                    reissued=effect.reissued, null_requests=effect.null_requests,
                )  # fmt: skip
            elif kind is StateTransferred:
                self.event("state-transferred", view, effect.seq)

    def _batch(self, pre_prepare: Signed[PrePrepare]) -> dict[str, str]:
        """The batch digest a trace follows a request by (human lines leave it out)."""
        return {"digest": digest_prefix(pre_prepare.message.digest)} if self.json_lines else {}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()[:16]
    return value
