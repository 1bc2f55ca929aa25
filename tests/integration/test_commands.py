"""The ``pbft`` command as a user runs it: init, demo, logs, and hostile peers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster
from tests.integration.conftest import connected_clients
from tests.integration.test_cluster import put_all


def pbft(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_json_commits_every_request() -> None:
    result = pbft("demo", "--json", "--requests", "60", "--clients", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["committed"] == summary["requests"] == 60
    assert summary["safe"] is True and summary["live"] is True
    assert {"throughput_ops", "latency_ms", "views"} <= set(summary)
    assert set(summary["latency_ms"]) == {"p50", "p99"}


def test_every_command_explains_itself() -> None:
    assert "demo" in pbft("--help").stdout
    for command in ("init", "replica", "cluster", "client", "demo"):
        result = pbft(command, "--help")
        assert result.returncode == 0 and "usage: pbft " + command in result.stdout


def test_init_writes_a_cluster_and_refuses_bad_ones_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    made = pbft("init", str(folder), "--f", "1", "--clients", "2")
    assert made.returncode == 0, made.stderr
    assert (folder / "cluster.toml").exists()
    for key in (folder / "keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_text().strip() not in (folder / "cluster.toml").read_text()
    again = pbft("init", str(folder), "--f", "1")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    too_few = pbft("init", str(tmp_path / "d"), "--f", "1", "--n", "3")
    assert too_few.returncode == 2
    assert "3f+1" in too_few.stderr and len(too_few.stderr.strip().splitlines()) == 1
    (folder / "keys" / "replica-2.key").unlink()
    missing = pbft("replica", str(folder), "--id", "2")
    assert missing.returncode == 2 and "replica-2.key" in missing.stderr


def test_json_logs_name_replica_view_seq_and_never_a_private_key(tmp_path: Path) -> None:
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    cluster = LocalCluster(files, tmp_path / "data", ("--log-json",))
    cluster.start()
    try:
        assert cluster.wait_connected(30)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                clients = await connected_clients(files, nursery, 1)
                await put_all(clients, "logged", 3)
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        cluster.stop()
    lines = cluster.processes[1].log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    kinds = {event["event"] for event in events}
    assert {"started", "receive", "send", "prepared", "committed", "executed"} <= kinds
    executed = [event for event in events if event["event"] == "executed"]
    assert all({"t", "wall_ms", "node", "view", "seq"} <= set(event) for event in executed)
    assert executed[0]["node"] == "replica-1"
    everything = "\n".join(lines)
    for key_file in (files.directory / "keys").iterdir():
        assert key_file.read_text().strip() not in everything


def test_hostile_peers_are_disconnected_and_the_replica_serves_others(tmp_path: Path) -> None:
    """Garbage, a failed handshake and an oversized frame each cost only their own
    connection; the replica keeps serving honest clients."""
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    cluster = LocalCluster(files, tmp_path / "data")
    cluster.start()
    try:
        assert cluster.wait_connected(30)
        address = files.address(0)
        for hostile in (
            os.urandom(4096),  # garbage
            b"\x00\x00\x00\x05hello",  # a frame that is no handshake
            (2**31).to_bytes(4, "big") + b"x" * 100,  # announces a 2 GiB frame
        ):
            with socket.create_connection(address, timeout=5) as connection:
                connection.sendall(hostile)
                connection.settimeout(5)
                assert connection.recv(65536) == b"", "the replica should close the connection"
        assert cluster.processes[0].running

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                clients = await connected_clients(files, nursery, 1)
                await put_all(clients, "still-served", 3)
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        cluster.stop()


def test_cluster_command_runs_every_replica_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    import signal
    import time

    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    command = subprocess.Popen(
        [sys.executable, "-m", "pbft", "cluster", str(files.directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watcher = LocalCluster(files, files.directory / "data")
    try:
        deadline = time.monotonic() + 30
        statuses: dict = {}
        while time.monotonic() < deadline:
            statuses = watcher.statuses()
            if all(s and len(s["peers_connected"]) == 3 for s in statuses.values()):
                break
            time.sleep(0.1)
        assert all(s and len(s["peers_connected"]) == 3 for s in statuses.values()), statuses
        pids = [s["pid"] for s in statuses.values()]
        command.send_signal(signal.SIGINT)
        output, _ = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 0
    assert "replica" in output and "view" in output
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"replica {pid} still runs"


def test_replicas_exit_when_pbft_cluster_is_killed(tmp_path: Path) -> None:
    """kill -9 of ``pbft cluster`` cannot stop its replicas itself; they must not outlive it."""
    import signal
    import time

    if sys.platform != "linux":
        pytest.skip("replicas follow their parent's death on Linux only (prctl)")
    files = init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))
    command = subprocess.Popen(
        [sys.executable, "-m", "pbft", "cluster", str(files.directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    watcher = LocalCluster(files, files.directory / "data")
    try:
        assert watcher.wait_until(lambda s: all(s.values()), timeout=30), watcher.statuses()
        pids = [s["pid"] for s in watcher.statuses().values() if s]
        command.send_signal(signal.SIGKILL)
        command.wait(10)
        deadline = time.monotonic() + 20
        running = pids
        while running and time.monotonic() < deadline:
            running = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]
            time.sleep(0.05)
        assert not running, f"replicas {running} outlived their killed parent"
    finally:
        if command.poll() is None:
            command.kill()
        for status in watcher.statuses().values():
            if status and os.path.exists(f"/proc/{status['pid']}"):
                os.kill(status["pid"], signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_demo_with_a_mute_primary_changes_view_and_stays_safe() -> None:
    """--traitor makes a replica a traitor from outside; the honest ones replace it."""
    result = pbft("demo", "--json", "--requests", "30", "--clients", "2",
                  "--traitor", "0:mute:from_seq=5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["committed"] == 30 and summary["safe"] and summary["live"]
    assert summary["traitors"] == [0]
    assert max(summary["views"]) >= 1


def test_a_bad_traitor_spec_is_refused_in_one_line() -> None:
    result = pbft("demo", "--traitor", "9:mute")
    assert result.returncode == 2 and "replica 9 does not exist" in result.stderr
    result = pbft("demo", "--traitor", "0:sulk")
    assert result.returncode == 2 and "unknown behaviour 'sulk'" in result.stderr
