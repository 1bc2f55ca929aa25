"""From trace events to a space-time diagram: lanes, rows, arrows, marks and bands.

This is the geometry half of the picture (:mod:`pbft.trace.render` turns it into HTML). It
reads the events of one trace (``docs/trace.md``) and decides where everything goes, without
writing any markup:

* **Lanes.** One vertical lane per replica, then one per client, in the header's order.
* **Rows, time downwards.** Events are taken in time order and each gets a row: below every
  event of an earlier time, below the previous event of its own lane, and (for a receive)
  below the send it pairs with. Events of one instant on different lanes share a row. This
  is ShiViz's logical layout with PBFT's clock kept monotonic, so a run whose normal case
  takes 30 ms and whose view change waits 600 ms still reads: long idle gaps add a little
  space (:func:`gap_px`), not 600 rows.
* **Arrows.** One per ``receive`` event (a delivered frame), drawn from the send it pairs
  with: same frame id, sent by the receive's ``from`` node to it, the latest such send at or
  before the receive. A send destination with no receive is a lost frame: a short stub.
* **Highlights.** A frame named by a traitor ``fault`` event with ``forged`` true is forged;
  two PRE-PREPAREs of one (view, seq) with different digests are conflicting.

The sequence filter keeps the events whose ``seq`` lies in the range, and every event
without a ``seq`` (requests, replies, view changes) inside the time those events span.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

ROW_PX = 13
#: The most space one idle gap between two instants adds, whatever its length.
MAX_GAP_PX = 40

#: The picture's phases: message TYPE -> phase key (its colour and legend entry).
PHASE_OF_TYPE = {
    "REQUEST": "request",
    "READ": "request",
    "PRE-PREPARE": "pre-prepare",
    "PREPARE": "prepare",
    "COMMIT": "commit",
    "REPLY": "reply",
    "REPLY-DIGEST": "reply",
    "CHECKPOINT": "checkpoint",
    "VIEW-CHANGE": "view-change",
    "NEW-VIEW": "new-view",
    "FETCH": "fetch-state",
    "FETCH-STATE": "fetch-state",
    "STATE": "fetch-state",
    "FETCH-COMMITTED": "fetch-state",
    "COMMIT-CERTIFICATE": "fetch-state",
}
PROGRESS_EVENTS = ("prepared", "committed", "executed", "state-transferred")


@attrs.define
class Arrow:
    """One message: delivered (``received_t`` set) or lost on the way (a stub)."""

    type: str
    sender: str
    receiver: str
    sent_t: float | None
    received_t: float | None
    start_row: int
    end_row: int
    accepted: bool = True
    reason: str | None = None
    view: int | None = None
    seq: int | None = None
    digest: str | None = None
    frame: str | None = None
    forged: bool = False
    conflict: bool = False
    #: (client, request timestamp) of a REQUEST or REPLY: ties a reply to its request.
    request: tuple[int, int] | None = None

    @property
    def phase(self) -> str:
        return PHASE_OF_TYPE.get(self.type, "other")

    @property
    def delivered(self) -> bool:
        return self.received_t is not None


@attrs.define
class Mark:
    """A point event on a lane: protocol progress, a client's operation, a fault."""

    node: str
    row: int
    event: dict[str, Any]
    violating: bool = False


@attrs.define
class Band:
    """A stretch of rows: a view change on one lane (or every lane), a crash, a partition."""

    kind: str  # view-change | crash | partition | checkpoint | new-view
    label: str
    first_row: int
    last_row: int
    node: str | None = None  # None: across every lane


@attrs.define
class Layout:
    lanes: list[str]
    traitors: dict[str, str]
    arrows: list[Arrow]
    marks: list[Mark]
    bands: list[Band]
    row_y: list[int]  # row -> y offset in pixels from the diagram's top
    row_t: list[float]  # row -> the time of its first event
    violations: list[dict[str, Any]]

    @property
    def height_px(self) -> int:
        return (self.row_y[-1] if self.row_y else 0) + 2 * ROW_PX


