"""``status.json``: what a running replica node reports about itself, read by ``pbft
cluster`` (its live table), the harnesses and the tests.

The node rewrites the file every :data:`~pbft.runtime.node.STATUS_INTERVAL_SECONDS`
(replacing it atomically); its content is :func:`node_status`: the replica's view,
primary, last executed and stable sequence numbers, phase, connected peers and
clients, link queues, kept evidence, counters, admission and connection figures.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from pbft.runtime.links import PeerLink
    from pbft.runtime.node import ReplicaNode


def node_status(node: ReplicaNode, state: str | None = None) -> dict[str, Any]:
    """A replica node's state as ``status.json`` holds it; ``state`` overrides the phase."""
    replica = node.replica
    if state is None:
        if replica.fetching is not None:
            state = "state-transfer"
        elif not replica.view_active:
            state = "view-change"
        else:
            state = "normal"
    return {
        "id": node.id,
        "pid": os.getpid(),
        "status": state,
        "view": replica.view,
        "primary": replica.primary,
        "last_executed": replica.last_executed,
        "stable_checkpoint": replica.low_watermark,
        "peers_connected": sorted(
            peer for peer, link in node.links.items() if link.statistics().connected
        ),
        "clients_connected": sorted(node.client_sessions),
        "links": {str(peer): link_status(link) for peer, link in node.links.items()},
        "evidence": {
            "files": node.evidence.files_kept(),
            "bytes": node.evidence.bytes_kept(),
            "refused": node.evidence.refused,
        },
        "counters": replica.counters.snapshot(),
        "admission": attrs.asdict(node.admission.statistics()),
        "connections": {
            "served": node.connection_slots.in_use,
            "peak": node.connection_slots.peak,
            "refused": node.connection_slots.refused,
            "clients": node.connection_slots.clients,
            "clients_refused": node.connection_slots.clients_refused,
            "replaced": node.sessions.replaced,
        },
    }


def link_status(link: PeerLink) -> dict[str, int]:
    """A link's queue and counts, from :meth:`PeerLink.statistics`."""
    statistics = link.statistics()
    return {
        "frames_queued": statistics.frames_queued,
        "bytes_queued": statistics.bytes_queued,
        "frames_sent": statistics.frames_sent,
        "frames_dropped": statistics.frames_dropped,
    }
