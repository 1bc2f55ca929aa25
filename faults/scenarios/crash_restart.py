"""Crash-restart under load, the run: real replica processes, clients, a fault loop.

See ``scripts/crash_restart.py`` for what the run does and checks. This module
starts the cluster, runs the workload and the faults, and reads the store and the
replicas' executed histories back; :mod:`faults.scenarios.crash_restart_report` judges them.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from faults.verification.linearizability import Operation
from pbft import service as kv
from pbft.runtime.client import NoQuorum, RemoteClient
from pbft.runtime.files import free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster
from pbft.runtime.storage import read_history

PROTOCOL = {"view_change_timeout_ticks": 1000, "checkpoint_interval": 16, "log_window": 32}
#: When the all-at-once crash comes, as a fraction of the run.
ALL_AT_ONCE_AT = 0.65
MIX = (("put", 4), ("get", 4), ("cas", 2))


@attrs.define
class Settings:
    f: int = 1
    clients: int = 4
    duration: float = 60.0
    seed: int = 1
    keys: int = 6
    #: Seconds a client waits for an operation before it counts as unknown.
    op_timeout: float = 6.0
    history_path: Path | None = None
    quiet: bool = False
    #: Kill again without waiting for the replicas restarted last to recover: more than f
    #: replicas may then be behind at once (a test of safety; liveness waits for them).
    aggressive: bool = False
    #: Run in this folder and keep it (cluster, replica logs and databases), not a temporary one.
    keep: Path | None = None


@attrs.define
class Run:
    """What the workload and the fault loop record as they go."""

    started: float = attrs.field(factory=time.monotonic)
    history: list[Operation] = attrs.Factory(list)
    kills: int = 0
    restarts: int = 0
    all_at_once: int = 0
    #: Milliseconds since the start at which every replica was killed (None: not yet).
    all_at_once_ms: float | None = None
    faults: list[dict[str, Any]] = attrs.Factory(list)
    unexpected_exits: list[str] = attrs.Factory(list)
    #: Replicas killed on purpose and not restarted yet; processes whose exit is noted.
    down: set[int] = attrs.Factory(set)
    noted: list[Any] = attrs.Factory(list)
    #: Each replica's view and state at the end (:func:`replica_views`).
    end_states: str = ""

    def now_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 3)

    def fault(self, kind: str, replicas: list[int]) -> None:
        self.faults.append({"at_ms": self.now_ms(), "kind": kind, "replicas": replicas})

    def acknowledged(self) -> int:
        return sum(op.returned for op in self.history)


def operation(
    rng: random.Random, client: int, number: int, keys: int, seen: dict[str, Any]
) -> tuple[str, str, Any, bytes]:
    """One random operation: (name, key, value as the checker wants it, encoded)."""
    name = rng.choices([n for n, _ in MIX], [w for _, w in MIX])[0]
    key = f"key-{rng.randrange(keys)}"
    value = f"c{client}-{number}"  # unique per write: a value names its write
    if name == "put":
        return name, key, value, kv.put(key, value)
    if name == "get":
        return name, key, None, kv.get(key)
    expected = seen.get(key)
    return name, key, (expected, value), kv.cas(key, expected, value)


async def client_loop(
    client: RemoteClient, run: Run, settings: Settings, stop: trio.Event, rng: random.Random
) -> None:
    """Closed loop: one operation at a time until ``stop``; each recorded in ``run.history``."""
    seen: dict[str, Any] = {}
    number = 0
    while not stop.is_set():
        name, key, value, encoded = operation(rng, client.id, number, settings.keys, seen)
        number += 1
        invoked = run.now_ms()
        try:
            result: Any = kv.decode_result(await client.execute(encoded, settings.op_timeout))
        except NoQuorum:
            run.history.append(Operation(client.id, name, key, value, invoked, None, None))
            continue
        run.history.append(Operation(client.id, name, key, value, invoked, run.now_ms(), result))
        if name == "get":
            seen[key] = result
        elif name == "put" or result is True:
            seen[key] = value if name == "put" else value[1]


async def kill(cluster: LocalCluster, replicas: list[int]) -> None:
    """SIGKILL, and wait until the processes are gone (without blocking the loop)."""
    for replica in replicas:
        cluster.processes[replica].signal(signal.SIGKILL)
    while any(cluster.processes[r].running for r in replicas):
        await trio.sleep(0.02)


def start(cluster: LocalCluster, replicas: list[int]) -> None:
    # In the main thread: a replica's PR_SET_PDEATHSIG fires when the *thread* that
    # started it exits, and Trio's worker threads exit when idle.
    for replica in replicas:
        cluster.processes[replica].start()


def healthy(cluster: LocalCluster) -> bool:
    """Every replica running, in the normal state and connected to every other one."""
    everyone = set(cluster.processes)
    for replica, status in cluster.statuses().items():
        if not cluster.processes[replica].running or status is None:
            return False
        if status["status"] != "normal" or set(status["peers_connected"]) | {replica} != everyone:
            return False
    return True


def check_exits(cluster: LocalCluster, run: Run) -> None:
    """Note each replica that exited without being killed (once per process started)."""
    for replica, process in cluster.processes.items():
        if replica in run.down or process.running or process.popen in run.noted:
            continue
        run.noted.append(process.popen)
        tail = process.log_path.read_text(errors="replace").strip().splitlines()[-2:]
        run.unexpected_exits.append(
            f"replica {replica} exited at {run.now_ms() / 1000:.1f} s: {' | '.join(tail)}"
        )


async def watch_exits(cluster: LocalCluster, run: Run) -> None:
    while True:
        check_exits(cluster, run)
        await trio.sleep(0.5)


async def fault_loop(cluster: LocalCluster, run: Run, settings: Settings, rng: random.Random):
    """Kill and restart up to f replicas at random; then all of them at once."""
    ids = sorted(cluster.processes)
    all_at = settings.duration * ALL_AT_ONCE_AT
    elapsed = lambda: time.monotonic() - run.started  # noqa: E731
    while True:
        with trio.move_on_after(0 if settings.aggressive else 15):
            while not healthy(cluster):
                await trio.sleep(0.1)
        await trio.sleep(rng.uniform(0.5, 2.5))
        hold = rng.uniform(0.3, 3.0)
        if elapsed() + hold + 1 >= all_at:
            break
        victims = sorted(rng.sample(ids, rng.randint(1, settings.f)))
        run.down.update(victims)
        await kill(cluster, victims)
        run.kills += len(victims)
        run.fault("kill", victims)
        await trio.sleep(hold)
        start(cluster, victims)
        run.down.clear()
        run.restarts += len(victims)
        run.fault("restart", victims)
    await trio.sleep(max(0.0, all_at - elapsed()))
    run.down.update(ids)
    await kill(cluster, ids)
    run.all_at_once_ms = run.now_ms()
    run.kills += len(ids)
    run.fault("kill-all", ids)
    await trio.sleep(rng.uniform(0.3, 1.5))
    cluster.start()  # every replica; the cluster's lock is still ours
    run.down.clear()
    run.restarts += len(ids)
    run.all_at_once += 1
    run.fault("restart-all", ids)


async def progress(run: Run, cluster: LocalCluster, settings: Settings) -> None:
    while True:
        await trio.sleep(3)
        views = replica_views(cluster)
        unknown = len(run.history) - run.acknowledged()
        print(
            f"[{run.now_ms() / 1000:5.1f}/{settings.duration:g} s] ops {len(run.history)}, "
            f"acknowledged {run.acknowledged()}, unknown {unknown}; kills {run.kills}, "
            f"restarts {run.restarts}, all-at-once {run.all_at_once}; replicas {views}",
            file=sys.stderr,
            flush=True,
        )


def replica_views(cluster: LocalCluster) -> str:
    """Each replica's view and state in a few letters: ``0:v1n`` (view 1, normal), ``3:-``."""
    marks = {"normal": "n", "view-change": "vc", "state-transfer": "st"}
    return " ".join(
        f"{r}:v{s['view']}{marks.get(s['status'], s['status'])}"
        if s and cluster.processes[r].running
        else f"{r}:-"
        for r, s in sorted(cluster.statuses().items())
    )