def gap_px(gap_ms: float) -> int:
    """Extra space for ``gap_ms`` of silence: logarithmic, so 1 ms and 600 ms both read."""
    if gap_ms <= 0:
        return 0
    return min(MAX_GAP_PX, round(4 * math.log2(1 + gap_ms)))


def lanes_of(header: dict[str, Any], replicas: set[int] | None) -> list[str]:
    shown = [r for r in header.get("replicas", []) if replicas is None or r in replicas]
    return [f"replica-{r}" for r in shown] + [f"client-{c}" for c in header.get("clients", [])]


def filter_by_seq(
    events: Sequence[dict[str, Any]], seq_from: int | None, seq_to: int | None
) -> list[dict[str, Any]]:
    """The events of sequence numbers [seq_from, seq_to], and the seq-less ones between them."""
    if seq_from is None and seq_to is None:
        return list(events)
    low = -math.inf if seq_from is None else seq_from
    high = math.inf if seq_to is None else seq_to
    times = [e["t"] for e in events if isinstance(e.get("seq"), int) and low <= e["seq"] <= high]
    if not times:
        return []
    first, last = min(times), max(times)
    # The requests and replies of the kept batches, when their digests say so.
    digests = {e.get("digest") for e in events if isinstance(e.get("seq"), int)} - {None}
    kept = []
    sent: set[str] = set()  # frames whose send we keep: their receives stay, however late
    invoked: set[tuple[str, Any]] = set()  # likewise a kept invocation's completion
    for event in events:
        seq = event.get("seq")
        if event["event"] == "violation":
            keep = True  # the run's verdict, whatever part of it is drawn
        elif isinstance(seq, int):
            keep = low <= seq <= high
        elif event["event"] == "receive":
            keep = event.get("frame") in sent or first <= event["t"] <= last
            keep = keep or event.get("digest") in digests
        elif event["event"] == "complete":
            keep = (event["node"], event.get("timestamp")) in invoked
        else:
            keep = first <= event["t"] <= last or event.get("digest") in digests
        if not keep:
            continue
        kept.append(event)
        if event["event"] == "send":
            sent.add(event.get("frame"))
        elif event["event"] == "invoke":
            invoked.add((event["node"], event.get("timestamp")))
    return kept


class _Rows:
    """Hands out rows in time order (see the module docstring)."""

    def __init__(self) -> None:
        self.row_y: list[int] = []
        self.row_t: list[float] = []
        self._floor = -1  # the last row used by an earlier instant
        self._last_t: float | None = None
        self._lane_row: dict[str, int] = {}
        self._gap = 0

    def take(self, t: float, node: str, after: int = -1) -> int:
        if self._last_t is None or t > self._last_t:
            if self._last_t is not None:
                self._gap += gap_px(t - self._last_t)
            self._floor = len(self.row_y) - 1
            self._last_t = t
        row = max(self._floor + 1, self._lane_row.get(node, -1) + 1, after + 1)
        while len(self.row_y) <= row:
            self.row_y.append(len(self.row_y) * ROW_PX + self._gap)
            self.row_t.append(t)
        self._lane_row[node] = row
        return row


def request_key(event: dict[str, Any]) -> tuple[int, int] | None:
    """(client, timestamp) names one request: from a REQUEST's or REPLY's ``client`` field,
    or from the client lane of an ``invoke`` or ``complete``."""
    timestamp = _int(event.get("timestamp"))
    client = _int(event.get("client"))
    node = str(event.get("node", ""))
    if client is None and event.get("event") in ("invoke", "complete"):
        client = int(node.rsplit("-", 1)[1]) if node.rsplit("-", 1)[-1].isdigit() else None
    return None if client is None or timestamp is None else (client, timestamp)


@attrs.frozen
class Links:
    """What a click follows: a request's batches (when PRE-PREPAREs list their requests in an
    optional ``requests`` field) and its digest by (client, timestamp), for replies."""

    batches: dict[str, tuple[str, ...]]
    requests: dict[tuple[int, int], str]

    def of(self, digest: str | None, request: tuple[int, int] | None) -> list[str]:
        """The digests an element with this digest and request key belongs to."""
        found = list(self.batches.get(digest or "", ()))
        by_key = self.requests.get(request) if request else None
        if by_key and by_key != digest:
            found.append(by_key)
        return found


