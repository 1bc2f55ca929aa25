"""The simulator's per-step hooks: journals, invariants and drop counts, traces.

Each hook chains onto :attr:`pbft.simnet.Network.on_step` (called with a
node's effects before they are carried out) and calls the previous hook, so
they combine in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faults.verification.invariants import StepInvariants
from pbft.events import Dropped
from pbft.journal import MemoryJournal
from pbft.replica import Replica
from pbft.simnet import Address, SimCluster


def install_journals(cluster: SimCluster) -> dict[int, MemoryJournal]:
    journals = {replica: MemoryJournal() for replica in cluster.replicas}
    previous = cluster.network.on_step

    def record(address: Address, effects: list[Any]) -> None:
        if address[0] == "replica":
            node = cluster.network.nodes[address]
            if isinstance(node, Replica):
                journals[address[1]].record(node, effects)
        if previous is not None:
            previous(address, effects)

    cluster.network.on_step = record
    return journals


def install_invariants(
    cluster: SimCluster, watcher: StepInvariants, drops: dict[str, int], faulty: set[int]
) -> None:
    """Per-step invariants, and the drop reasons honest replicas reach (``drops``)."""
    previous = cluster.network.on_step
    nodes = cluster.network.nodes

    def check(address: Address, effects: list[Any]) -> None:
        if address[0] == "replica":
            watcher.after_step(address[1], nodes[address], effects)
            if address[1] not in faulty:
                for effect in effects:
                    if type(effect) is Dropped:
                        drops[effect.reason] = drops.get(effect.reason, 0) + 1
        if previous is not None:
            previous(address, effects)

    cluster.network.on_step = check


def install_trace(cluster: SimCluster, trace: Callable[[str], None]) -> None:
    previous = cluster.network.on_step
    network = cluster.network

    def record(address: Address, effects: list[Any]) -> None:
        for effect in effects:
            trace(f"{network.now} {address[0]}-{address[1]} {_describe(effect)}")
        if previous is not None:
            previous(address, effects)

    network.on_step = record


def _describe(effect: Any) -> str:
    message = getattr(effect, "message", None)
    if message is not None and hasattr(message, "message"):
        inner = message.message
        fields = [
            f"{k}={v}"
            for k in ("view", "new_view", "seq")
            if (v := getattr(inner, k, None)) is not None
        ]
        to = getattr(effect, "replicas", None) or getattr(effect, "client", "")
        return f"{type(effect).__name__} {inner.TYPE} {' '.join(fields)} to={to}"
    return repr(effect)