async def final_reads(files: Any, client_id: int, run: Run, keys: int) -> dict[str, Any]:
    """Read every key once more, recording the reads in the history too."""
    final: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        reader = RemoteClient(files, client_id, retransmit_ticks=300)
        await nursery.start(reader.run)
        failures = 0
        for key in (f"key-{k}" for k in range(keys)):
            for _attempt in range(3):
                if failures >= 3:  # three in a row: the cluster does not answer
                    break
                invoked = run.now_ms()
                try:
                    result = kv.decode_result(await reader.execute(kv.get(key), 15))
                except NoQuorum:
                    run.history.append(Operation(client_id, "get", key, None, invoked, None, None))
                    failures += 1
                    continue
                run.history.append(
                    Operation(client_id, "get", key, None, invoked, run.now_ms(), result)
                )
                final[key] = result
                failures = 0
                break
        nursery.cancel_scope.cancel()
    return final


def run_crash_restart(settings: Settings) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if settings.keep is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pbft-crash-")))
        else:
            directory = settings.keep
            directory.mkdir(parents=True, exist_ok=True)
        n = 3 * settings.f + 1
        files = init_cluster(
            directory / "cluster", f=settings.f, clients=settings.clients + 1,
            ports=free_loopback_ports(n), protocol=PROTOCOL,
        )  # fmt: skip
        cluster = LocalCluster(files, directory / "data")
        cluster.start()
        try:
            if not cluster.wait_connected(timeout=60):
                raise RuntimeError(f"the replicas did not connect: {cluster.statuses()}")
            run = Run()
            final = trio.run(_main, cluster, run, settings)
            converged = cluster.wait_until(
                lambda s: all(s.values()) and len({v["last_executed"] for v in s.values()}) == 1,
                timeout=15,
            )
            check_exits(cluster, run)
            run.end_states = replica_views(cluster)
        finally:
            cluster.stop()
        histories = {
            replica: read_history(process.data_dir / "replica.db")
            for replica, process in cluster.processes.items()
        }
    from faults.scenarios.crash_restart_report import verdict

    return verdict(settings, run, final, histories, converged)


async def _main(cluster: LocalCluster, run: Run, settings: Settings) -> dict[str, Any]:
    rng = random.Random(settings.seed)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        clients = [
            RemoteClient(cluster.files, c, retransmit_ticks=300) for c in range(settings.clients)
        ]
        for client in clients:
            await nursery.start(client.run)
        for client in clients:
            await client.wait_connected(timeout=30)
        run.started = time.monotonic()
        nursery.start_soon(watch_exits, cluster, run)
        if not settings.quiet:
            nursery.start_soon(progress, run, cluster, settings)
        async with trio.open_nursery() as work:
            for client in clients:
                work.start_soon(
                    client_loop, client, run, settings, stop, random.Random(rng.random())
                )
            faults = random.Random(rng.random())
            work.start_soon(fault_loop, cluster, run, settings, faults)
            await trio.sleep(settings.duration)
            stop.set()  # clients finish the operation in hand (at most op_timeout)
        await trio.to_thread.run_sync(
            lambda: cluster.wait_until(lambda s: all(s.values()), timeout=15)
        )
        final = await final_reads(cluster.files, settings.clients, run, settings.keys)
        nursery.cancel_scope.cancel()
    return final
