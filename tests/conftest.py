"""Shared helpers for the protocol tests, and how the suite runs and reports progress.

The suite runs on every core (pytest-xdist, ``-n auto`` in pyproject.toml).
Tests marked ``slow`` are moved to the front of the run, so that the workers
start the long ones first and the quick ones fill in around them, instead of
one worker ending the run alone in a test of several minutes. While no test
has finished for :data:`HEARTBEAT_SECONDS`, the main process names the tests
still running and for how long, so that a long test never looks like a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

from pbft import service as kv
from pbft.simnet import SimCluster


def put_ops(client: int, count: int, prefix: str = "k") -> list[bytes]:
    return [kv.put(f"{prefix}{client}-{i}", f"v{i}") for i in range(count)]


def submit_puts(cluster: SimCluster, per_client: int, prefix: str = "k") -> None:
    for client in cluster.clients:
        cluster.network.submit(client, put_ops(client, per_client, prefix))


def assert_agreement(cluster: SimCluster, honest: Iterable[int] | None = None) -> None:
    """No two honest replicas executed different batches at one sequence number (§4, safety).

    Executions are compared by (seq, digest): one batch may execute in
    different views at different replicas when a view change re-issues it.
    """
    honest = list(honest if honest is not None else cluster.replicas)
    by_seq: dict[int, tuple[int, bytes]] = {}
    for replica in honest:
        executed = cluster.network.executed[replica]
        seqs = [entry.seq for entry in executed]
        assert seqs == sorted(set(seqs)), f"replica {replica} executed out of order: {seqs}"
        for entry in executed:
            known = by_seq.setdefault(entry.seq, (replica, entry.digest))
            assert known[1] == entry.digest, (
                f"replicas {known[0]} and {replica} executed different batches at seq {entry.seq}"
            )


def assert_same_state(cluster: SimCluster, replicas: Iterable[int]) -> None:
    replicas = list(replicas)
    executed = {r: cluster.replicas[r].last_executed for r in replicas}
    digests = {r: cluster.replicas[r].state_digest() for r in replicas}
    assert len(set(executed.values())) == 1, f"last executed differ: {executed}"
    assert len(set(digests.values())) == 1, "state digests differ"


def completed_all(cluster: SimCluster) -> bool:
    return all(op.return_tick is not None for op in cluster.network.operations)


def executed_requests(cluster: SimCluster, replica: int) -> list[tuple[int, int]]:
    return [request for entry in cluster.network.executed[replica] for request in entry.requests]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


# --------------------------------------------------------------- running the suite

#: Seconds without a finished test before the running ones are named.
HEARTBEAT_SECONDS = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort: each keeps its place among its kind)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class Heartbeat:
    """Names the tests still running whenever none has finished for a while."""

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter
        self.running: dict[str, float] = {}
        self.last_progress = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="heartbeat", daemon=True)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.running[nodeid] = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.running.pop(report.nodeid, None)
            self.last_progress = time.monotonic()

    def _watch(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS / 3):
            now = time.monotonic()
            if now - self.last_progress < HEARTBEAT_SECONDS:
                continue
            self.last_progress = now
            for nodeid, started in sorted(self.running.copy().items(), key=lambda kv: kv[1]):
                if now - started >= HEARTBEAT_SECONDS:
                    minutes, seconds = divmod(int(now - started), 60)
                    self.reporter.write_line(f"still running ({minutes}m{seconds:02d}s): {nodeid}")


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    # Only xdist's main process reports (its workers have ``workerinput``), which runs
    # no test: in a run without workers, the lines would land in a test's captured output.
    distributed = config.pluginmanager.has_plugin("dsession")
    if reporter is None or hasattr(config, "workerinput"):
        return
    if not distributed and config.getoption("capture") != "no":
        return
    heartbeat = Heartbeat(reporter)
    config.pluginmanager.register(heartbeat, "heartbeat")
    heartbeat.thread.start()
    config.add_cleanup(heartbeat.stopped.set)
