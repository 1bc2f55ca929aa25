"""Were acknowledged writes kept? The durability check of a crash-restart run.

After a run the store is read once more, key by key, with nothing else running.
Each key's final value must be one that a linearizable run could end with: the
value of some write that did not *entirely precede* an acknowledged write of
the same key. A write entirely precedes another when it returned before the
other was invoked; the later one is then ordered after it, so the earlier value
can no longer be the last one. A final value older than that means the later,
acknowledged write was lost; an absent key that was written to, or a value no
operation wrote, is a loss too.

Writes are ``put`` and ``cas`` (a ``cas`` writes when it reported success, and
may have written when it never returned). An operation the client gave up on
(``return_ms`` None: timed out, its fate unknown) may have taken effect at any
instant after its invocation, or not at all: it never counts as acknowledged,
but its value is an acceptable final value. Values must be unique per write
(the workload makes them so): a value then names the one write that made it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from faults.verification.linearizability import INFINITY, Operation


@attrs.frozen
class LostWrite:
    """An acknowledged write the final read does not show, nor anything after it."""

    key: str
    operation: Operation
    #: The value the final read returned (None: the key was absent).
    final: Any

    def describe(self) -> str:
        op = self.operation
        return (
            f"{self.key!r}: client {op.client} {op.op} of {written_value(op)!r} acknowledged at "
            f"{op.return_ms:g} ms, but the final read returned {self.final!r}"
        )


def written_value(op: Operation) -> Any:
    """The value ``op`` writes if it takes effect (None: it writes nothing)."""
    if op.op == "put":
        return op.value
    if op.op == "cas":
        return op.value[1]
    return None


def may_have_written(op: Operation) -> bool:
    """A put, a successful cas, or either of them never acknowledged (fate unknown)."""
    if op.op == "put":
        return True
    if op.op == "cas":
        return not op.returned or op.result is True
    return False


def acknowledged_write(op: Operation) -> bool:
    return op.returned and may_have_written(op)


def lost_writes(history: Iterable[Operation], final: Mapping[str, Any]) -> list[LostWrite]:
    """The acknowledged writes that ``final`` (key -> value read at the end) has lost.

    Keys missing from ``final`` are not judged (see :func:`unread_keys`).
    """
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    lost: list[LostWrite] = []
    for key, ops in sorted(by_key.items()):
        if key not in final:
            continue
        value = final[key]
        acknowledged = [op for op in ops if acknowledged_write(op)]
        writers = [
            op for op in ops if may_have_written(op) and value is not None
            and written_value(op) == value
        ]  # fmt: skip
        if not writers:
            # Absent, or a value nobody wrote: every acknowledged write is gone.
            lost.extend(LostWrite(key, op, value) for op in acknowledged)
            continue
        # The writer that returned last (a pending one never did) is the best case.
        latest = max(INFINITY if op.return_ms is None else op.return_ms for op in writers)
        lost.extend(
            LostWrite(key, op, value)
            for op in acknowledged
            if op.invoke_ms > latest and written_value(op) != value
        )
    return lost


def unread_keys(history: Iterable[Operation], final: Mapping[str, Any]) -> list[str]:
    """Keys with an acknowledged write that the final read could not read."""
    return sorted({op.key for op in history if acknowledged_write(op)} - set(final))


def last_acknowledged(history: Iterable[Operation]) -> dict[str, Operation]:
    """Per key, the acknowledged write that returned last (for reports)."""
    last: dict[str, Operation] = {}
    for op in history:
        if acknowledged_write(op):
            known = last.get(op.key)
            if known is None or (op.return_ms or 0) > (known.return_ms or 0):
                last[op.key] = op
    return last


def as_operation(entry: Operation | Mapping[str, Any]) -> Operation:
    return entry if isinstance(entry, Operation) else Operation.from_report(entry)
