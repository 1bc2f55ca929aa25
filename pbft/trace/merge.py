"""One trace from a real cluster: merge the per-process JSON logs of a run.

On a real cluster every process writes its own log (``pbft replica --log-json``, a traced
:class:`~pbft.runtime.client.RemoteClient`): one JSON event per line in the trace format,
each with ``wall_ms``, the wall clock in milliseconds since the Unix epoch
(:mod:`pbft.runtime.eventlog`). :func:`merge_logs` reads those logs, orders all their events
by ``wall_ms`` (a stable sort: within one log, events keep the order they were written in),
measures ``t`` from the earliest event of the run, and builds the header (driver
``runtime``) from what the caller knows and what the logs say: each replica's ``started``
event carries n, f and the number of clients, and a ``traitor`` event each traitor's
behaviours. ``wall_ms`` stays on every event, so a merged trace can be merged again.

A process log may hold lines that are not events (a replica's stderr also gets warnings or
a traceback, and a process killed mid-write leaves half a line): they are skipped and
counted, never fatal. :func:`load_trace` reads either a trace file or a folder of process
logs, which is what ``pbft trace`` accepts.

Ordering by wall clock is exact on one host (every process reads the same clock); across
hosts it is as good as their clock synchronisation (NTP: about a millisecond on a LAN),
and a receive may then appear a little before its send.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pbft.trace.format import TraceWriter, make_header, read_trace

#: A function that draws more of a run (from its header and events) as an HTML fragment to
#: show under the diagram, or None when it has nothing to draw.
Appendix = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], str | None]

#: File names a folder of process logs is searched for.
LOG_PATTERNS = ("*.log", "*.jsonl")


def read_process_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The events of one process log, and how many lines were not events (skipped)."""
    events: list[dict[str, Any]] = []
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            record = _event_or_none(line)
            if record is None:
                skipped += line.strip() != ""
            else:
                events.append(record)
    return events, skipped


def _event_or_none(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    wall_ms = record.get("wall_ms")
    if isinstance(wall_ms, bool) or not isinstance(wall_ms, int | float):
        return None
    if not isinstance(record.get("node"), str) or not isinstance(record.get("event"), str):
        return None
    return record


def merge_events(logs: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every event of ``logs`` in wall-clock order, ``t`` in ms since the earliest one."""
    everything = sorted((event for log in logs for event in log), key=lambda e: e["wall_ms"])
    if not everything:
        return []
    origin = everything[0]["wall_ms"]
    merged = []
    for event in everything:
        record = {"t": round(event["wall_ms"] - origin, 3), "node": event["node"]}
        record.update((key, value) for key, value in event.items() if key not in ("t", "node"))
        merged.append(record)
    return merged


def runtime_header(
    events: list[dict[str, Any]],
    *,
    n: int | None = None,
    f: int | None = None,
    clients: list[int] | None = None,
    traitors: Mapping[int, str] | None = None,
    seed: int | None = None,
    plan: Any = None,
) -> dict[str, Any]:
    """The header of a merged runtime trace: what the caller knows, the rest from the logs."""
    started = [event for event in events if event["event"] == "started"]
    if n is None:
        n = next((e["n"] for e in started if isinstance(e.get("n"), int)), None)
    replicas = sorted({_index(e["node"], "replica") for e in events} - {None})  # type: ignore[type-var]
    if n is None:
        n = max(replicas, default=-1) + 1
    if f is None:
        f = next((e["f"] for e in started if isinstance(e.get("f"), int)), (n - 1) // 3)
    if clients is None:
        count = next((e["clients"] for e in started if isinstance(e.get("clients"), int)), None)
        seen = {_index(e["node"], "client") for e in events} - {None}
        clients = list(range(count)) if count is not None else sorted(seen)  # type: ignore[arg-type]
    if traitors is None:
        traitors = {
            index: str(event.get("behaviours", ""))
            for event in events
            if event["event"] == "traitor"
            and (index := _index(event["node"], "replica")) is not None
        }
    wall_start = events[0]["wall_ms"] if events else None
    return make_header(
        driver="runtime",
        n=n,
        f=f,
        clients=clients,
        replicas=list(range(n)),
        traitors=traitors,
        seed=seed,
        plan=plan,
        started=None if wall_start is None else _iso(wall_start),
    )


def _index(node: str, role: str) -> int | None:
    prefix = f"{role}-"
    if node.startswith(prefix) and node[len(prefix) :].isdigit():
        return int(node[len(prefix) :])
    return None


def _iso(wall_ms: float) -> str:
    instant = datetime.datetime.fromtimestamp(wall_ms / 1000, datetime.UTC)
    return instant.isoformat(timespec="milliseconds")


def merge_logs(
    paths: Iterable[Path], **header_fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and events of the run whose process logs are ``paths``; see :func:`runtime_header`
    for ``header_fields``. The header's ``skipped_lines`` counts lines that were not events."""
    logs = []
    skipped = 0
    for path in paths:
        events, not_events = read_process_log(path)
        logs.append(events)
        skipped += not_events
    events = merge_events(logs)
    header = runtime_header(events, **header_fields)
    header["skipped_lines"] = skipped
    return header, events


def process_logs(folder: Path) -> list[Path]:
    """The process logs in ``folder`` and below (a trace file found there is not one)."""
    found = {path for pattern in LOG_PATTERNS for path in folder.rglob(pattern)}
    return sorted(path for path in found if path.is_file() and not _is_trace(path))


def _is_trace(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as stream:
        first = stream.readline()
    return first.startswith("{") and '"kind":"header"' in first.replace(" ", "")


def merge_folder(folder: Path, **header_fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Merge every process log in ``folder``; ValueError (one line) if it holds none."""
    header, events = merge_logs(process_logs(folder), **header_fields)
    if not events:
        raise ValueError(f"{folder}: no process logs with trace events (*.log, *.jsonl) in it")
    return header, events


def load_trace(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A trace file (:func:`~pbft.trace.format.read_trace`) or a folder of process logs, merged."""
    path = Path(path)
    if path.is_dir():
        return merge_folder(path)
    return read_trace(path)


def write_trace(path: Path, header: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> None:
    """Write a merged trace as JSON lines: the header, then one event a line."""
    with TraceWriter.open(path, header) as writer:
        for event in events:
            fields = {k: v for k, v in event.items() if k not in ("t", "node", "event")}
            writer.event(event["t"], event["node"], event["event"], **fields)


def write_outputs(
    target: Path,
    header: dict[str, Any],
    events: list[dict[str, Any]],
    title: str,
    appendix: Sequence[Appendix] = (),
) -> list[str]:
    """Write ``target`` (``.html``: the picture and the trace as ``.jsonl`` beside it; any other
    name: the trace alone). ``appendix``: functions drawing more of the run under the diagram
    (the linearizability picture, which is ``faults``' code). Returns one line per file
    written, or why the picture was not."""
    trace_path = target if target.suffix != ".html" else target.with_suffix(".jsonl")
    write_trace(trace_path, header, events)
    written = [f"trace: {trace_path} ({len(events)} events)"]
    if target.suffix != ".html":
        return written
    try:
        from pbft.trace.render import render_html
    except ImportError:
        written.append(f"picture: not written (pbft.trace.render is not available); {target}")
        return written
    fragments = [fragment for draw in appendix if (fragment := draw(header, events))]
    target.write_text(render_html(header, events, title=title, appendix=fragments), "utf-8")
    written.append(f"picture: {target}")
    return written
