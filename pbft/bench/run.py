"""Run a benchmark: real replica processes, closed-loop clients, same-run ceiling.

The replicas are ``pbft replica`` processes on loopback, as in ``pbft demo``;
the clients run in this process, each a full :class:`RemoteClient` that signs
its requests and waits for f+1 matching replies, one operation at a time
(closed loop). A warm-up (connections, first batches) is not measured; in the
measured window the replicas' CPU time comes from ``/proc``, the clients' from
this process, and the batch size from the sequence numbers the replicas
executed against the operations that completed.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from pbft import service as kv
from pbft.bench.calibrate import Costs, calibrate
from pbft.bench.model import AUTH_MODES, ceiling_ops, latency_floor_ms
from pbft.config import ConfigError, ProtocolParams
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.demo import DEMO_PROTOCOL, percentile
from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster


@attrs.frozen
class BenchSettings:
    f: int = 1
    clients: int = 64
    duration: float = 10.0
    warmup: float = 2.0
    batch: int = ProtocolParams().batch_size
    auth: str = "macs"
    timeout: float = 10.0
    #: Further ``[protocol]`` settings of the cluster (to measure a knob on and off).
    protocol: dict[str, int] = attrs.Factory(dict)
    #: Share of operations that are reads (``get``); the rest are ``put``s.
    reads: float = 0.0
    #: Bytes of each value written (and so of each read's result); 0: a few bytes.
    value_bytes: int = 0

    def check(self) -> None:
        """Refuse settings that cannot run, naming the option."""
        if self.f < 0:
            raise ValueError("--f must be at least 0")
        if self.clients < 1:
            raise ValueError("--clients must be at least 1")
        if self.duration <= 0:
            raise ValueError("--duration must be more than 0 seconds")
        if self.warmup < 0:
            raise ValueError("--warmup must be at least 0 seconds")
        if self.batch < 1:
            raise ValueError("--batch must be at least 1")
        if self.timeout <= 0:
            raise ValueError("--timeout must be more than 0 seconds")
        if not 0 <= self.reads <= 1:
            raise ValueError("--reads must lie in [0, 1]")
        if not 0 <= self.value_bytes <= kv.MAX_VALUE_BYTES:
            raise ValueError(f"--value-bytes must lie in [0, {kv.MAX_VALUE_BYTES}]")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"--auth {self.auth!r}: choose from {', '.join(AUTH_MODES)}")
        known = {field.name for field in attrs.fields(ProtocolParams)}
        for key in self.protocol:
            if key not in known:
                raise ValueError(f"--protocol {key}: not a protocol setting")
        try:
            ProtocolParams(**self.cluster_protocol())
        except (ConfigError, TypeError) as error:
            raise ValueError(f"--protocol: {error}") from None

    def cluster_protocol(self) -> dict[str, int]:
        """The ``[protocol]`` table of the benchmarked cluster."""
        signed = int(self.auth == "signatures")
        return {**DEMO_PROTOCOL, "batch_size": self.batch, "signed_replies": signed,
                **self.protocol}  # fmt: skip


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a process, from /proc (None elsewhere or gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@attrs.define
class Window:
    """What the clients saw in the measured window."""

    latencies: list[float] = attrs.Factory(list)
    timeouts: int = 0
    #: Operations that were reads (answered without ordering when fast reads are on).
    reads: int = 0
    #: Messages the clients accepted over the whole run, by type (REPLY, REPLY-DIGEST).
    replies: dict[str, int] = attrs.Factory(dict)
    #: (seconds into the window, largest replica's resident MB), about 60 samples.
    rss_mb: list[tuple[float, float]] = attrs.Factory(list)


def run_bench(
    settings: BenchSettings,
    progress: Callable[[str], None] = lambda line: None,
    costs: Costs | None = None,
) -> dict[str, Any]:
    """Calibrate, run the cluster, and return the figures (the ``--json`` document)."""
    settings.check()
    n = 3 * settings.f + 1
    progress("calibrating sign, verify, MAC and one message hop on this machine ...")
    costs = costs or calibrate()
    protocol = settings.cluster_protocol()
    interval = protocol["checkpoint_interval"]

    def ceiling(batch: float) -> float:
        fast_reads = settings.reads if protocol.get("fast_reads") else 0.0
        return ceiling_ops(costs, n, settings.f, batch, interval, settings.auth, cores(),
                           fast_reads=fast_reads)  # fmt: skip

    progress(
        f"ceiling of the design on {cores()} cores: {ceiling(1):,.0f} ops/s at batch 1, "
        f"{ceiling(settings.batch):,.0f} at batch {settings.batch}; "
        f"latency floor {latency_floor_ms(costs, n, settings.f, settings.auth):.1f} ms"
    )
    with tempfile.TemporaryDirectory(prefix="pbft-bench-") as folder:
        directory = Path(folder)
        progress(f"starting {n} replicas and {settings.clients} clients ...")
        files = init_cluster(
            directory, f=settings.f, clients=settings.clients,
            ports=free_loopback_ports(n), protocol=protocol,
        )  # fmt: skip
        cluster = LocalCluster(files, directory / "data")
        cluster.start()
        try:
            if not cluster.wait_connected(timeout=30):
                raise RuntimeError("the replicas did not all connect to each other within 30 s")
            measured = trio.run(_drive, files, cluster, settings, progress)
            rss = {
                str(replica): _round(resident_mb(process.popen.pid), 1)
                for replica, process in cluster.processes.items()
                if process.popen is not None
            }
            replicas = _replica_figures(cluster)
        finally:
            cluster.stop()
    window, elapsed, replica_cpu, client_cpu, batches = measured
    done = len(window.latencies)
    throughput = done / elapsed
    # With fast reads, reads take no part in any batch.
    ordered = done - window.reads if protocol.get("fast_reads") else done
    batch_mean = ordered / batches if batches else 0.0
    ceiling_now = ceiling(max(1.0, batch_mean))
    latencies_ms = [latency * 1000 for latency in window.latencies]
    return {
        "n": n,
        "f": settings.f,
        "clients": settings.clients,
        "auth": settings.auth,
        "reads": settings.reads,
        "value_bytes": settings.value_bytes,
        "duration_s": round(elapsed, 3),
        "batch_size": settings.batch,
        "protocol": dict(settings.protocol),
        "operations": done,
        "throughput_ops": round(throughput, 1),
        "latency_ms": {
            "p50": _round(statistics.median(latencies_ms) if latencies_ms else None),
            "p90": _round(percentile(latencies_ms, 0.90)),
            "p99": _round(percentile(latencies_ms, 0.99)),
        },
        "timeouts": window.timeouts,
        "batch_mean": round(batch_mean, 2),
        "ceiling_ops": round(ceiling_now, 1),
        "efficiency": round(throughput / ceiling_now, 3) if ceiling_now else None,
        "cpu_ms_per_op": {
            "replicas": _round(replica_cpu / done * 1000 if done else None),
            "clients": _round(client_cpu / done * 1000 if done else None),
        },
        "replica_rss_mb": rss,
        #: [seconds, MB]: the largest replica's resident memory through the window.
        "rss_mb_timeline": [list(sample) for sample in window.rss_mb],
        #: Replies the clients accepted over the whole run (warm-up included), by type.
        "client_accepted": dict(sorted(window.replies.items())),
        **replicas,
        "calibration_us": costs.as_us(),
        "cores": cores(),
    }


async def _drive(
    files: Any, cluster: LocalCluster, settings: BenchSettings, progress: Callable[[str], None]
) -> tuple[Window, float, float, float, int]:
    remote = [RemoteClient(files, c) for c in range(settings.clients)]
    window = Window()
    measuring = [False]

    async def closed_loop(client: RemoteClient) -> None:
        i = 0
        while True:
            i += 1
            key = f"k{client.id}-{i % 64}"
            # Reads spread evenly: operation i is a read when i * reads crosses an integer.
            is_read = int(i * settings.reads) != int((i - 1) * settings.reads)
            value = f"v{i}".ljust(settings.value_bytes, "x")
            operation = kv.get(key) if is_read else kv.put(key, value)
            started = time.perf_counter()
            try:
                await client.execute(operation, timeout=settings.timeout)
            except NoQuorum:
                if measuring[0]:
                    window.timeouts += 1
                continue
            if measuring[0]:
                window.latencies.append(time.perf_counter() - started)
                window.reads += is_read

    async with trio.open_nursery() as nursery:
        for client in remote:
            await nursery.start(client.run)
        with trio.fail_after(60):
            for client in remote:
                await client.wait_connected()
        for client in remote:
            nursery.start_soon(closed_loop, client)
        await trio.sleep(settings.warmup)
        pids = [p.popen.pid for p in cluster.processes.values() if p.popen is not None]
        cpu_before = [process_cpu_seconds(pid) or 0.0 for pid in pids]
        executed_before = _executed(cluster)
        client_before = time.process_time()
        measuring[0] = True
        started = time.perf_counter()
        deadline = started + settings.duration
        sample_every = max(1.0, settings.duration / 60)
        next_sample = started
        while (now := time.perf_counter()) < deadline:
            if now >= next_sample:
                _sample_rss(window, now - started, pids)
                next_sample += sample_every
            await trio.sleep(min(1.0, deadline - now))
            elapsed = time.perf_counter() - started
            progress(
                f"{elapsed:5.1f}/{settings.duration:g} s  {len(window.latencies):,} ops  "
                f"{len(window.latencies) / elapsed:,.0f} ops/s  {window.timeouts} timeouts"
            )
        measuring[0] = False
        elapsed = time.perf_counter() - started
        _sample_rss(window, elapsed, pids)
        client_cpu = time.process_time() - client_before
        cpu_after = [process_cpu_seconds(pid) or 0.0 for pid in pids]
        batches = _executed(cluster) - executed_before
        for client in remote:
            for kind, count in client.core.counters.accepted.items():
                window.replies[kind] = window.replies.get(kind, 0) + count
        nursery.cancel_scope.cancel()
    replica_cpu = sum(after - before for before, after in zip(cpu_before, cpu_after, strict=True))
    return window, elapsed, replica_cpu, client_cpu, batches


def _replica_figures(cluster: LocalCluster) -> dict[str, Any]:
    """From the replicas' last status files, over the whole run (warm-up included).

    ``requests_accepted``: REQUESTs each replica took; a backup takes one only when
    a client retransmitted it to everyone, so theirs count retransmissions.
    ``admission``: times client connections were held back and the most requests
    a core held (``pbft.runtime.admission``); ``views``: the highest view reached.
    """
    statuses = {replica: status for replica, status in cluster.statuses().items() if status}
    admission = [status.get("admission") or {} for status in statuses.values()]
    return {
        "requests_accepted": {
            str(replica): status["counters"]["accepted"].get("REQUEST", 0)
            for replica, status in sorted(statuses.items())
        },
        "admission": {
            "holds": sum(figures.get("holds", 0) for figures in admission),
            "peak_waiting": max(
                (figures.get("peak_waiting", 0) for figures in admission), default=0
            ),
        },
        "views": max((status["view"] for status in statuses.values()), default=0),
    }


def _sample_rss(window: Window, at: float, pids: list[int]) -> None:
    sizes = [size for pid in pids if (size := resident_mb(pid)) is not None]
    if sizes:
        window.rss_mb.append((round(at, 1), round(max(sizes), 1)))


def _executed(cluster: LocalCluster) -> int:
    """Sequence numbers executed so far, by the replica furthest ahead."""
    return max((s["last_executed"] for s in cluster.statuses().values() if s), default=0)


def _rss_line(timeline: list[list[float]]) -> list[str]:
    if not timeline:
        return []
    sizes = [size for _, size in timeline]
    return [
        f"  resident     largest replica {sizes[0]} MB at the start, {sizes[-1]} MB at the "
        f"end, at most {max(sizes)} MB ({len(sizes)} samples)"
    ]


def _admission_line(report: dict[str, Any]) -> list[str]:
    admission = report.get("admission")
    if admission is None:
        return []
    requests = ", ".join(f"{r}: {n}" for r, n in report["requests_accepted"].items())
    return [
        f"  admission    client connections held back {admission['holds']} times, a core held "
        f"at most {admission['peak_waiting']} requests; REQUESTs taken by replica {requests}; "
        f"view {report['views']}"
    ]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def print_report(report: dict[str, Any], out: Any = sys.stdout) -> None:
    latency = report["latency_ms"]
    cpu = report["cpu_ms_per_op"]
    lines = [
        f"pbft bench: n = {report['n']}, {report['clients']} clients, "
        f"auth {report['auth']}, {report['duration_s']:g} s measured",
        f"  throughput   {report['throughput_ops']:,.1f} ops/s ({report['operations']:,} ops, "
        f"{report['timeouts']} timeouts)",
        f"  latency      p50 {latency['p50']} ms, p90 {latency['p90']} ms, p99 {latency['p99']} ms",
        f"  batch        {report['batch_mean']} requests on average (at most "
        f"{report['batch_size']})",
        f"  ceiling      {report['ceiling_ops']:,.1f} ops/s at that batch size on "
        f"{report['cores']} cores; efficiency {report['efficiency']:.0%}",
        f"  CPU per op   replicas {cpu['replicas']} ms, clients {cpu['clients']} ms",
        *_rss_line(report.get("rss_mb_timeline") or []),
        *_admission_line(report),
        "  calibration  " + ", ".join(f"{k} {v}" for k, v in report["calibration_us"].items()),
    ]
    print("\n".join(lines), file=out)
