"""Four hosts: one replica per Linux network namespace, over a real (virtual) network.

The other integration tests run every replica on 127.0.0.1. This one gives each
replica a host of its own: four network namespaces, each joined by a veth pair
to a private bridge in the root namespace, each replica listening on its own
address (``pbft init --host A,B,C,D``), started with ``ip netns exec NS python
-m pbft replica``. The public ``pbft client`` command runs in the root
namespace and reaches them over the bridge. When the kernel has ``sch_netem``,
every link gets delay, jitter and loss (``tc qdisc ... netem``); without it (a
kernel built without ``CONFIG_NET_SCH_NETEM``) every link is shaped by a token
bucket instead (``tbf``: a bandwidth limit, queueing delay and tail drops), and the
test says so in a warning. Then one host is cut off
(its link set down), operations go on with the other three, the link comes
back, and the test checks:

* liveness: every operation succeeded, during the partition too, and the
  healed replica caught up (its ``last_executed`` reaches the others');
* safety: the executed histories of all four replicas agree, seq by seq
  (:func:`pbft.runtime.demo.agreement`, as ``pbft demo`` checks).

Skipped, with the reason, unless this runs as root with ``ip`` and ``tc``
(Debian's ``iproute2``) and may create a network namespace. Every name carries
a random tag, and everything (processes, namespaces, bridge) is removed
afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbft.runtime.demo import agreement
from pbft.runtime.storage import read_history

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("netns")]

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 4
#: Small checkpoints, so that the cut-off replica falls below its peers' window and
#: has to catch up by state transfer, not only by fetching commit certificates.
PROTOCOL = "\n[protocol]\ncheckpoint_interval = 4\nlog_window = 8\n"
NETEM = ("delay", "10ms", "4ms", "distribution", "normal", "loss", "1%")
#: Where the kernel has no netem: 4 Mbit/s per link and direction, packets queued up to 25 ms
#: and dropped beyond (a slow link, its queueing delay and its tail drops).
TBF = ("rate", "4mbit", "burst", "32kb", "latency", "25ms")


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def why_not_here() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command (Debian package iproute2)"
    probe = f"pbft-probe-{secrets.token_hex(3)}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


class Hosts:
    """Four namespaces on a private bridge; ``addresses[i]`` is host i's address."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)  # interface names have at most 15 characters
        self.bridge = f"pbb{tag}"
        self.namespaces = [f"pbft-{tag}-{i}" for i in range(REPLICAS)]
        self.veths = [f"pbv{tag}{i}" for i in range(REPLICAS)]
        prefix = self._free_prefix()
        self.addresses = [f"{prefix}.{i + 1}" for i in range(REPLICAS)]
        self.gateway = f"{prefix}.254"
        self.impairment = "none"

    @staticmethod
    def _free_prefix() -> str:
        routes = run("ip", "-4", "route").stdout
        for _ in range(100):
            prefix = f"10.{secrets.choice(range(200, 250))}.{secrets.randbelow(256)}"
            if f"{prefix}." not in routes:
                return prefix
        raise RuntimeError("no free 10.x.y.0/24 subnet for the bridge")

    def create(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        # Bridged frames must not meet the host's iptables (a FORWARD policy of DROP).
        run(
            "ip", "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0", check=False
        )
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for namespace, veth, address in zip(
            self.namespaces, self.veths, self.addresses, strict=True
        ):
            run("ip", "netns", "add", namespace)
            run(*f"ip link add {veth} type veth peer name eth0 netns {namespace}".split())
            run("ip", "link", "set", veth, "master", self.bridge, "up")
            run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

    def impair(self) -> str:
        """Impair every link, both ways: delay, jitter and loss with netem; where the kernel
        has no sch_netem, a token bucket (tbf: a bandwidth limit, queueing delay up to its
        latency bound, and tail drops beyond it). Returns which ("netem" or "tbf")."""
        for kind, settings in (("netem", NETEM), ("tbf", TBF)):
            if self._shape(kind, settings):
                self.impairment = kind
                return kind
        raise RuntimeError("this kernel has neither sch_netem nor sch_tbf")

    def _shape(self, kind: str, settings: tuple[str, ...]) -> bool:
        for namespace, veth in zip(self.namespaces, self.veths, strict=True):
            for command in (
                ("ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0"),
                ("tc", "qdisc", "add", "dev", veth),
            ):
                result = run(*command, "root", kind, *settings, check=False)
                if result.returncode != 0:
                    if "unknown" in result.stderr.lower():
                        return False
                    raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return True

    def cut(self, host: int) -> None:
        run("ip", "link", "set", self.veths[host], "down")

    def heal(self, host: int) -> None:
        run("ip", "link", "set", self.veths[host], "up")

    def remove(self) -> None:
        for namespace in self.namespaces:  # takes its end of the veth pair with it
            run("ip", "netns", "del", namespace, check=False)
        run("ip", "link", "del", self.bridge, check=False)


class Replicas:
    """``pbft replica`` processes, replica i in namespace i."""

    def __init__(self, hosts: Hosts, cluster: Path, data: Path) -> None:
        self.hosts, self.cluster, self.data = hosts, cluster, data
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        for i, namespace in enumerate(self.hosts.namespaces):
            folder = self.data / f"replica-{i}"
            folder.mkdir(parents=True)
            command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "pbft", "replica"]
            command += [str(self.cluster), "--id", str(i), "--data", str(folder)]
            with open(folder / "replica.log", "wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
                    )
                )

    def status(self, i: int) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.data / f"replica-{i}" / "status.json").read_text())
        return {}

    def wait(self, predicate: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, process in enumerate(self.processes):
                assert process.poll() is None, f"replica {i} exited: {self.log(i)}"
            if predicate([self.status(i) for i in range(REPLICAS)]):
                return
            time.sleep(0.1)
        statuses = [self.status(i) for i in range(REPLICAS)]
        raise AssertionError(f"{what}: not within {timeout} s: {statuses}")

    def log(self, i: int) -> str:
        return (self.data / f"replica-{i}" / "replica.log").read_text()[-2000:]

    def stop(self) -> None:
        for process in self.processes:  # ip netns exec execs python: this is its pid
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = why_not_here()
    if reason is not None:
        pytest.skip(reason)
    network = Hosts()
    try:
        try:
            network.create()
        except RuntimeError as error:  # no bridge or veth support: the environment, not pbft
            pytest.skip(f"cannot build the virtual network: {error}")
        yield network
    finally:
        network.remove()


def pbft_client(cluster: Path, client: int, *operation: str) -> subprocess.Popen[str]:
    """Start ``pbft client`` in the root namespace: it reaches the replicas over the bridge."""
    command = [sys.executable, "-m", "pbft", "client", str(cluster), "--client", str(client)]
    return subprocess.Popen(
        [*command, "--timeout", "30", *operation],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, f"{' '.join(map(str, process.args))}: {err}"
    return out.strip()


def put_all(cluster: Path, written: dict[str, str], prefix: str, count: int) -> None:
    """``count`` puts, two at a time (clients 0 and 1 in parallel processes)."""
    for first in range(0, count, 2):
        running = []
        for i in range(first, min(first + 2, count)):
            key, value = f"{prefix}-{i}", f"{prefix}{i}"
            running.append(pbft_client(cluster, i % 2, "put", key, value))
            written[key] = value
        assert [finish(process) for process in running] == ["ok"] * len(running)


def test_four_hosts_survive_partitions_and_the_healed_hosts_catch_up(
    hosts: Hosts, tmp_path: Path
) -> None:
    started = time.monotonic()
    cluster = tmp_path / "cluster"
    made = subprocess.run(
        [sys.executable, "-m", "pbft", "init", str(cluster), "--f", "1", "--clients", "2",
         "--host", ",".join(hosts.addresses), "--base-port", "7000"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with open(cluster / "cluster.toml", "a") as config:
        config.write(PROTOCOL)
    if hosts.impair() != "netem":
        warnings.warn(
            "tc netem is not available in this kernel (sch_netem): the links are shaped by "
            "a token bucket instead (tbf: bandwidth, queueing delay, tail drops), without "
            "netem's random delay, jitter and loss",
            stacklevel=1,
        )
    replicas = Replicas(hosts, cluster, tmp_path / "data")
    written: dict[str, str] = {}
    phases: list[str] = []

    def mark(what: str) -> None:
        phases.append(f"{what} at {time.monotonic() - started:.1f} s")

    try:
        replicas.start()
        replicas.wait(
            lambda statuses: all(len(s.get("peers_connected", ())) == 3 for s in statuses),
            "the four replicas connected to each other",
            timeout=30,
        )
        mark("connected")
        put_all(cluster, written, "before", 4)
        # A backup cut off: the other three go on for more than a log window (8), so
        # that replica 3 falls below their window and needs a state transfer.
        hosts.cut(3)
        put_all(cluster, written, "backup-cut", 10)
        mark("10 writes with replica 3 cut off")
        behind = replicas.status(3).get("last_executed", 0)
        stable = min(replicas.status(i).get("stable_checkpoint", 0) for i in range(3))
        # Their stable checkpoint passed everything replica 3 executed: what it missed
        # is no longer in their logs, so it comes back by state transfer.
        assert behind < stable, (behind, stable)
        mark(f"replica 3 at {behind}, the others' stable checkpoint at {stable}")
        hosts.heal(3)
        put_all(cluster, written, "backup-healed", 2)
        mark("2 more after healing it")
        replicas.wait(caught_up, "replica 3 caught up after its partition", timeout=30)
        mark("backup healed and caught up")
        # The primary cut off: a view change, then the other three go on without it.
        primary = replicas.status(0).get("primary", 0)
        hosts.cut(primary)
        put_all(cluster, written, "primary-cut", 4)
        mark(f"4 writes with the primary ({primary}) cut off")
        others = [i for i in range(REPLICAS) if i != primary]
        assert all(replicas.status(i).get("view", 0) >= 1 for i in others)
        hosts.heal(primary)
        put_all(cluster, written, "primary-healed", 2)
        replicas.wait(caught_up, f"replica {primary} caught up after its partition", timeout=30)
        mark("primary healed and caught up")
        # Two at a time, one per client: a client has one request outstanding at most
        # (a second process of the same client would be refused as a replay).
        for keys in (("before-0", "backup-cut-9"), ("primary-cut-3", "primary-healed-1")):
            reads = [pbft_client(cluster, c, "get", key, "--json") for c, key in enumerate(keys)]
            for key, process in zip(keys, reads, strict=True):
                assert json.loads(finish(process))["result"] == written[key]
    finally:
        replicas.stop()
    histories = {
        i: read_history(tmp_path / "data" / f"replica-{i}" / "replica.db") for i in range(REPLICAS)
    }
    safe, conflict = agreement(histories)
    assert safe, conflict
    assert max(len(history) for history in histories.values()) >= len(written)
    print(
        f"\nnetns: 4 hosts, links shaped by {hosts.impairment}, "
        f"{len(written)} writes; " + "; ".join(phases)
    )


def caught_up(statuses: list[dict[str, Any]]) -> bool:
    """Every replica executed as far as the others, in the same view."""
    return (
        len({status.get("last_executed") for status in statuses}) == 1
        and len({status.get("view") for status in statuses}) == 1
    )
