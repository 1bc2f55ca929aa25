"""Replica processes on this machine: start, signal, watch and stop them.

``pbft cluster``, ``pbft demo`` and the integration tests run each replica as
its own operating-system process (``python -m pbft replica DIR --id I``), so
that killing one with SIGKILL is a real crash. A process reports its state in
``DATA/status.json``, which it rewrites several times a second; this module
reads those files instead of talking to the replicas.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pbft.runtime.files import ClusterFiles


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
        """The last status the process wrote, or None (not started, or gone)."""
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        if not self.running:
            status["status"] = "exited" if status.get("status") != "stopped" else "stopped"
        return status


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

    def start(self) -> None:
        for process in self.processes.values():
            process.start()

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
