"""Rough edges a new user hit (issue 10), each through the interface the user used.

Every mistake is one line on stderr and a non-zero exit, never a traceback;
a failure says its cause (which replicas cannot be reached, which refused the
handshake and why, how the replies disagree); counts say what they count.
Commands run as ``python -m pbft`` subprocesses, or through
:func:`pbft.cli.main` when only argument checking is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults.scenarios.document import ScenarioError, load_scenario
from pbft import cli
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.processes import ClusterBusy, LocalCluster
from pbft.service import MAX_KEY_BYTES, MAX_VALUE_BYTES
from tests.integration.conftest import PROTOCOL


def pbft(
    *args: str | bytes, timeout: float = 60, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, timeout=timeout, input=stdin
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (asserting that it is one)."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr
    return lines[0]


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def folder(tmp_path: Path) -> ClusterFiles:
    """A cluster folder whose replicas are not running."""
    return init_cluster(tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4))


# ------------------------------------------------------------ 1. why no quorum


def test_a_client_of_a_stopped_cluster_names_the_replicas_it_cannot_reach(
    folder: ClusterFiles,
) -> None:
    line = one_line_error(pbft("client", str(folder.directory), "--timeout", "1", "get", "k"))
    assert "no 2 replicas agreed on a result within 1 s" in line
    assert "replicas 0, 1, 2, 3" in line and "connection refused" in line
    assert f"127.0.0.1:{folder.replicas[3].port}" in line
    assert "is the cluster running?" in line


def test_a_client_of_another_cluster_is_told_that_the_handshake_was_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    ports = [replica.port for replica in cluster.files.replicas]
    other = init_cluster(tmp_path / "other", f=1, clients=1, ports=ports)
    line = one_line_error(pbft("client", str(other.directory), "--timeout", "2", "get", "k"))
    assert "replicas 0, 1, 2, 3" in line and "refused the handshake" in line
    assert f"it serves cluster {cluster.files.config.cluster_id!r}" in line
    assert repr(other.config.cluster_id) in line


def test_a_client_whose_key_the_replicas_do_not_have_is_told_the_likely_cause(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Same cluster id, another key for client 0: the replicas drop the connection once
    the client's PROOF does not verify, which the client sees right after the handshake."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pbft.crypto import Ed25519Signer

    impostor = tmp_path / "impostor"
    (impostor / "keys").mkdir(parents=True, mode=0o700)
    ours = cluster.files.config.client_keys[0].hex()
    key = Ed25519Signer(Ed25519PrivateKey.generate())
    toml = (cluster.files.directory / "cluster.toml").read_text()
    (impostor / "cluster.toml").write_text(toml.replace(ours, key.public_key.hex()))
    key_file = impostor / "keys" / "client-0.key"
    key_file.write_text(key.private_bytes().hex() + "\n")
    key_file.chmod(0o600)
    line = one_line_error(pbft("client", str(impostor), "--timeout", "2", "get", "k"))
    assert "closed the connection right after the handshake" in line
    assert "does its cluster.toml have this client's key?" in line


def test_replies_that_disagree_are_counted_and_grouped(tmp_path: Path) -> None:
    """Only replicas 0 (honest) and 3 (lying about results) reply: f+1 = 2 replies, which
    do not match, so the client can say how they differ."""
    files = init_cluster(
        tmp_path / "c", f=1, clients=1, ports=free_loopback_ports(4), protocol=PROTOCOL
    )
    silent = ["--traitor", "mute:types=reply"]
    liar = ["--traitor", "lie:what=result"]
    local = LocalCluster(files, tmp_path / "data", replica_args={1: silent, 2: silent, 3: liar})
    local.start()
    try:
        assert local.wait_connected(30), local.statuses()
        line = one_line_error(
            pbft("client", str(files.directory), "--timeout", "3", "put", "k", "v")
        )
    finally:
        local.stop()
    assert "2 replies, 2 distinct results" in line
    assert "replica 0: result" in line and "replica 3: result" in line
    assert "replicas 1, 2 connected but did not reply" in line


# ----------------------------------------------------------- 2. a port in use


def test_a_replica_whose_port_is_taken_says_so_in_one_line(folder: ClusterFiles) -> None:
    host, port = folder.address(0)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((host, port))
        taken.listen()
        result = pbft("replica", str(folder.directory), "--id", "0")
    line = one_line_error(result)
    assert result.returncode == 2
    assert line.endswith(f"replica 0: cannot listen on {host}:{port}: address already in use")


def test_a_local_cluster_refuses_to_start_on_a_port_in_use(
    folder: ClusterFiles, tmp_path: Path
) -> None:
    host, port = folder.address(2)
    with socket.socket() as taken:
        taken.bind((host, port))
        taken.listen()
        local = LocalCluster(folder, tmp_path / "data")
        with pytest.raises(ClusterBusy, match=f"replica 2: cannot listen on {host}:{port}"):
            local.start()
    assert not any(process.running for process in local.processes.values())
    local.start()  # the lock was released with the refusal: the port is free again
    local.stop()


def test_a_second_cluster_on_a_running_folder_is_refused_and_disturbs_nothing(
    folder: ClusterFiles,
) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "pbft", "cluster", str(folder.directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    watcher = LocalCluster(folder, folder.directory / "data")
    try:
        assert watcher.wait_until(
            lambda statuses: all(s and len(s["peers_connected"]) == 3 for s in statuses.values()),
            timeout=60,
        ), {r: s and (s["status"], s["peers_connected"]) for r, s in watcher.statuses().items()}
        pids = {replica: status["pid"] for replica, status in watcher.statuses().items() if status}
        second = pbft("cluster", str(folder.directory), timeout=30)
        line = one_line_error(second)
        assert second.returncode == 2
        assert "already running" in line and str(first.pid) in line
        time.sleep(0.5)  # long enough for a replica of the second cluster to have written
        statuses = watcher.statuses()
        assert {r: s["pid"] for r, s in statuses.items() if s} == pids
        assert all(status and status["status"] == "normal" for status in statuses.values())
        for process in watcher.processes.values():
            assert "Traceback" not in process.log_path.read_text()
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(30)
        except subprocess.TimeoutExpired:
            first.kill()


# Item 6's kill -9 of `pbft cluster`: tests/integration/test_commands.py,
# test_replicas_exit_when_pbft_cluster_is_killed (PR_SET_PDEATHSIG).


# --------------------------------------------------- 3. the demo counts requests


def test_the_demo_says_what_starts_and_counts_executed_requests() -> None:
    result = pbft("demo", "--requests", "20", "--clients", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("starting 4 replica processes on 127.0.0.1")
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "20 / 20 requests" in lines["committed"]
    # Every replica executed the 20 requests, in fewer batches (sequence numbers).
    assert "20 requests in" in lines["executed"] and "on every replica" in lines["executed"]
    assert "final views" in result.stdout


# ---------------------------------------------- 4. the simulated scenario report


def test_a_simulated_scenario_report_names_its_driver_and_both_kinds_of_views() -> None:
    scenario = "scripts/scenarios/equivocating-primary.toml"
    text = pbft("scenario", "run", scenario, "--sim", timeout=120)
    assert "deterministic simulator" in text.stdout and "Trio" not in text.stdout
    report = json.loads(pbft("scenario", "run", scenario, "--sim", "--json").stdout)
    assert report["mode"] == "simulated"
    final = {r["view"] for r in report["replicas"] if r["honest"]}
    assert report["final_views"] == sorted(final)
    # Views passed through count as seen: 0, every view entered, the final ones.
    assert set(report["views_seen"]) >= {0, *final}
    assert f"final {', '.join(map(str, sorted(final)))}" in text.stdout


def test_a_real_scenario_report_counts_views_the_same_way() -> None:
    """The real runner samples views while it runs; the report adds the final ones."""
    from faults.scenarios.report import build_report, format_report

    scenario = load_scenario("scripts/scenarios/stall.toml")
    replicas = [
        {"id": i, "honest": i != 0, "behaviours": [], "view": 2, "last_executed": 7,
         "executed": [], "state_digest": ""}
        for i in range(4)
    ]  # fmt: skip
    report = build_report(scenario, 3, replicas, [], views_seen=[0, 1], evidence=[], elapsed_s=1)
    assert report["mode"] == "real"
    assert (report["views_seen"], report["final_views"]) == ([0, 1, 2], [2])
    text = format_report(report)
    assert "real Trio replicas over loopback TCP" in text and "seen 0, 1, 2; final 2" in text


# -------------------------------------------- 5. values accepted silently before


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("0:stall:ms=-5", "ms must be >= 0, got -5"),
        ("0:stall:types=NOTATYPE", "unknown message type 'NOTATYPE'"),
    ],
)
def test_a_traitor_with_an_impossible_value_is_refused(
    capsys: pytest.CaptureFixture[str], spec: str, problem: str
) -> None:
    code, _, err = main(capsys, "demo", "--traitor", spec)
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1


def test_a_scenario_file_refuses_the_same_message_type_as_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = tmp_path / "bad.toml"
    stall = Path("scripts/scenarios/stall.toml").read_text()
    scenario.write_text(
        stall.replace('behaviour = "stall"', 'behaviour = "stall"\ntypes = ["notatype"]')
    )
    with pytest.raises(ScenarioError) as refused:
        load_scenario(scenario)
    _, _, err = main(capsys, "demo", "--traitor", "0:stall:types=notatype")
    shared = "unknown message type 'NOTATYPE'"
    assert shared in str(refused.value) and shared in err


def test_durations_of_zero_are_refused(
    capsys: pytest.CaptureFixture[str], folder: ClusterFiles
) -> None:
    code, _, err = main(capsys, "demo", "--timeout", "0")
    assert code == 2 and "--timeout must be a number of seconds above 0" in err
    code, _, err = main(capsys, "client", str(folder.directory), "--timeout", "0", "get", "k")
    assert code == 2 and "--timeout must be a number of seconds above 0" in err


def test_init_with_an_empty_folder_name_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, "init", "", "--f", "1")
    assert code == 2 and "DIR is empty" in err
    assert list(tmp_path.iterdir()) == []


def test_input_that_is_not_utf8_is_one_clear_line(folder: ClusterFiles) -> None:
    line = one_line_error(pbft("client", str(folder.directory), "put", b"k\xffey", "v"))
    assert "the key is not UTF-8 text (byte 0xff at offset 1)" in line
    line = one_line_error(pbft("client", str(folder.directory), "put", "k", "-", stdin=b"\xc3("))
    assert "the value read from stdin is not UTF-8 text" in line


def test_values_and_keys_over_the_limits_are_refused_before_sending(
    folder: ClusterFiles, tmp_path: Path
) -> None:
    directory = str(folder.directory)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_VALUE_BYTES + 1))
    for result in (
        pbft("client", directory, "put", "k", "--file", str(big)),
        pbft("client", directory, "put", "k", "-", stdin=big.read_bytes()),
        pbft("client", directory, "put", "k", "x" * (MAX_VALUE_BYTES + 1)),
    ):
        assert f"over {MAX_VALUE_BYTES} bytes" in one_line_error(result)
    long_key = one_line_error(pbft("client", directory, "get", "k" * (MAX_KEY_BYTES + 1)))
    assert f"the key is over {MAX_KEY_BYTES} bytes" in long_key
    both = one_line_error(pbft("client", directory, "put", "k", "v", "--file", str(big)))
    assert "either as VALUE or with --file" in both
    help_text = pbft("client", "--help").stdout
    assert f"at most {MAX_KEY_BYTES} bytes" in help_text and str(MAX_VALUE_BYTES) in help_text


def test_put_says_ok_takes_files_and_stdin_and_json_stays_json(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    directory = str(cluster.files.directory)
    put = pbft("client", directory, "put", "colour", "blue")
    assert (put.returncode, put.stdout) == (0, "ok\n"), put.stderr
    largest = tmp_path / "largest"
    largest.write_text("é" * (MAX_VALUE_BYTES // 2))  # 2 bytes each: exactly the limit
    assert pbft("client", directory, "put", "notes", "--file", str(largest)).stdout == "ok\n"
    got = pbft("client", directory, "get", "notes")
    assert got.stdout == largest.read_text() + "\n"
    piped = pbft("client", directory, "put", "piped", "-", stdin=b"line one\nline two\n")
    assert piped.stdout == "ok\n"
    answer = json.loads(pbft("client", directory, "get", "piped", "--json").stdout)
    assert answer["result"] == "line one\nline two\n"
    assert json.loads(pbft("client", directory, "put", "k", "v", "--json").stdout)["result"] is True
    assert pbft("client", directory, "delete", "k").stdout == "deleted\n"
    assert pbft("client", directory, "delete", "k").stdout == "absent (nothing to delete)\n"


# ------------------------------------------------------ 6. version and defaults


def test_version_and_init_defaults_are_shown() -> None:
    version = pbft("--version")
    assert version.returncode == 0 and version.stdout.startswith("pbft ")
    assert version.stdout.split()[1][0].isdigit()
    init_help = pbft("init", "--help").stdout
    for shown in ("(default: 127.0.0.1)", "(default: 7000)", "(default: 1)", "(default: 3f+1)"):
        assert shown in init_help


def test_replicas_exit_when_the_demo_is_killed() -> None:
    """kill -9 of ``pbft demo`` mid-run: its replicas must not outlive it (PR_SET_PDEATHSIG;
    test_commands.py checks the same for ``pbft cluster``)."""
    if sys.platform != "linux":
        pytest.skip("replicas follow their parent's death on Linux only (prctl)")
    demo = subprocess.Popen(
        [sys.executable, "-m", "pbft", "demo", "--requests", "1000000", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    replicas: list[int] = []
    status_files: list[Path] = []
    try:
        deadline = time.monotonic() + 30
        while len(replicas) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            replicas = _children(demo.pid)
        assert len(replicas) == 4, f"the demo started {replicas}"
        # A child just forked still shows the demo's command line until it execs the replica.
        folders = [_data_folder(pid) for pid in replicas]
        while None in folders and time.monotonic() < deadline:
            time.sleep(0.05)
            folders = [_data_folder(pid) for pid in replicas]
        assert None not in folders, f"children {replicas} never became replicas"
        # Killed once they serve (each has written its status file), not while starting.
        status_files = [folder / "status.json" for folder in folders if folder is not None]
        while not all(path.exists() for path in status_files) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(path.exists() for path in status_files), "the replicas did not start"
        demo.send_signal(signal.SIGKILL)
        demo.wait(10)
        deadline = time.monotonic() + 20
        while _alive(replicas) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(replicas), f"replicas {_alive(replicas)} outlived the killed demo"
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in _alive(replicas):
            os.kill(pid, signal.SIGKILL)
        if status_files:  # a killed demo cannot remove its temporary folder: DIR/data/replica-I
            shutil.rmtree(status_files[0].parents[2], ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def _data_folder(pid: int) -> Path | None:
    """The ``--data`` folder on a replica process's command line; None before it has one."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"--data" not in arguments[:-1]:
        return None
    return Path(os.fsdecode(arguments[arguments.index(b"--data") + 1]))


def _alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (a zombie waiting for its reaper does not)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running
