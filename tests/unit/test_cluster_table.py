"""``pbft cluster``'s table: rows from status files, read without running any replica.

:func:`table_rows` is a pure function of the statuses; :meth:`ReplicaProcess.status`
decides from a status file's age and pid whether its writer still runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pbft.config import ConfigError
from pbft.runtime.cluster_table import COLUMNS, metrics_arguments, table_rows, traitor_warning
from pbft.runtime.files import ClusterFiles, init_cluster
from pbft.runtime.processes import STALE_STATUS_SECONDS, ReplicaProcess


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ClusterFiles:
    return init_cluster(tmp_path_factory.mktemp("table") / "cluster", f=1, base_port=7100)


def status(replica: int, peers: list[int], state: str = "normal", **extra: Any) -> dict[str, Any]:
    return {
        "id": replica, "pid": 1000 + replica, "status": state, "view": 0, "primary": 0,
        "last_executed": 12, "stable_checkpoint": 8, "peers_connected": peers, **extra,
    }  # fmt: skip


def column(rows: list[tuple[str, ...]], name: str) -> list[str]:
    return [row[COLUMNS.index(name)] for row in rows]


def test_a_running_replica_shows_its_pid_view_and_peers(files: ClusterFiles) -> None:
    statuses = {r: status(r, [p for p in range(4) if p != r]) for r in range(4)}
    rows = table_rows(files, statuses, {})
    assert column(rows, "pid") == ["1000", "1001", "1002", "1003"]
    assert column(rows, "peers") == ["3/3"] * 4
    assert column(rows, "view") == ["0 (primary 0)"] * 4
    assert column(rows, "address")[2] == "127.0.0.1:7102"


def test_a_dead_replica_is_not_counted_as_anyones_peer_nor_shows_its_last_peers(
    files: ClusterFiles,
) -> None:
    # Replica 3 exited; the others' links have not noticed yet, and its own file
    # still lists the peers it had.
    statuses = {r: status(r, [p for p in range(4) if p != r]) for r in range(3)}
    statuses[3] = status(3, [0, 1, 2], state="exited")
    rows = table_rows(files, statuses, {})
    assert column(rows, "peers") == ["2/3", "2/3", "2/3", ""]
    assert column(rows, "status")[3] == "exited"
    assert column(rows, "pid")[3] == "" and column(rows, "view")[3] == ""


def test_a_replica_restarted_by_hand_shows_as_running(files: ClusterFiles) -> None:
    statuses = {r: status(r, [p for p in range(4) if p != r]) for r in range(4)}
    statuses[1]["by_hand"] = True
    rows = table_rows(files, statuses, {})
    assert column(rows, "status")[1] == "normal (by hand)"
    assert column(rows, "peers")[1] == "3/3"


def test_a_replica_not_yet_reporting_is_starting(files: ClusterFiles) -> None:
    rows = table_rows(files, {0: None}, {})
    assert column(rows, "status") == ["starting"] * 4


def test_traitors_are_marked_with_their_behaviours(files: ClusterFiles) -> None:
    traitors = {2: ["equivocate:targets=1+3", "stall:ms=500"]}
    rows = table_rows(files, {}, traitors)
    assert column(rows, "traitor") == ["", "", "yes (equivocate:targets=1+3, stall:ms=500)", ""]


def test_more_traitors_than_f_get_a_warning() -> None:
    assert traitor_warning({3: ["mute"]}, f=1) is None
    warning = traitor_warning({2: ["mute"], 3: ["lie"]}, f=1)
    assert warning is not None and "2 traitors exceed f = 1" in warning


def test_metrics_ports_are_a_base_port_plus_the_replica_id(files: ClusterFiles) -> None:
    assert metrics_arguments(files, "127.0.0.1", 0) == {}
    arguments = metrics_arguments(files, "127.0.0.1", 9100)
    assert arguments[3] == ["--metrics-host", "127.0.0.1", "--metrics-port", "9103"]
    with pytest.raises(ConfigError, match="65535"):
        metrics_arguments(files, "127.0.0.1", 65534)


# ---------------------------------------------------- status files and processes


def write_status(path: Path, pid: int, state: str = "normal", age_seconds: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status(0, [1, 2, 3], state=state) | {"pid": pid}))
    written = time.time() - age_seconds
    os.utime(path, (written, written))


def test_a_fresh_status_of_a_live_process_not_started_here_is_running_by_hand(
    tmp_path: Path,
) -> None:
    process = ReplicaProcess(tmp_path, 0, tmp_path / "replica-0")
    write_status(process.status_path, os.getpid())
    seen = process.status()
    assert seen is not None and seen["status"] == "normal" and seen["by_hand"]


def test_a_stale_status_file_is_an_exited_replica(tmp_path: Path) -> None:
    process = ReplicaProcess(tmp_path, 0, tmp_path / "replica-0")
    write_status(process.status_path, os.getpid(), age_seconds=STALE_STATUS_SECONDS + 5)
    seen = process.status()
    assert seen is not None and seen["status"] == "exited" and "by_hand" not in seen


def test_the_status_of_a_dead_pid_is_an_exited_replica(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    process = ReplicaProcess(tmp_path, 0, tmp_path / "replica-0")
    write_status(process.status_path, int(gone.stdout))
    seen = process.status()
    assert seen is not None and seen["status"] == "exited"


def test_a_replica_that_stopped_cleanly_stays_stopped(tmp_path: Path) -> None:
    process = ReplicaProcess(tmp_path, 0, tmp_path / "replica-0")
    write_status(process.status_path, os.getpid(), state="stopped")
    seen = process.status()
    assert seen is not None and seen["status"] == "stopped"
