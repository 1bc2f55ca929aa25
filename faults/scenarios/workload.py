"""A scenario's workload, planned before the run from one seed.

``requests`` operations are drawn from the ``mix`` weights with
``random.Random(seed)`` and dealt round-robin to the honest clients, so a
client's share differs from another's by at most one. Keys are ``key-0`` ..
``key-{keys-1}``; the k-th operation of the run writes the value ``v{k}``. A
``cas`` expects either nothing (the key absent) or a value planned for that
key earlier, so some swaps succeed and some fail. Planning first keeps the
operations the same for a given seed however the run is scheduled.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import attrs

from pbft import service as kv

if TYPE_CHECKING:
    from faults.scenarios.document import Workload


@attrs.frozen
class PlannedOperation:
    """One operation of the key-value service as the report shows it."""

    op: str
    key: str
    #: put: the value; cas: [expected, new]; get and delete: None.
    value: Any = None

    def encode(self) -> bytes:
        if self.op == "put":
            return kv.put(self.key, self.value)
        if self.op == "get":
            return kv.get(self.key)
        if self.op == "delete":
            return kv.delete(self.key)
        expected, new = self.value
        return kv.cas(self.key, expected, new)


def plan(workload: Workload, clients: list[int], seed: int) -> dict[int, list[PlannedOperation]]:
    """Each honest client's operations, in the order it runs them."""
    rng = random.Random(seed)
    names = [name for name, _ in workload.mix]
    weights = [weight for _, weight in workload.mix]
    written: dict[str, list[str]] = {}
    plans: dict[int, list[PlannedOperation]] = {client: [] for client in clients}
    for number in range(workload.requests):
        op = rng.choices(names, weights)[0]
        key = f"key-{rng.randrange(workload.keys)}"
        value: Any = None
        if op == "put":
            value = f"v{number}"
            written.setdefault(key, []).append(value)
        elif op == "cas":
            expected = rng.choice([None, *written.get(key, [])[-2:]])
            value = [expected, f"v{number}"]
            written.setdefault(key, []).append(value[1])
        plans[clients[number % len(clients)]].append(PlannedOperation(op, key, value))
    return plans


def byzantine_put(client: int, number: int) -> PlannedOperation:
    """What a Byzantine client asks for: puts to keys of its own."""
    return PlannedOperation("put", f"byzantine-{client}-{number}", f"v{number}")


def decode(result: bytes) -> Any:
    """The result as the report shows it: get: value or None; put, delete, cas: a boolean."""
    try:
        value = kv.decode_result(result)
    except Exception:  # msgpack raises several types for bad input
        return f"error: undecodable result {result.hex()[:32]}"
    if isinstance(value, kv.OperationError):
        return f"error: {value}"
    return value
