"""The simulator's per-step hooks: journals, invariants and drop counts, traces.

Each hook chains onto :attr:`pbft.simnet.Network.on_step` (called with a
node's effects before they are carried out) and calls the previous hook, so
they combine in any order. The trace (:mod:`faults.verification.sim_trace`)
also listens to the network's deliveries and the traitors' forgeries.
"""

from __future__ import annotations

from typing import Any

from faults.verification.invariants import StepInvariants
from faults.verification.sim_trace import SimTrace
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


def install_trace(cluster: SimCluster, trace: SimTrace, faulty: set[int]) -> SimTrace:
    """Write the run to ``trace`` (:mod:`faults.verification.sim_trace`): its hooks chain
    like these and only watch. Install it last, once traitors and network faults are in."""
    trace.install(cluster, faulty)
    return trace
