"""``pbft cluster``: every replica of a cluster as a local process, with a live table."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pbft.runtime.files import ClusterFiles
from pbft.runtime.processes import LocalCluster


def status_table(files: ClusterFiles, statuses: dict[int, dict[str, Any] | None]) -> Table:
    table = Table(title=f"pbft cluster {files.config.cluster_id} (Ctrl-C stops every replica)")
    for column in ("replica", "address", "status", "view", "executed", "stable", "peers"):
        table.add_column(column)
    for replica in files.replicas:
        status = statuses.get(replica.id)
        address = f"{replica.host}:{replica.port}"
        if status is None:
            table.add_row(str(replica.id), address, "starting", "", "", "", "")
            continue
        peers = len(status["peers_connected"])
        table.add_row(
            str(replica.id),
            address,
            status["status"],
            f"{status['view']} (primary {status['primary']})",
            str(status["last_executed"]),
            str(status["stable_checkpoint"]),
            f"{peers}/{files.config.n - 1}",
        )
    return table


def watch_cluster(
    files: ClusterFiles,
    replica_args: Sequence[str] = (),
    traitors: Mapping[int, Sequence[str]] | None = None,
) -> int:
    per_replica = {
        replica: [argument for spec in specs for argument in ("--traitor", spec)]
        for replica, specs in (traitors or {}).items()
    }
    cluster = LocalCluster(files, files.directory / "data", replica_args, per_replica)
    stopping: list[int] = []
    # Ctrl-C and SIGTERM set a flag that the loop reads between refreshes, rather
    # than raising wherever the main thread happens to be (inside rich's Live, in
    # the middle of starting a replica): the replicas are always stopped.
    previous = {
        signum: signal.signal(signum, lambda signum, _frame: stopping.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    console = Console()
    try:
        cluster.start()
        with Live(status_table(files, {}), console=console, refresh_per_second=4) as live:
            while not stopping:
                time.sleep(0.25)
                live.update(status_table(files, cluster.statuses()))
        console.print("stopping every replica...")
    finally:
        cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
