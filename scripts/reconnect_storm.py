"""Reconnect storm: SIGKILL and restart one replica while ~1,000 clients are connected.

Starts a real cluster of four replica processes on loopback (``pbft init`` with
``--clients N`` into a throw-away folder, :class:`~pbft.runtime.processes.LocalCluster`,
each replica with ``--metrics-port``), then N runtime clients (``RemoteClient``,
one connection to every replica each; the file descriptor limit is raised to
its hard limit). ``--active`` of them run a light workload (puts in a closed
loop) in a process of their own; the idle rest share ``--workers`` processes,
run ``--crowd-nice`` nicer than the replicas since they stand in for other
machines. Once every client is connected to every replica and the workload
runs, after ``--before`` seconds one replica (``--replica``) is SIGKILLed, and
restarted ``--down`` seconds later. Every client that was connected to it now
dials it again: the storm.

Measured, every ``--interval`` seconds:

* connections the restarted replica accepted (``pbft_connections_accepted_total``),
  handshakes it refused as busy and the clients connected to it (its metrics);
* the clients' dial attempts to it (refused ones too, while it is down) and the
  moment each client's connection to it is back (the workers, every 10 ms);
* the operations completed (throughput).

Reported: the peak accepts/s at the restarted replica, how the reconnections
spread over time, the time until every client is connected to it again, and
the time until throughput is back to 90% of its median before the kill.

    python scripts/reconnect_storm.py [--clients 1000] [--json] [--plot docs/reconnect-storm.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbft.runtime.descriptors import raise_open_files_limit
from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster
from scripts.reconnect_storm_report import analyse, describe, plot


@dataclass
class Settings:
    clients: int = 1000
    workers: int = 2
    active: int = 20
    think: float = 0.01
    replica: int = 3
    before: float = 8.0
    down: float = 3.0
    after: float = 15.0
    interval: float = 0.1
    #: The clients' reconnection backoff cap, in seconds (RemoteClient's reconnect_cap_seconds).
    client_cap: float = 2.0
    #: The idle clients' processes run this much nicer than the replicas (0: as nice).
    crowd_nice: int = 10
    op_timeout: float = 5.0
    #: Keep the cluster folder and the replicas' logs here ("": a temporary folder).
    keep: str = ""
    quiet: bool = False


# ------------------------------------------------------------------------- workers


async def _worker(directory: Path, first: int, count: int, active: int, settings: Settings) -> None:
    import trio

    from pbft import service as kv
    from pbft.runtime.client import NoQuorum, RemoteClient
    from pbft.runtime.files import load_cluster

    raise_open_files_limit()
    if not active:  # the idle crowd stands in for other machines: not the replicas' CPU
        os.nice(settings.crowd_nice)
    files = load_cluster(directory)
    cap = settings.client_cap
    clients = [
        RemoteClient(files, c, reconnect_cap_seconds=cap) for c in range(first, first + count)
    ]
    victim = settings.replica
    counts = {"completed": 0, "failed": 0}
    back: list[float] = []  # wall times at which a connection to the victim came back

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    async def closed_loop(client: RemoteClient) -> None:
        i = 0
        while True:
            i += 1
            try:
                await client.execute(kv.put(f"k{client.id}", f"v{i}"), settings.op_timeout)
                counts["completed"] += 1
            except NoQuorum:
                counts["failed"] += 1
            await trio.sleep(settings.think)

    async def watch_victim() -> None:
        was = [c.connections[victim].connected for c in clients]
        while True:
            await trio.sleep(0.01)
            for i, client in enumerate(clients):
                now = client.connections[victim].connected
                if now and not was[i]:
                    back.append(time.time())
                was[i] = now

    async with trio.open_nursery() as nursery:
        for client in clients:  # staggered: the start-up is not the storm we measure
            await nursery.start(client.run)
            await trio.sleep(0.002)
        with trio.fail_after(300):
            for client in clients:
                await client.wait_connected(timeout=300)
        emit({"ready": True})
        for client in clients[:active]:
            nursery.start_soon(closed_loop, client)
        nursery.start_soon(watch_victim)
        while True:
            await trio.sleep(settings.interval)
            connections = [c.connections[victim] for c in clients]
            emit({
                "t": time.time(), **counts, "back": back[:],
                "dials": sum(c.dials for c in connections),
                "connected": sum(c.connected for c in connections),
            })  # fmt: skip
            back.clear()


class Worker:
    """One worker process and the latest figures it reported."""

    def __init__(self, directory: Path, first: int, count: int, active: int, settings: Settings):
        command = [
            sys.executable, __file__, "--worker", str(directory), "--first", str(first),
            "--count", str(count), "--active", str(active), "--replica", str(settings.replica),
            "--interval", str(settings.interval), "--think", str(settings.think),
            "--op-timeout", str(settings.op_timeout), "--client-cap", str(settings.client_cap),
            "--crowd-nice", str(settings.crowd_nice),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.latest: dict[str, Any] = {"completed": 0, "failed": 0, "dials": 0, "connected": 0}
        self.back: list[float] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line)
            if record.get("ready"):
                self.ready.set()
                continue
            with self._lock:
                self.latest = record
                self.back.extend(record["back"])

    def figures(self) -> tuple[dict[str, Any], list[float]]:
        with self._lock:
            back, self.back = self.back, []
            return dict(self.latest), back

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------------- measuring


def scrape(port: int) -> dict[str, float] | None:
    """The victim's counters of interest, or None while it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "pbft_connections_accepted_total": "accepted",
        "pbft_clients_connected": "clients",
        "pbft_handshakes_in_progress": "in_progress",
    }
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    figures = {"busy": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                figures[wanted[sample.name]] = sample.value
            elif sample.name == "pbft_handshake_failures_total" and sample.labels == {
                "direction": "accepted", "reason": "busy"
            }:  # fmt: skip
                figures["busy"] = sample.value
    return figures if "accepted" in figures else None


def run_storm(settings: Settings) -> dict[str, Any]:
    """Run the whole experiment; the summary, with the time series for the plot."""
    limit = raise_open_files_limit()
    needed = 4 * settings.clients // settings.workers + 256
    if limit < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}; {needed} needed per worker process")
    say = (lambda line: None) if settings.quiet else (lambda line: print(line, file=sys.stderr))
    # The replica processes run this checkout's pbft, wherever the script is started from.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    # A restarted replica should not spend its first seconds compiling its modules again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="pbft-storm-") as temporary:
        directory = Path(settings.keep or temporary)
        files = init_cluster(directory / "c", f=1, clients=settings.clients,
                             ports=free_loopback_ports(4))  # fmt: skip
        metrics_ports = free_loopback_ports(4)
        cluster = LocalCluster(
            files, directory / "data",
            replica_args={i: ["--metrics-port", str(port)] for i, port in enumerate(metrics_ports)},
        )  # fmt: skip
        cluster.start()
        workers: list[Worker] = []
        try:
            if not cluster.wait_connected(60):
                raise SystemExit(f"the replicas did not connect: {cluster.statuses()}")
            # The workload's clients get a process of their own, so that the crowd's
            # dialing does not starve them; the idle crowd is shared among the rest.
            active = min(settings.active, settings.clients)
            workers.append(Worker(files.directory, 0, active, active, settings))
            crowd = settings.clients - active
            for w in range(settings.workers):
                first = active + w * (crowd // settings.workers)
                last = (
                    settings.clients
                    if w == settings.workers - 1
                    else first + crowd // settings.workers
                )
                workers.append(Worker(files.directory, first, last - first, 0, settings))
            say(f"{settings.clients} clients connecting in {len(workers)} processes ...")
            for worker in workers:
                if not worker.ready.wait(360):
                    raise SystemExit("the clients did not all connect in time")
            for worker in workers:  # the first report of each: counts start from there
                while not worker.figures()[0].get("t"):
                    time.sleep(settings.interval)
            say("all connected; workload running")
            return _measure(cluster, workers, metrics_ports[settings.replica], settings, say)
        finally:
            for worker in workers:
                worker.stop()
            cluster.stop()


def _measure(cluster: LocalCluster, workers: list[Worker], port: int, settings: Settings,
             say: Any) -> dict[str, Any]:  # fmt: skip
    victim = cluster.processes[settings.replica]
    samples: list[dict[str, Any]] = []
    back: list[float] = []
    start = time.time()
    t_kill = start + settings.before
    t_restart = t_kill + settings.down
    end = t_restart + settings.after
    killed = restarted = False
    while (now := time.time()) < end:
        if not killed and now >= t_kill:
            victim.kill()
            t_kill, killed = time.time(), True
            say(f"SIGKILLed replica {settings.replica}")
        if killed and not restarted and now >= t_restart:
            victim.start()
            t_restart, restarted = time.time(), True
            say(f"restarted replica {settings.replica}")
        totals = {"completed": 0, "failed": 0, "dials": 0, "connected": 0}
        for worker in workers:
            latest, came_back = worker.figures()
            back += came_back
            for key in totals:
                totals[key] += latest.get(key, 0)
        metrics = scrape(port) if victim.running else None
        samples.append({"t": time.time(), **totals, "metrics": metrics})
        time.sleep(max(0.0, settings.interval - (time.time() - now)))
    return analyse(samples, [t for t in back if t >= t_kill], t_kill, t_restart, settings)


HELP = {
    "clients": "clients connected to every replica",
    "workers": "processes the idle clients share",
    "active": "clients of those running a closed-loop workload",
    "think": "seconds an active client waits between operations",
    "replica": "the replica to SIGKILL and restart",
    "before": "seconds of workload before the kill",
    "down": "seconds the replica stays down",
    "after": "seconds measured after the restart",
    "interval": "seconds between samples",
    "client_cap": "the clients' reconnection backoff cap in seconds",
    "crowd_nice": "how much nicer than the replicas the idle clients run",
    "op_timeout": "seconds before an operation counts as failed",
    "keep": "keep the cluster folder and logs here",
}


def settings_problem(settings: Settings) -> str | None:
    """Why these settings cannot run, in one line, or None."""
    if settings.clients < 1 or not 0 <= settings.active <= settings.clients:
        return "--clients must be at least 1 and --active between 0 and --clients"
    if settings.workers < 1:
        return "--workers must be at least 1"
    if not 0 <= settings.replica <= 3:
        return f"--replica {settings.replica}: the cluster's replicas are 0 to 3"
    for name in ("think", "before", "down", "after", "interval", "client_cap", "op_timeout"):
        if getattr(settings, name) < 0 or (name != "think" and getattr(settings, name) == 0):
            return f"--{name.replace('_', '-')} must be positive"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Settings()
    for name, value in asdict(defaults).items():
        if name != "quiet":
            parser.add_argument(
                f"--{name.replace('_', '-')}", type=type(value), default=value,
                help=f"{HELP[name]} (default: %(default)s)",
            )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in asdict(defaults)})
    problem = settings_problem(settings)
    if problem is not None:
        parser.error(problem)
    if args.worker is not None:
        import trio

        trio.run(_worker, args.worker, args.first, args.count, args.active, settings)
        return 0
    summary = run_storm(settings)
    if args.plot is not None:
        plot(summary, args.plot)
    if args.json:
        print(json.dumps(summary))
    else:
        print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
