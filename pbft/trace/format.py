"""The trace format: JSON lines, one header then one event a line (see ``docs/trace.md``).

A trace is what a driver saw during one run, in a form both a person and a program can read:
line 1 is a header naming the run (driver, cluster size, traitors, seed, plan, versions), and
every other line is one event ``{"t": ms, "node": "replica-0", "event": NAME, ...fields}``.
Nothing in it is a Python repr or raw bytes: byte strings appear as hex prefixes, and a frame on
the wire is named by :func:`frame_id` (the first 16 hex characters of its SHA-256), the key that
pairs a ``send`` with the ``receive`` events it caused.

Both drivers write it through :class:`TraceWriter` (which does not know where its events come
from) and every reader goes through :func:`read_trace`, which refuses anything that is not a
pbft trace with one ``ValueError`` naming the file and line. The writer keeps each event's
fields in the order given and rounds times to microseconds, so a deterministic driver (the
simulator) writes byte-identical files for the same seed. :func:`message_fields`,
:func:`operation_fields` and :func:`result_value` turn a message, a client's operation and its
result into event fields, so that both drivers describe them alike.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from pbft import service
from pbft.messages import PrePrepare, Request, Signed, request_digest

FORMAT = "pbft-trace"
VERSION = 1
TIME_UNIT = "ms"
#: Which program wrote the trace: the deterministic simulator or the Trio runtime.
DRIVERS = ("sim", "runtime")
#: Hex characters kept of a digest or a frame hash: enough to tell messages of one run apart.
HEX_PREFIX_CHARS = 16

#: The events of version 1 (``docs/trace.md`` has one section per name). A driver may write
#: more (the runtime's ``started``, ``connected``, ...); readers skip names they do not know.
EVENT_NAMES = frozenset(
    {
        "send",
        "receive",
        "prepared",
        "committed",
        "executed",
        "checkpoint-stable",
        "view-change-started",
        "view-change-completed",
        "state-transferred",
        "invoke",
        "complete",
        "fault",
        "violation",
    }
)
#: The values of a ``fault`` event's ``fault`` field.
FAULT_KINDS = frozenset(
    {
        "partition-on",
        "partition-off",
        "loss",
        "delay",
        "duplicate",
        "crash",
        "restart",
        "traitor",
    }
)
NODE_ROLES = ("replica", "client")
#: The ``type`` of a frame that does not decode as a message (a traitor's junk bytes).
RAW_BYTES = "BYTES"


def frame_id(frame: bytes) -> str:
    """The name of a frame on the wire: the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(frame).hexdigest()[:HEX_PREFIX_CHARS]


def digest_prefix(digest: bytes) -> str:
    """A request or batch digest as the trace shows it: its first 16 hex characters."""
    return digest.hex()[:HEX_PREFIX_CHARS]


def node_name(role: str, index: int) -> str:
    """``node_name("replica", 0) == "replica-0"``; the lane a node's events belong to."""
    if role not in NODE_ROLES:
        raise ValueError(f"a node is a replica or a client, not {role!r}")
    return f"{role}-{index}"


def message_fields(signed: Signed[Any]) -> dict[str, Any]:
    """``type`` and, where the message has them, ``view``, ``seq``, ``digest`` (and a
    request's ``client`` and ``timestamp``, a PRE-PREPARE's request digests)."""
    # A traitor's message may hold anything its fields' types allow (an empty digest, a
    # huge seq): show what was sent, but only values of the types the format promises.
    message = signed.message
    fields: dict[str, Any] = {"type": message.TYPE}
    view = getattr(message, "view", getattr(message, "new_view", None))
    if type(view) is int:
        fields["view"] = view
    seq = getattr(message, "seq", None)
    if type(seq) is int:
        fields["seq"] = seq
    if type(message) is Request:
        fields["digest"] = digest_prefix(request_digest(signed))
    else:
        digest = getattr(message, "digest", getattr(message, "state_digest", None))
        if type(digest) is bytes:
            fields["digest"] = digest_prefix(digest)
    if type(message) is PrePrepare:
        fields["requests"] = [digest_prefix(request_digest(r)) for r in message.batch]
    client = getattr(message, "client", None)
    if type(client) is int and type(message.timestamp) is int:
        fields["client"] = client
        fields["timestamp"] = message.timestamp
    return fields


def operation_fields(operation: bytes) -> dict[str, Any]:
    """An ``invoke`` event's fields for a key-value operation: ``op``, ``key`` and, where the
    operation has them, ``value`` (put) or ``expected`` and ``new`` (cas). An operation the
    service would refuse shows as ``{"op": "invalid", "key": ""}`` (a Byzantine client's)."""
    try:
        name, args = service.decode_operation(operation)
    except ValueError:
        return {"op": "invalid", "key": ""}
    fields: dict[str, Any] = {"op": name, "key": args[0]}
    if name == "put":
        fields["value"] = args[1]
    elif name == "cas":
        fields["expected"], fields["new"] = args[1], args[2]
    return fields


