"""Shared helpers for the protocol tests: build a cluster, run a workload, check agreement."""

from __future__ import annotations

from collections.abc import Iterable

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
