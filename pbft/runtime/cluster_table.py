"""``pbft cluster``: every replica of a cluster as a local process, with a live table.

The table is drawn from the replicas' status files (read by
:class:`~pbft.runtime.processes.LocalCluster`), a few times a second.
:func:`table_rows` turns those statuses into rows and is a pure function, so
the rules are tested without processes:

* a replica is *up* while its status file is fresh and its writer alive
  (the process started here, or one the user restarted by hand); a replica
  that is not up shows no view, no pid and no peers: its file is only what it
  last said;
* a replica's peers count only peers that are up themselves, so a dead
  replica never shows as connected, even in the moment before the others'
  links notice;
* traitors are marked, with the behaviours they were given, and more traitors
  than f get a warning line: safety and liveness are then no longer
  guaranteed.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pbft.config import ConfigError
from pbft.runtime.files import ClusterFiles
from pbft.runtime.processes import LocalCluster

COLUMNS = (
    "replica", "pid", "address", "status", "traitor", "view", "executed", "stable", "peers",
)  # fmt: skip
#: Statuses of a replica that is not running (see :meth:`ReplicaProcess.status`).
DOWN = frozenset({"exited", "stopped"})

Statuses = Mapping[int, Mapping[str, Any] | None]


def is_up(status: Mapping[str, Any] | None) -> bool:
    """Whether a replica runs and reports: its status is known and not exited or stopped."""
    return status is not None and status.get("status") not in DOWN


def table_rows(
    files: ClusterFiles, statuses: Statuses, traitors: Mapping[int, Sequence[str]]
) -> list[tuple[str, ...]]:
    """One row of :data:`COLUMNS` per replica."""
    up = {replica for replica, status in statuses.items() if is_up(status)}
    rows = []
    for replica in files.replicas:
        status = statuses.get(replica.id)
        behaviours = traitors.get(replica.id, ())
        traitor = f"yes ({', '.join(behaviours)})" if behaviours else ""
        address = f"{replica.host}:{replica.port}"
        if status is None:
            rows.append((str(replica.id), "", address, "starting", traitor, "", "", "", ""))
            continue
        if replica.id not in up:
            rows.append((str(replica.id), "", address, status["status"], traitor, "", "", "", ""))
            continue
        peers = len(set(status["peers_connected"]) & up)
        state = status["status"] + (" (by hand)" if status.get("by_hand") else "")
        rows.append(
            (
                str(replica.id),
                str(status.get("pid", "")),
                address,
                state,
                traitor,
                f"{status['view']} (primary {status['primary']})",
                str(status["last_executed"]),
                str(status["stable_checkpoint"]),
                f"{peers}/{files.config.n - 1}",
            )
        )
    return rows


def traitor_warning(traitors: Mapping[int, Sequence[str]], f: int) -> str | None:
    """The warning when more than f replicas are traitors, else None."""
    if len(traitors) <= f:
        return None
    return (
        f"warning: {len(traitors)} traitors exceed f = {f}; "
        "safety and liveness are no longer guaranteed"
    )


def status_table(
    files: ClusterFiles,
    statuses: Statuses,
    traitors: Mapping[int, Sequence[str]] | None = None,
    notes: Sequence[str] = (),
) -> Table:
    traitors = traitors or {}
    warning = traitor_warning(traitors, files.config.f)
    caption = [f"[bold red]{warning}[/]"] if warning else []
    table = Table(
        title=f"pbft cluster {files.config.cluster_id} (Ctrl-C stops every replica)",
        caption="\n".join([*caption, *notes]) or None,
    )
    for column in COLUMNS:
        table.add_column(column)
    for row in table_rows(files, statuses, traitors):
        table.add_row(*row, style="red" if row[COLUMNS.index("traitor")] else None)
    return table


def metrics_arguments(files: ClusterFiles, host: str, base_port: int) -> dict[int, list[str]]:
    """Each replica's ``--metrics-*`` options: replica i on ``base_port + i``; 0: none."""
    if base_port == 0:
        return {}
    last = base_port + files.config.n - 1
    if base_port < 0 or last > 65535:
        raise ConfigError(
            f"--metrics-port {base_port}: replicas 0..{files.config.n - 1} need ports "
            f"{base_port}..{last}, beyond 1..65535"
        )
    return {
        replica.id: ["--metrics-host", host, "--metrics-port", str(base_port + replica.id)]
        for replica in files.replicas
    }


def watch_cluster(
    files: ClusterFiles,
    replica_args: Sequence[str] = (),
    traitors: Mapping[int, Sequence[str]] | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
) -> int:
    traitors = traitors or {}
    per_replica = metrics_arguments(files, metrics_host, metrics_port)
    for replica, specs in traitors.items():
        per_replica.setdefault(replica, []).extend(
            argument for spec in specs for argument in ("--traitor", spec)
        )
    notes = []
    if metrics_port:
        last = metrics_port + files.config.n - 1
        notes.append(f"metrics: http://{metrics_host}:{metrics_port}..{last}/metrics")
    warning = traitor_warning(traitors, files.config.f)
    if warning is not None:
        print(f"pbft cluster: {warning}", file=sys.stderr)
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
        table = status_table(files, {}, traitors, notes)
        with Live(table, console=console, refresh_per_second=4) as live:
            while not stopping:
                time.sleep(0.25)
                live.update(status_table(files, cluster.statuses(), traitors, notes))
        console.print("stopping every replica...")
    finally:
        cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
