"""A real cluster's trace: `pbft demo --trace` and a scenario on real Trio nodes, merged from
per-process logs into one trace in the format of docs/trace.md."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pbft.trace.format import read_trace

SCENARIOS = Path(__file__).parents[2] / "scripts" / "scenarios"
#: The phases of the normal case, each sent frame of which must reach its receivers.
ORDERING = ("REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT")

Events = list[dict[str, Any]]


def pbft(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=timeout
    )


def receivers_by_frame(events: Events) -> dict[str, set[str]]:
    received: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event["event"] == "receive":
            received[event["frame"]].add(event["node"])
    return received


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Events]:
    """One honest demo run of 20 requests from 2 clients, traced."""
    folder = tmp_path_factory.mktemp("demo")
    result = pbft(
        "demo", "--requests", "20", "--clients", "2", "--json", "--trace", str(folder / "out.html")
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trace"] == [
        f"trace: {folder / 'out.jsonl'} ({summary['trace'][0].split('(')[1]}",
        f"picture: {folder / 'out.html'}",
    ]
    header, events = read_trace(folder / "out.jsonl")  # every line parses, or ValueError
    return folder, header, events


def test_the_demo_writes_a_runtime_trace_and_its_picture(demo: tuple[Path, Any, Events]) -> None:
    folder, header, _ = demo
    assert header["driver"] == "runtime" and header["time_unit"] == "ms"
    assert (header["n"], header["f"], header["replicas"], header["clients"]) == (
        4, 1, [0, 1, 2, 3], [0, 1],
    )  # fmt: skip
    assert header["traitors"] == {} and header["skipped_lines"] == 0
    assert header["plan"] == {"command": "demo", "f": 1, "clients": 2, "requests": 20}
    page = (folder / "out.html").read_text(encoding="utf-8")
    assert len(page) > 1000 and "<svg" in page
    # The clients' operations and the linearizability verdict, drawn under the diagram as
    # `pbft trace` and the simulator draw them (the demo once left the picture out).
    assert (
        "Linearizability" in page and "linearizable</b>" in page and "not linearizable" not in page
    )


def test_every_replica_and_client_has_events_in_time_order(demo: tuple[Path, Any, Events]) -> None:
    _, _, events = demo
    nodes = {event["node"] for event in events}
    assert nodes == {"replica-0", "replica-1", "replica-2", "replica-3", "client-0", "client-1"}
    times = [event["t"] for event in events]
    assert times[0] == 0 and times == sorted(times)
    for node in nodes:
        kinds = {event["event"] for event in events if event["node"] == node}
        assert {"send", "receive"} <= kinds, node
        if node.startswith("replica-"):
            assert {"started", "prepared", "committed", "executed", "stopped"} <= kinds, node


def test_each_ordering_send_is_received_by_every_receiver(demo: tuple[Path, Any, Events]) -> None:
    """REQUEST, PRE-PREPARE, PREPARE and COMMIT frames pair with their receives by frame id, at
    each receiver the send names, and no receive comes before its send (one host, one clock).

    A link is one TCP connection, in order: every frame a sender sent a receiver before the last
    one that arrived must have arrived too. Only a tail may be missing, frames still in flight
    when the demo stopped the receiver (it had executed everything with 2f+1 COMMITs without
    waiting for the last one; seen once in CI).
    """
    _, _, events = demo
    received = receivers_by_frame(events)
    sent_at = {}
    sends = [event for event in events if event["event"] == "send"]
    assert {event["type"] for event in sends} >= {*ORDERING, "REPLY"}
    arrived_in_order: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for send in sends:
        sent_at.setdefault(send["frame"], send["t"])
        if send["type"] in ORDERING:
            for receiver in send["to"]:
                arrived = receiver in received[send["frame"]]
                arrived_in_order[send["node"], receiver].append(arrived)
    for link, arrivals in arrived_in_order.items():
        delivered = arrivals.index(False) if False in arrivals else len(arrivals)
        assert not any(arrivals[delivered:]), (link, arrivals)  # no gap, only a lost tail
        assert len(arrivals) - delivered <= 3, (link, arrivals)  # in flight at the stop
    for event in events:
        if event["event"] == "receive":
            assert event["t"] >= sent_at[event["frame"]], event
    pre_prepares = [event for event in sends if event["type"] == "PRE-PREPARE"]
    assert all({"view", "seq", "digest"} <= set(event) for event in pre_prepares)


def test_refused_frames_carry_the_core_reason(demo: tuple[Path, Any, Events]) -> None:
    """A client takes the first f+1 matching REPLYs; the later ones are refused as stale."""
    _, _, events = demo
    receives = [event for event in events if event["event"] == "receive"]
    refused = [event for event in receives if event["accepted"] is False]
    assert refused and all(
        isinstance(event["reason"], str) and event["reason"] for event in refused
    )
    assert all("reason" not in event for event in receives if event["accepted"] is True)
    assert ("REPLY", "stale") in {(event["type"], event["reason"]) for event in refused}


def test_each_operation_is_invoked_then_completed(demo: tuple[Path, Any, Events]) -> None:
    _, _, events = demo
    invoked = {(e["node"], e["timestamp"]): e for e in events if e["event"] == "invoke"}
    completed = {(e["node"], e["timestamp"]): e for e in events if e["event"] == "complete"}
    assert len(invoked) == 20 and set(completed) == set(invoked)
    for key, invoke in invoked.items():
        assert invoke["op"] == "put" and invoke["key"].startswith("key-")
        assert completed[key]["result"] is True and completed[key]["t"] > invoke["t"]


def test_an_equivocating_primary_s_forged_frames_are_marked(tmp_path: Path) -> None:
    """Replica 0 shows replicas 1 and 2 one PRE-PREPARE and replica 3 another: the trace marks
    the forged frame (a send of replica 0, received by 1 and 2) and the honest one differs."""
    result = pbft(
        "demo", "--requests", "4", "--clients", "1", "--json",
        "--traitor", "0:equivocate:targets=1+2", "--trace", str(tmp_path / "eq.jsonl"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "eq.html").exists()  # a .jsonl target: the trace alone
    header, events = read_trace(tmp_path / "eq.jsonl")
    assert header["traitors"] == {"0": "equivocate:targets=1+2"}
    marks = [event for event in events if event["event"] == "fault"]
    assert marks and all(
        (m["fault"], m["behaviour"], m["forged"], m["node"])
        == ("traitor", "equivocate", True, "replica-0")
        for m in marks
    )
    sends = {event["frame"]: event for event in events if event["event"] == "send"}
    received = receivers_by_frame(events)
    forged = sends[marks[0]["frame"]]
    assert forged["node"] == "replica-0" and forged["type"] == "PRE-PREPARE"
    assert set(forged["to"]) == {"replica-1", "replica-2"} <= received[forged["frame"]]
    honest = [
        send for send in sends.values()
        if send["node"] == "replica-0" and send["type"] == "PRE-PREPARE"
        and (send["view"], send["seq"]) == (forged["view"], forged["seq"])
        and send["frame"] not in {m["frame"] for m in marks}
    ]  # fmt: skip
    assert honest and all(send["digest"] != forged["digest"] for send in honest)
    assert all("replica-3" in send["to"] for send in honest)


def test_a_scenario_on_real_nodes_traces_partitions_and_traitors(tmp_path: Path) -> None:
    """`pbft scenario run FILE --trace OUT.html` on real Trio nodes: the partition's start and
    end on every replica's lane, the frames it cut as losses after its start, the crashed
    traitor in the header and its crash on its lane, and the picture beside the trace."""
    scenario = SCENARIOS / "crashed-replicas-healing-partition.toml"
    result = pbft("scenario", "run", str(scenario), "--json", "--trace", str(tmp_path / "run.html"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["trace"].startswith(f"trace: {tmp_path / 'run.jsonl'} (")
    page = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert len(page) > 1000 and "Linearizability" in page  # the verdict's picture too
    header, events = read_trace(tmp_path / "run.jsonl")
    assert header["traitors"] == {"3": "crash"} and header["seed"] == report["seed"]
    faults = [event for event in events if event["event"] == "fault"]
    for kind in ("partition-on", "partition-off"):
        lanes = {event["node"] for event in faults if event["fault"] == kind}
        assert lanes == {f"replica-{i}" for i in range(4)}, kind
    cuts = [event for event in faults if event.get("detail") == "cut by a partition"]
    assert cuts and all(event["fault"] == "loss" for event in cuts)
    # The partition's start is stamped at the instant the nodes began to apply it.
    on = min(event["t"] for event in faults if event["fault"] == "partition-on")
    assert all(event["t"] >= on for event in cuts)
    assert {event["node"] for event in events} >= {"client-0", "client-1"}
    crashes = [event for event in faults if event["fault"] == "crash"]
    assert [event["node"] for event in crashes] == ["replica-3"]  # down for good: no restart
    assert not [event for event in faults if event["fault"] == "restart"]