def links_of(events: Iterable[dict[str, Any]]) -> Links:
    batches: dict[str, set[str]] = {}
    requests: dict[tuple[int, int], str] = {}
    for event in events:
        if event.get("type") == "PRE-PREPARE" and event.get("digest"):
            for request in event.get("requests") or ():
                batches.setdefault(str(request), set()).add(str(event["digest"]))
        elif event.get("type") == "REQUEST" and event.get("digest"):
            key = request_key(event)
            if key is not None:
                requests.setdefault(key, str(event["digest"]))
    return Links({r: tuple(sorted(b)) for r, b in batches.items()}, requests)


def _shown(event: dict[str, Any], lanes: set[str]) -> bool:
    """On a lane we draw, or on no node's lane at all (a network fault, the explorer)."""
    node = str(event.get("node"))
    if event.get("event") == "violation":
        return True
    return node in lanes or not node.startswith(("replica-", "client-"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_layout(
    header: dict[str, Any],
    events: Iterable[dict[str, Any]],
    *,
    seq_from: int | None = None,
    seq_to: int | None = None,
    replicas: set[int] | None = None,
) -> Layout:
    lanes = lanes_of(header, replicas)
    shown = set(lanes)
    everything = sorted(events, key=lambda e: e["t"])  # stable: file order within an instant
    ordered = [e for e in filter_by_seq(everything, seq_from, seq_to) if _shown(e, shown)]
    traitors = {f"replica-{r}": spec for r, spec in (header.get("traitors") or {}).items()}
    forged = {
        e["frame"] for e in ordered if e["event"] == "fault" and e.get("forged") and "frame" in e
    }
    rows = _Rows()
    arrows: list[Arrow] = []
    marks: list[Mark] = []
    bands: list[Band] = []
    violations: list[dict[str, Any]] = []
    # (frame, sender) -> the sends of it so far: (row, event, destinations not yet reached)
    sends: dict[tuple[str, str], list[tuple[int, dict[str, Any], set[str]]]] = {}
    open_bands: dict[tuple[str, str], tuple[int, str]] = {}
    for event in ordered:
        name, node, t = event["event"], event["node"], event["t"]
        if name == "send":
            row = rows.take(t, node)
            targets = {to for to in event.get("to", []) if to in shown}
            key = (str(event.get("frame")), node)
            sends.setdefault(key, []).append((row, event, targets))
        elif name == "receive":
            arrows.append(_receive_arrow(event, sends, rows, forged))
        elif name == "violation":
            violations.append(event)
        else:
            _mark_or_band(event, rows.take(t, node), marks, bands, open_bands)
    for (frame, sender), records in sends.items():
        for row, event, missing in records:
            for receiver in sorted(missing):
                arrows.append(_arrow(event, sender, receiver, row, row, forged, frame=frame))
    last_row = max(len(rows.row_y) - 1, 0)
    for (kind, node), (first_row, label) in open_bands.items():
        bands.append(Band(kind, label, first_row, last_row, node))
    _mark_conflicts(arrows)
    _mark_violating_executions(marks, everything)
    return Layout(lanes, traitors, arrows, marks, bands, rows.row_y, rows.row_t, violations)


def _arrow(
    send: dict[str, Any], sender: str, receiver: str, start: int, end: int, forged: set[str],
    *, frame: str | None, receive: dict[str, Any] | None = None,
) -> Arrow:  # fmt: skip
    fields = receive or {}
    arrow = Arrow(
        type=str(send.get("type") or fields.get("type") or "?"),
        sender=sender,
        receiver=receiver,
        sent_t=send.get("t") if send else None,
        received_t=fields.get("t"),
        start_row=start,
        end_row=end,
        view=_int(send.get("view", fields.get("view"))),
        seq=_int(send.get("seq", fields.get("seq"))),
        digest=send.get("digest") or fields.get("digest"),
        frame=frame,
        forged=frame in forged,
        request=request_key(send) or request_key(fields),
    )
    if receive is not None and receive.get("accepted") is False:
        arrow.accepted = False
        arrow.reason = str(receive.get("reason") or "rejected")
    return arrow


def _receive_arrow(
    event: dict[str, Any],
    sends: dict[tuple[str, str], list[tuple[int, dict[str, Any], set[str]]]],
    rows: _Rows,
    forged: set[str],
) -> Arrow:
    """Pair a receive with the latest send of its frame from its sender to this node."""
    node, sender, frame = event["node"], str(event.get("from")), event.get("frame")
    match = None
    for record in reversed(sends.get((str(frame), sender), [])):
        if node in record[1].get("to", []):
            match = record
            break
    if match is None:
        # Sent by a lane we do not show, or a send the driver did not see (a forged frame
        # injected below the node): drawn from the sender's lane at the receive's instant.
        row = rows.take(event["t"], node)
        return _arrow({}, sender, node, row, row, forged, frame=frame, receive=event)
    send_row, send, missing = match
    missing.discard(node)
    row = rows.take(event["t"], node, after=send_row)
    return _arrow(send, sender, node, send_row, row, forged, frame=frame, receive=event)


def _mark_or_band(
    event: dict[str, Any],
    row: int,
    marks: list[Mark],
    bands: list[Band],
    open_bands: dict[tuple[str, str], tuple[int, str]],
) -> None:
    name, node = event["event"], event["node"]
    if name == "view-change-started":
        open_bands.setdefault(("view-change", node), (row, f"to view {event.get('new_view')}"))
    elif name == "view-change-completed":
        first, label = open_bands.pop(("view-change", node), (row, ""))
        bands.append(Band("view-change", f"view change {label}".strip(), first, row, node))
        bands.append(Band("new-view", f"view {event.get('view')}", row, row, node))
    elif name == "checkpoint-stable":
        bands.append(Band("checkpoint", f"stable checkpoint {event.get('seq')}", row, row, node))
    elif name == "fault" and event.get("fault") in ("crash", "partition-on"):
        kind = "crash" if event["fault"] == "crash" else "partition"
        detail = str(event.get("detail") or event["fault"])
        open_bands.setdefault((kind, node), (row, detail))
    elif name == "fault" and event.get("fault") in ("restart", "partition-off"):
        kind = "crash" if event["fault"] == "restart" else "partition"
        first, label = open_bands.pop((kind, node), (row, str(event.get("detail") or "")))
        bands.append(Band(kind, label, first, row, node))
    else:
        marks.append(Mark(node, row, event))


def _mark_conflicts(arrows: list[Arrow]) -> None:
    """Two PRE-PREPAREs for one (view, seq) with different digests: the equivocation."""
    digests: dict[tuple[int | None, int | None], set[str]] = {}
    for arrow in arrows:
        if arrow.type == "PRE-PREPARE" and arrow.digest:
            digests.setdefault((arrow.view, arrow.seq), set()).add(arrow.digest)
    for arrow in arrows:
        if arrow.type == "PRE-PREPARE" and len(digests.get((arrow.view, arrow.seq), ())) > 1:
            arrow.conflict = True


def _mark_violating_executions(marks: list[Mark], events: list[dict[str, Any]]) -> None:
    """``executed`` at a violation's seqs with different digests: the conflicting executions.
    Decided over every event, so that hiding a lane does not hide the conflict."""
    seqs = {
        s for e in events if e["event"] == "violation" for s in e.get("seqs") or ()
    }  # fmt: skip
    digests: dict[Any, set[Any]] = {}
    for event in events:
        if event["event"] == "executed" and event.get("seq") in seqs:
            digests.setdefault(event["seq"], set()).add(event.get("digest"))
    for mark in marks:
        event = mark.event
        if event["event"] == "executed" and len(digests.get(event.get("seq"), ())) > 1:
            mark.violating = True
