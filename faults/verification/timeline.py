"""Faults on the run's own time base: a paced workload, and a ledger of what fired.

Why
---
A simulated PBFT run without faults finishes 30 operations in about 35
virtual milliseconds; one view change makes it about 650. Schedules drawn in
wall-clock terms (a partition from 2,100 ms to 3,000 ms, a crash at 1,800 ms)
mostly fell after the run's last event and tested nothing: on seeds 0-49,
about half of the explorer's network rules and crashes never met a message.

How
---
The explorer fixes the run's length instead of guessing it: each plan names
a ``workload_span_ms``, and the workload is *paced* over it
(:func:`release_times`): every operation gets a release time in
[0, span], drawn from the seed, in clusters (bursts of consecutive
operations share a time, so that batches and watermark pressure still
happen). At its release time an operation joins its client's queue
(:class:`Pacer`); a client still runs one operation at a time, so a slow
cluster only delays later operations. Faults are drawn inside the span (see
:func:`faults.verification.explore.draw_plan`), so there is traffic for them
to hit, and the run cannot end before the last release.

Whether a fault *fired* is measured, not assumed (:class:`FaultLedger`): a
network rule fired when it changed the fate of at least one message (cut,
dropped, duplicated, delayed or reordered it:
:attr:`faults.traitors.network.NetworkFaults.took_effect`), a crash when
the replica went down, a restart when it came back, a traitor's ``at_ms``
trigger when the run reached its time, and the byzantine traitors and
clients report how many messages they injected or rewrote.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from pbft import service as kv
from pbft.events import Effect, SetTimer, TimerFired
from pbft.simnet import Network

FAULT_KINDS = ("network", "crash", "restart", "trigger")


def release_times(
    rng: random.Random, workload: Sequence[Sequence[bytes]], span_ms: int
) -> list[list[int]]:
    """Per client, the (non-decreasing) time at which each of its operations is released."""
    times: list[list[int]] = []
    for operations in workload:
        bursts: list[int] = []
        remaining = len(operations)
        while remaining:
            bursts.append(min(rng.randint(1, 4), remaining))
            remaining -= bursts[-1]
        moments = sorted(rng.randint(0, span_ms) for _ in bursts)
        if moments:
            moments[0] = 0  # every client starts at once, as before pacing
        times.append(
            [moment for moment, size in zip(moments, bursts, strict=True) for _ in range(size)]
        )
    return times


class Pacer:
    """A node of the simulated network that releases operations at their times."""

    def __init__(
        self, network: Network, workload: Sequence[Sequence[bytes]], times: list[list[int]]
    ) -> None:
        self.network = network
        self._due: dict[str, tuple[int, bytes]] = {}
        self.unreleased = 0
        for client, operations in enumerate(workload):
            for index, operation in enumerate(operations):
                self._due[f"{client}/{index}"] = (client, operation)
                self.unreleased += 1
        self._times = times

    def start(self, address: tuple[str, int]) -> None:
        self.network.nodes[address] = self
        for name, (client, _) in self._due.items():
            index = int(name.split("/")[1])
            self.network._apply(address, SetTimer(name, self._times[client][index]))

    def step(self, event: Any) -> list[Effect]:
        if type(event) is TimerFired and event.name in self._due:
            client, operation = self._due.pop(event.name)
            self.unreleased -= 1
            self.network.submit(client, [operation])
        return []


@attrs.define
class FaultLedger:
    """Scheduled and fired faults of one run, by kind; injections counted apart."""

    scheduled: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    fired: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    injections: int = 0
    client_rewrites: int = 0

    def schedule(self, kind: str, fired: bool) -> None:
        self.scheduled[kind] += 1
        self.fired[kind] += bool(fired)

    def network(self, took_effect: Iterable[int]) -> None:
        for count in took_effect:
            self.schedule("network", count > 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheduled": dict(self.scheduled),
            "fired": dict(self.fired),
            "injections": self.injections,
            "client_rewrites": self.client_rewrites,
        }


# ------------------------------------------------------------------ workload


def operation_record(op: Any, byzantine: bool) -> dict[str, Any]:
    try:
        name, args = kv.decode_operation(op.operation)
    except ValueError:
        name, args = "invalid", [""]
    value: Any = None
    if name == "put":
        value = args[1]
    elif name == "cas":
        value = [args[1], args[2]]
    result = kv.decode_result(op.result) if op.result is not None else None
    return {
        "client": op.client,
        "op": name,
        "key": args[0],
        "value": value,
        "timestamp": op.timestamp,
        "invoke_ms": op.invoke_tick,
        "return_ms": op.return_tick,
        "result": None if isinstance(result, kv.OperationError) else result,
        "byzantine": byzantine,
    }


def random_workload(
    rng: random.Random, clients: int, operations: int, keys: int
) -> tuple[tuple[bytes, ...], ...]:
    """``operations`` key-value operations spread over ``clients``, mixed like a scenario's."""
    plans: list[list[bytes]] = [[] for _ in range(clients)]
    written: dict[str, list[str]] = {}
    for number in range(operations):
        key = f"key-{rng.randrange(keys)}"
        op = rng.choices(("put", "get", "cas", "delete"), (0.5, 0.3, 0.15, 0.05))[0]
        if op == "put":
            value = f"v{number}"
            written.setdefault(key, []).append(value)
            encoded = kv.put(key, value)
        elif op == "get":
            encoded = kv.get(key)
        elif op == "delete":
            encoded = kv.delete(key)
        else:
            expected = rng.choice([None, *written.get(key, [])[-2:]])
            encoded = kv.cas(key, expected, f"v{number}")
        plans[number % clients].append(encoded)
    return tuple(tuple(plan) for plan in plans)
