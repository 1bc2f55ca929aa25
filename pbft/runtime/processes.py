"""Replica processes on this machine: start, signal, watch and stop them.

``pbft cluster``, ``pbft demo`` and the integration tests run each replica as
its own operating-system process (``python -m pbft replica DIR --id I``), so
that killing one with SIGKILL is a real crash. A process reports its state in
``DATA/status.json``, which it rewrites several times a second; this module
reads those files instead of talking to the replicas.

A status file says who wrote it (``pid``) and its age says whether that
process still writes it: a replica the user restarted by hand with ``pbft
replica`` after the one started here exited writes the same file, so it counts
as running again while its file is fresh and its pid alive; a replica whose
file went stale is gone, whatever the file last said.

A :class:`LocalCluster` holds ``DATA_ROOT/cluster.lock`` (an advisory
``flock``, released by the kernel however the holder dies) while it runs, and
checks that every replica's port is free before it starts anything: a second
``pbft cluster`` on a folder whose replicas are running is refused in one line
(:class:`ClusterBusy`) before it can unlink their status files or append to
their logs. Each replica asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``, Linux), so a ``kill -9`` of ``pbft cluster`` does not
leave its replicas running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pbft.runtime.files import ClusterFiles

#: A replica rewrites its status file every 0.2 s; one this much older is stale.
STALE_STATUS_SECONDS = 2.0
LOCK_NAME = "cluster.lock"


class ClusterBusy(ValueError):
    """The cluster's replicas, or something else, already hold what a start needs."""


class ReplicaProcess:
    def __init__(self, directory: Path, replica_id: int, data_dir: Path, args: Sequence[str] = ()):
        self.directory = directory
        self.id = replica_id
        self.data_dir = data_dir
        self.args = list(args)
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "replica.log"

    @property
    def status_path(self) -> Path:
        return self.data_dir / "status.json"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.status_path.unlink()
        command = [
            sys.executable, "-m", "pbft", "replica", str(self.directory),
            "--id", str(self.id), "--data", str(self.data_dir), *self.args,
        ]  # fmt: skip
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=functools.partial(_exit_with_parent, os.getpid())
                if sys.platform == "linux"
                else None,
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        self.signal(signal.SIGKILL)
        self.wait(5)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.kill()

    def status(self) -> dict[str, Any] | None:
        """The last status a replica wrote here, or None (none yet, or unreadable).

        ``status`` is ``exited`` or ``stopped`` once neither the process started
        here nor one started by hand (a fresh file, a live pid) is running.
        """
        try:
            age_seconds = time.time() - self.status_path.stat().st_mtime
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(status, dict):
            return None
        if self.running:
            return status
        if status.get("status") != "stopped" and _written_by_live_process(status, age_seconds):
            status["by_hand"] = True
            return status
        status["status"] = "exited" if status.get("status") != "stopped" else "stopped"
        return status


def _written_by_live_process(status: dict[str, Any], age_seconds: float) -> bool:
    """Whether the status file's writer still runs: fresh file, live pid."""
    pid = status.get("pid")
    if type(pid) is not int or pid <= 0 or age_seconds > STALE_STATUS_SECONDS:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _exit_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the process that started it dies.

    A replica started by ``pbft cluster`` or ``pbft demo`` must not outlive them,
    even when they are killed with SIGKILL and cannot stop it themselves (Linux
    only: prctl(PR_SET_PDEATHSIG); elsewhere a replica outlives a killed parent).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class LocalCluster:
    """Every replica of a cluster folder as a local process."""

    def __init__(
        self,
        files: ClusterFiles,
        data_root: Path,
        args: Sequence[str] = (),
        replica_args: Mapping[int, Sequence[str]] | None = None,
    ):
        """``args`` go to every replica, ``replica_args[i]`` to replica i only."""
        self.files = files
        self.data_root = data_root
        extra = replica_args or {}
        self.processes = {
            replica.id: ReplicaProcess(
                files.directory,
                replica.id,
                data_root / f"replica-{replica.id}",
                [*args, *extra.get(replica.id, ())],
            )
            for replica in files.replicas
        }
        #: The descriptor holding DATA_ROOT/cluster.lock while the cluster runs.
        self._lock: int | None = None

    def start(self) -> None:
        """Start every replica; :class:`ClusterBusy` if the folder's replicas already run.

        Also after a crash of every replica: the lock is still ours then, and kept.
        """
        held = self._lock is not None
        if not held:
            self._lock = hold_lock(self.data_root / LOCK_NAME)
        try:
            check_ports_free(self.files)
        except ClusterBusy:
            if not held:
                self._release()
            raise
        for process in self.processes.values():
            process.start()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to every replica at once; SIGKILL to those still up after ``timeout``.

        One deadline for the whole cluster, not one per replica: a cluster whose
        replicas all ignore SIGTERM is down in ``timeout`` plus the kills, not in
        n times that.
        """
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.wait(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.running:
                process.kill()
        self._release()

    def statuses(self) -> dict[int, dict[str, Any] | None]:
        return {replica: process.status() for replica, process in self.processes.items()}

    def wait_until(
        self, predicate: Callable[[dict[int, dict[str, Any] | None]], bool], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.statuses()):
                return True
            time.sleep(0.05)
        return predicate(self.statuses())

    def wait_connected(self, timeout: float = 30.0) -> bool:
        """Until every running replica is connected to every other one."""
        everyone = set(self.processes)

        def connected(statuses: dict[int, dict[str, Any] | None]) -> bool:
            return all(
                status is not None and set(status["peers_connected"]) | {replica} == everyone
                for replica, status in statuses.items()
                if self.processes[replica].running
            )

        return self.wait_until(connected, timeout)


def hold_lock(path: Path) -> int:
    """Take the advisory lock ``path`` and return its descriptor; :class:`ClusterBusy`, naming
    the holder's pid, if another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ClusterBusy(
            f"the replicas of {path.parent} are already running (process {holder} holds "
            f"{path}): stop that pbft cluster first"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def check_ports_free(files: ClusterFiles) -> None:
    """:class:`ClusterBusy` naming the first replica whose address cannot be listened on.

    Bound as the replica binds it (SO_REUSEADDR, so a port in TIME_WAIT counts as
    free) and closed at once: a replica started a moment later gets the port.
    """
    for replica in files.replicas:
        try:
            for family, kind, protocol, _, address in socket.getaddrinfo(
                replica.host, replica.port, type=socket.SOCK_STREAM
            ):
                with socket.socket(family, kind, protocol) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(address)
        except OSError as error:
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            hint = " (is this cluster already running?)" if error.errno == errno.EADDRINUSE else ""
            raise ClusterBusy(
                f"replica {replica.id}: cannot listen on {replica.host}:{replica.port}: "
                f"{reason}{hint}"
            ) from None
