"""Logs of what a node does: human-readable lines, or one JSON object per event.

The node hands every step's effects to :meth:`EventLog.effects`, which turns
the protocol's notices into events: ``sent``, ``received``, ``rejected`` (with
the reason), ``prepared``, ``committed``, ``executed``, ``checkpoint-stable``,
``view-change-started``, ``view-change-completed``, ``state-transferred``.
Each JSON event carries the node, its view, the sequence number where there is
one, and a wall-clock timestamp. Human mode prints the rarer events (view
changes, checkpoints, state transfer, connections) and leaves per-message
events to ``--verbose``. Private keys are never logged: nothing here ever sees
one, and messages are logged by type and numbers, not by content.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, TextIO

from pbft.encoding import DecodeError, decode_signed
from pbft.events import (
    CheckpointStable,
    Committed,
    Dropped,
    Effect,
    Executed,
    NewViewEntered,
    Prepared,
    SendToClient,
    SendToReplicas,
    StateTransferred,
    ViewChangeStarted,
)

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
    "traitor",
}


class EventLog:
    def __init__(
        self,
        node: str,
        json_lines: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.node = node
        self.json_lines = json_lines
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.detailed = json_lines or verbose

    def event(
        self, event: str, view: int | None = None, seq: int | None = None, **fields: Any
    ) -> None:
        if not (self.detailed or event in NOTABLE):
            return
        now = datetime.datetime.now(datetime.UTC)
        if self.json_lines:
            record: dict[str, Any] = {
                "ts": now.isoformat(timespec="microseconds"),
                "node": self.node,
            }
            record["event"] = event
            if view is not None:
                record["view"] = view
            if seq is not None:
                record["seq"] = seq
            record.update({key: _plain(value) for key, value in fields.items()})
            self.stream.write(json.dumps(record) + "\n")
        else:
            where = "" if view is None else f" view {view}"
            where += "" if seq is None else f" seq {seq}"
            details = " ".join(f"{key}={_plain(value)}" for key, value in fields.items())
            self.stream.write(
                f"{now:%H:%M:%S.%f} {self.node}{where}: {event} {details}".rstrip() + "\n"
            )
        self.stream.flush()

    def received(self, view: int, frame: bytes, sender: str) -> None:
        """Log an incoming message (decoded again here: only when events are detailed)."""
        if not self.detailed:
            return
        try:
            message = decode_signed(frame).message
        except DecodeError:
            return
        self.event(
            "received", view, getattr(message, "seq", None), type=message.TYPE, sender=sender
        )

    def effects(self, view: int, effects: list[Effect]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is SendToReplicas:
                if self.detailed:
                    message = effect.message.message
                    self.event(
                        "sent",
                        view,
                        getattr(message, "seq", None),
                        type=message.TYPE,
                        to=list(effect.replicas),
                    )
            elif kind is SendToClient:
                if self.detailed:
                    self.event("sent", view, type="REPLY", to=f"client {effect.client}")
            elif kind is Dropped:
                self.event("rejected", view, type=effect.message_type, reason=effect.reason)
            elif kind is Prepared:
                self.event("prepared", effect.view, effect.seq)
            elif kind is Committed:
                self.event("committed", effect.view, effect.seq)
            elif kind is Executed:
                self.event(
                    "executed",
                    effect.view,
                    effect.seq,
                    digest=effect.digest.hex()[:16],
                    requests=len(effect.requests),
                )
            elif kind is CheckpointStable:
                self.event(
                    "checkpoint-stable", view, effect.seq, digest=effect.state_digest.hex()[:16]
                )
            elif kind is ViewChangeStarted:
                self.event("view-change-started", effect.new_view)
            elif kind is NewViewEntered:
                self.event(
                    "view-change-completed",
                    effect.view,
                    reissued=effect.reissued,
                    null_requests=effect.null_requests,
                )
            elif kind is StateTransferred:
                self.event("state-transferred", view, effect.seq)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return value
