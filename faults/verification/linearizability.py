"""Is a key-value history linearizable? A Wing & Gong / Lowe checker.

A history is the list of operations clients ran, each with its invocation and
return times on one clock and its result (the run report's ``clients``
list). It is *linearizable* if every operation can be given a single instant
between its invocation and its return such that, taken in that order, the
operations are a legal sequential run of the key-value store (Herlihy & Wing).

The search is Wing & Gong's, with Lowe's memoisation: repeatedly pick an
operation that could take effect first (invoked before every remaining
operation has returned), apply it to the sequential model, check its result,
and backtrack on failure; a (set of linearized operations, model state) pair
already explored is never explored again. Keys are independent (operations on
one key never affect another), so each key's sub-history is checked alone
(P-compositionality, Horn & Kroening), which keeps the search small.

An operation that never returned (``return_ms`` null) may have taken effect at
any instant after its invocation, or not at all; its result constrains
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

INFINITY = float("inf")
ABSENT = None


@attrs.frozen
class Operation:
    client: int
    op: str  # get | put | delete | cas
    key: str
    value: Any  # put: the value; cas: [expected, new]; get/delete: None
    invoke_ms: float
    return_ms: float | None
    result: Any

    @property
    def returned(self) -> bool:
        return self.return_ms is not None

    @classmethod
    def from_report(cls, entry: Mapping[str, Any]) -> Operation:
        value = entry.get("value")
        if isinstance(value, list):
            value = tuple(value)
        return cls(
            entry["client"], entry["op"], entry["key"], value,
            entry["invoke_ms"], entry.get("return_ms"), entry.get("result"),
        )  # fmt: skip


@attrs.frozen
class Verdict:
    linearizable: bool
    #: The key whose history could not be linearized, and its operations.
    key: str | None = None
    operations: tuple[Operation, ...] = ()

    def describe(self) -> str:
        if self.linearizable:
            return "linearizable"
        lines = [f"no linearization of the {len(self.operations)} operations on {self.key!r}:"]
        for op in sorted(self.operations, key=lambda o: o.invoke_ms):
            end = "never" if op.return_ms is None else f"{op.return_ms:g}"
            lines.append(
                f"  client {op.client} {op.op}{_args(op)} -> {op.result!r} "
                f"[{op.invoke_ms:g}, {end}]"
            )
        return "\n".join(lines)


def _args(op: Operation) -> str:
    if op.op == "put":
        return f"({op.value!r})"
    if op.op == "cas":
        return f"({op.value[0]!r} -> {op.value[1]!r})"
    return ""


def apply(op: Operation, state: Any) -> tuple[bool, Any]:
    """Run ``op`` on the sequential store holding ``state``; (result matches, new state)."""
    if op.op == "get":
        return (not op.returned or op.result == state), state
    if op.op == "put":
        return (not op.returned or op.result is True), op.value
    if op.op == "delete":
        return (not op.returned or op.result == (state is not ABSENT)), ABSENT
    if op.op == "cas":
        expected, new = op.value
        swapped = state == expected
        return (not op.returned or op.result == swapped), (new if swapped else state)
    raise ValueError(f"unknown operation {op.op!r}")


def check_key(operations: Iterable[Operation], initial: Any = ABSENT) -> bool:
    """Is this single-key history linearizable from ``initial``?"""
    ops = sorted(operations, key=lambda o: o.invoke_ms)
    count = len(ops)
    returns = [INFINITY if op.return_ms is None else op.return_ms for op in ops]
    # later[i]: the earliest return among operations i.. (all not yet linearized past
    # the highest one linearized), so that a step looks only at the few open below it.
    later = [INFINITY] * (count + 1)
    for i in range(count - 1, -1, -1):
        later[i] = min(returns[i], later[i + 1])
    must = sum(1 << i for i, op in enumerate(ops) if op.returned)
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = [(0, initial)]
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return True
        if (done, state) in seen:
            continue
        seen.add((done, state))
        top = done.bit_length()
        below = _bits(~done & ((1 << top) - 1))  # not linearized, under the highest that is
        # Only an operation invoked before every pending one returned can go next.
        horizon = min([later[top], *(returns[i] for i in below)])
        candidates = [i for i in below if ops[i].invoke_ms <= horizon]
        i = top
        while i < count and ops[i].invoke_ms <= horizon:
            candidates.append(i)
            i += 1
        for i in candidates:
            ok, after = apply(ops[i], state)
            if ok:
                stack.append((done | 1 << i, after))
    return False


def _bits(mask: int) -> list[int]:
    """The positions of the set bits of ``mask``, lowest first."""
    positions = []
    while mask:
        low = mask & -mask
        positions.append(low.bit_length() - 1)
        mask ^= low
    return positions


def check_history(history: Iterable[Operation | Mapping[str, Any]]) -> Verdict:
    """Check a whole key-value history, one key at a time."""
    by_key: dict[str, list[Operation]] = {}
    for entry in history:
        op = entry if isinstance(entry, Operation) else Operation.from_report(entry)
        by_key.setdefault(op.key, []).append(op)
    for key in sorted(by_key):
        if not check_key(by_key[key]):
            return Verdict(False, key, tuple(by_key[key]))
    return Verdict(True)
