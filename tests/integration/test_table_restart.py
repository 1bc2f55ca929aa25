"""``pbft cluster``'s table over real processes: a replica killed, then restarted by hand."""

from __future__ import annotations

import subprocess
import sys

import trio

from pbft.runtime.cluster_table import COLUMNS, table_rows
from pbft.runtime.processes import LocalCluster
from tests.integration.conftest import wait_for


async def test_a_replica_restarted_by_hand_shows_as_running_and_connected(
    cluster: LocalCluster,
) -> None:
    peers = COLUMNS.index("peers")
    process = cluster.processes[3]
    process.kill()
    statuses = await wait_for(cluster, lambda s: all(s[r] is not None for r in range(4)))
    rows = table_rows(cluster.files, statuses, {})
    assert rows[3][COLUMNS.index("status")] == "exited"
    assert [row[peers] for row in rows] == ["2/3", "2/3", "2/3", ""]

    # The user starts it again in another terminal, on the same data folder.
    command = [sys.executable, "-m", "pbft", "replica", str(cluster.files.directory),
               "--id", "3", "--data", str(process.data_dir)]  # fmt: skip
    by_hand = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        statuses = await wait_for(
            cluster,
            lambda s: all(row[peers] == "3/3" for row in table_rows(cluster.files, s, {})),
            timeout=30,
        )
        status = statuses[3]
        assert status is not None and status["by_hand"] and status["pid"] == by_hand.pid
        row = table_rows(cluster.files, statuses, {})[3]
        assert row[COLUMNS.index("pid")] == str(by_hand.pid)
        assert row[COLUMNS.index("status")] == "normal (by hand)"
    finally:
        by_hand.terminate()
        await trio.to_thread.run_sync(by_hand.wait, 10)