def result_value(result: bytes) -> Any:
    """A ``complete`` event's ``result``: the JSON value the service's result stands for
    (a get's value or null, true for a put, ...); a refusal as ``{"error": text}``."""
    try:
        value = service.decode_result(result)
    except Exception:  # msgpack raises several types; a result we cannot read is shown as hex
        return {"undecodable": result.hex()[:HEX_PREFIX_CHARS]}
    if isinstance(value, service.OperationError):
        return {"error": str(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"undecodable": result.hex()[:HEX_PREFIX_CHARS]}
    return value


def pbft_version() -> str:
    try:
        return metadata.version("pbft")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def make_header(
    *,
    driver: str,
    n: int,
    f: int,
    clients: list[int],
    replicas: list[int],
    traitors: Mapping[int, str] | None = None,
    seed: int | None = None,
    plan: Any = None,
    started: str | None = None,
) -> dict[str, Any]:
    """The header line; ``traitors`` maps a replica id to its behaviour spec (as typed)."""
    if driver not in DRIVERS:
        raise ValueError(f"a trace's driver is one of {DRIVERS}, not {driver!r}")
    return {
        "kind": "header",
        "format": FORMAT,
        "version": VERSION,
        "driver": driver,
        "time_unit": TIME_UNIT,
        "n": n,
        "f": f,
        "clients": list(clients),
        "replicas": list(replicas),
        "traitors": {str(replica): spec for replica, spec in sorted((traitors or {}).items())},
        "seed": seed,
        "plan": plan,
        "pbft_version": pbft_version(),
        "python": platform.python_version(),
        "started": started,
    }


def _line(record: Mapping[str, Any]) -> str:
    # Compact separators keep big traces small; ensure_ascii=False keeps them UTF-8 as promised.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


class TraceWriter:
    """Writes a header, then one JSON line per :meth:`event`, to a text stream or a file."""

    def __init__(self, stream: TextIO, header: Mapping[str, Any]) -> None:
        if header.get("kind") != "header" or header.get("format") != FORMAT:
            raise ValueError("a trace starts with a header made by make_header()")
        self._stream = stream
        self._owned = False
        self.events_written = 0
        stream.write(_line(header))

    @classmethod
    def open(cls, path: str | Path, header: Mapping[str, Any]) -> TraceWriter:
        """A writer that owns ``path`` (UTF-8, ``\\n`` line ends) and closes it in :meth:`close`."""
        # Not a with-block: the writer outlives this call and close() closes the file.
        stream = open(path, "w", encoding="utf-8", newline="\n")
        try:
            writer = cls(stream, header)
        except BaseException:
            stream.close()
            raise
        writer._owned = True
        return writer

    @property
    def stream(self) -> TextIO:
        """Where the lines go (a caller that passed a ``StringIO`` reads them back here)."""
        return self._stream

    def event(self, t: float, node: str, event: str, **fields: Any) -> None:
        """One event at ``t`` milliseconds since the run's start, on ``node``'s lane."""
        record: dict[str, Any] = {"t": round(float(t), 3), "node": node, "event": event}
        record.update(fields)
        self._stream.write(_line(record))
        self.events_written += 1

    def close(self) -> None:
        self._stream.flush()
        if self._owned:
            self._stream.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_header(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("kind") != "header":
        raise ValueError(f"{where}: not a pbft trace (its first line is not a trace header)")
    if record.get("format") != FORMAT:
        raise ValueError(f"{where}: not a pbft trace (format {record.get('format')!r})")
    version = record.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{where}: trace format version {version!r}; this pbft reads {VERSION}")
    if record.get("time_unit") != TIME_UNIT:
        raise ValueError(f"{where}: time unit {record.get('time_unit')!r}, expected {TIME_UNIT!r}")
    return record


def _check_event(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: an event is a JSON object")
    for key in ("t", "node", "event"):
        if key not in record:
            raise ValueError(f"{where}: event has no {key!r}")
    t = record["t"]
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError(f"{where}: 't' is not a number of milliseconds")
    if not isinstance(record["node"], str) or not isinstance(record["event"], str):
        raise ValueError(f"{where}: 'node' and 'event' are strings")
    return record


def read_trace(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the events of a trace file; ValueError (one line, naming the line) if the
    file cannot be read or is not a pbft trace. Blank lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = Path(path).read_bytes()[: error.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not UTF-8, not a pbft trace") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    header: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            what = "header" if header is None else "event"
            raise ValueError(f"{where}: not JSON, not a pbft trace {what}") from None
        if header is None:
            header = _check_header(record, where)
        else:
            events.append(_check_event(record, where))
    if header is None:
        raise ValueError(f"{path}: empty, not a pbft trace (line 1 should be its header)")
    return header, events
