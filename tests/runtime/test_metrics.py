"""Prometheus metrics of real replica processes, scraped over loopback HTTP.

One cluster of four ``pbft replica`` processes, each with ``--metrics-port``,
runs a few writes; the test scrapes every replica, parses the text format with
prometheus_client's own parser, and checks the numbers against what the run
did and against each replica's ``status.json``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pbft import service as kv
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import HandshakeError, HandshakeRefused, dial_handshake
from pbft.runtime.metrics import handshake_failure_reason
from pbft.runtime.processes import LocalCluster
from tests.integration.conftest import PROTOCOL, connected_clients, wait_for

CLIENTS = 2
PUTS_PER_CLIENT = 10
REQUESTS = CLIENTS * PUTS_PER_CLIENT

#: Samples of one scrape: (name, sorted label items) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metrics_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, list[int]]]:
    files = init_cluster(
        tmp_path / "cluster", f=1, clients=CLIENTS, ports=free_loopback_ports(4), protocol=PROTOCOL
    )
    metrics_ports = free_loopback_ports(4)
    per_replica = {i: ["--metrics-port", str(port)] for i, port in enumerate(metrics_ports)}
    local = LocalCluster(files, tmp_path / "data", replica_args=per_replica)
    local.start()
    try:
        assert local.wait_connected(timeout=30), f"replicas did not connect: {local.statuses()}"
        yield local, metrics_ports
    finally:
        local.stop()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def put_all(files: ClusterFiles) -> None:
    async def writer(client) -> None:  # type: ignore[no-untyped-def]
        for i in range(PUTS_PER_CLIENT):
            result = await client.execute(kv.put(f"m-{client.id}-{i}", f"v{i}"), timeout=20)
            assert kv.decode_result(result) is True

    async with trio.open_nursery() as nursery:
        clients = await connected_clients(files, nursery, CLIENTS)
        async with trio.open_nursery() as writers:
            for client in clients:
                writers.start_soon(writer, client)
        nursery.cancel_scope.cancel()


async def dial_from_another_cluster(tmp_path: Path, files: ClusterFiles) -> None:
    """A client of another cluster, pointed at replica 0's address: refused."""
    address = files.address(0)
    other = init_cluster(tmp_path / "other", f=1, ports=[address[1] + i for i in range(4)])
    stream = await trio.open_tcp_stream(*address)
    framed = FramedStream(stream)
    with pytest.raises(HandshakeRefused):
        await dial_handshake(
            framed, other.config, ("client", 0), other.load_signer("client", 0), ("replica", 0)
        )
    await framed.aclose()


async def test_replicas_serve_metrics_that_match_the_run_and_their_status(
    metrics_cluster: tuple[LocalCluster, list[int]], tmp_path: Path
) -> None:
    cluster, ports = metrics_cluster
    await put_all(cluster.files)
    await dial_from_another_cluster(tmp_path, cluster.files)
    # Status files are rewritten every 0.2 s: ones written before the first execution all
    # agree on 0, which is not the agreement this waits for (seen once on a loaded machine).
    statuses = await wait_for(
        cluster,
        lambda s: (
            all(s[r] for r in range(4))
            and len({s[r]["last_executed"] for r in range(4)}) == 1
            and s[0]["last_executed"] > 0
        ),
    )
    last_executed = statuses[0]["last_executed"]

    for replica, port in enumerate(ports):
        samples = await trio.to_thread.run_sync(scrape, port)
        # Every replica executed every request once, in last_executed batches; a backup
        # that fell behind on a loaded machine may have fetched some as state instead.
        executed_here = value(samples, "pbft_requests_executed_total")
        batches_here = value(samples, "pbft_batches_executed_total")
        assert 0 < executed_here <= REQUESTS and 0 < batches_here <= last_executed
        assert value(samples, "pbft_last_executed_seq") == last_executed
        assert value(samples, "pbft_checkpoint_lag") == last_executed - value(
            samples, "pbft_stable_checkpoint_seq"
        )
        assert value(samples, "pbft_view") == 0
        assert value(samples, "pbft_peers_connected") == 3
        # Received = accepted + rejected, type by type; the counts are the core's own,
        # the ones status.json publishes.
        accepted = by_label(samples, "pbft_messages_accepted_total", "type")
        received = by_label(samples, "pbft_messages_received_total", "type")
        rejected: dict[str, float] = {}
        for (name, labels), count in samples.items():
            if name == "pbft_messages_rejected_total":
                rejected[dict(labels)["type"]] = rejected.get(dict(labels)["type"], 0) + count
        for message_type, count in received.items():
            assert count == accepted.get(message_type, 0) + rejected.get(message_type, 0)
        status = statuses[replica]
        assert status is not None
        for message_type, count in status["counters"]["accepted"].items():
            assert accepted[message_type] >= count  # the status file is up to 0.2 s older
        # Each store within its bound, by name as Replica.store_bytes() names them.
        held = by_label(samples, "pbft_store_bytes", "store")
        limits = by_label(samples, "pbft_store_limit_bytes", "store")
        assert {"pending", "slots", "certificates", "committed", "verified_cache"} <= set(held)
        assert all(0 <= held[store] <= limits[store] for store in held)
        assert sum(held.values()) > 0
        sent = by_label(samples, "pbft_messages_sent_total", "type")
        latency_count = value(samples, "pbft_request_latency_seconds_count")
        if replica == 0:  # the primary of view 0, which executes everything itself
            assert executed_here == REQUESTS and batches_here == last_executed
            # Once per batch to each backup, and again for a client that retransmitted.
            assert sent["PRE-PREPARE"] >= 3 * last_executed
            assert received["REQUEST"] >= REQUESTS
            assert "PREPARE" not in sent  # the primary's PRE-PREPARE is its prepare
            assert latency_count == REQUESTS  # every request reached it from its client
            assert value(samples, "pbft_request_latency_seconds_sum") > 0
            failures = value(
                samples, "pbft_handshake_failures_total", direction="accepted",
                reason="wrong-cluster",
            )  # fmt: skip
            assert failures == 1
        else:
            assert accepted["PRE-PREPARE"] > 0 and sent["PREPARE"] > 0
            # A backup sees a request from its client only when the client retransmits
            # to everyone (slow machine); otherwise only inside PRE-PREPAREs.
            assert latency_count <= REQUESTS
        assert sent["REPLY"] >= executed_here


def test_a_metrics_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    files = init_cluster(tmp_path / "cluster", f=1, ports=free_loopback_ports(4))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "pbft", "replica", str(files.directory), "--id", "0",
                   "--metrics-port", str(port)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"--metrics-port {port}" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (HandshakeRefused("it serves cluster 'a', not 'b'"), "refused"),
        (HandshakeError("handshake timed out"), "timeout"),
        (HandshakeError("the peer belongs to cluster 'b', not 'a'"), "wrong-cluster"),
        (HandshakeError("client 9 is not a member of the cluster"), "unknown-principal"),
        (HandshakeError("the dialer's signature does not verify: ..."), "bad-signature"),
        (HandshakeError("expected replica 1 but replica 2 answered"), "wrong-peer"),
        (HandshakeError("a pbft-hello message is not canonically encoded"), "malformed"),
    ],
)
def test_handshake_failures_get_a_short_reason(error: HandshakeError, reason: str) -> None:
    assert handshake_failure_reason(error) == reason
