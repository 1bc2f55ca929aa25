"""The runtime's trace events (pbft.runtime.eventlog), a traitor's marks on its forgeries
(faults.traitors.trace) and the merge of per-process logs into one trace (pbft.trace.merge)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from faults.traitors.base import Traitor, Trigger
from faults.traitors.behaviours import make_behaviour
from faults.traitors.trace import report_forgeries
from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Dropped, Invoke, Receive, SendToReplicas, SetTimer, TimerFired
from pbft.runtime.eventlog import EventLog
from pbft.simnet import make_cluster
from pbft.trace.format import frame_id, read_trace
from pbft.trace.merge import load_trace, merge_folder, merge_logs, write_trace


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def a_request() -> tuple[Any, bytes]:
    """A cluster (f = 1) and a client's signed REQUEST frame for it."""
    cluster = make_cluster(f=1, clients=1, scheme="keyed-hash", params=ProtocolParams())
    effects = cluster.clients[0].step(Invoke(kv.put("colour", "blue"), min_timestamp=1))
    send = next(effect for effect in effects if type(effect) is SendToReplicas)
    return cluster, encode_signed(send.message)


# ------------------------------------------------------------------- eventlog


def test_a_receive_is_accepted_or_rejected_with_the_core_reason() -> None:
    """The primary accepts a client's REQUEST; the same bytes cut short are refused, and the
    receive event carries the reason the core's Dropped gave."""
    cluster, frame = a_request()
    stream = io.StringIO()
    log = EventLog("replica 0", json_lines=True, stream=stream)
    primary = cluster.replicas[0]
    for data in (frame, frame[:-3]):
        log.received(data, ("client", 0), primary.step(Receive(data, channel=("client", 0))))
    accepted, refused = lines_of(stream)
    assert accepted["event"] == refused["event"] == "receive"
    assert accepted["type"] == "REQUEST" and accepted["accepted"] is True
    assert accepted["frame"] == frame_id(frame) and accepted["from"] == "client-0"
    assert len(accepted["digest"]) == 16 and "reason" not in accepted
    assert refused["accepted"] is False and refused["frame"] == frame_id(frame[:-3])
    dropped = primary.counters.snapshot()["dropped"]
    assert [f"{refused['type']}/{refused['reason']}"] == list(dropped)


def test_a_drop_of_a_released_message_is_not_the_frame_s_refusal() -> None:
    """Only the last effect of the frame's step, of the frame's type, refuses the frame."""
    _, frame = a_request()
    stream = io.StringIO()
    log = EventLog("replica 1", json_lines=True, stream=stream)
    other = Dropped("PREPARE", "old-view")
    log.received(frame, ("replica", 0), [other])
    log.received(frame, ("replica", 0), [Dropped("REQUEST", "stale"), SetTimer("view-change", 5)])
    log.received(frame, ("replica", 0), [other, Dropped("REQUEST", "stale")])
    assert [event["accepted"] for event in lines_of(stream)] == [True, True, False]


def test_human_lines_keep_their_words_and_times_are_wall_clock_milliseconds() -> None:
    _, frame = a_request()
    human, trace = io.StringIO(), io.StringIO()
    EventLog("replica 0", verbose=True, stream=human).sent(frame, [("replica", 1)])
    EventLog("replica 0", json_lines=True, stream=trace, origin_ms=0.0).sent(
        frame, [("replica", 1)]
    )
    assert "replica 0: sent type=REQUEST to=[1]" in human.getvalue()
    (event,) = lines_of(trace)
    assert event["event"] == "send" and event["to"] == ["replica-1"]
    assert event["t"] == event["wall_ms"] > 1.6e12  # origin 0: t is the wall clock itself


def test_a_quiet_log_writes_no_per_message_event() -> None:
    stream = io.StringIO()
    log = EventLog("replica 0", stream=stream)
    assert not log.detailed
    log.event("prepared", 0, 1)
    log.event("started", 0, 0)
    assert stream.getvalue().count("\n") == 1 and "started" in stream.getvalue()


# -------------------------------------------------------------- forged frames


def test_an_equivocating_primary_marks_the_frames_it_made_up() -> None:
    """The forged PRE-PREPARE to the targets is marked with its frame id; the honest one to
    the others is not."""
    cluster, frame = a_request()
    stream = io.StringIO()
    log = EventLog("replica 0", json_lines=True, stream=stream)
    trigger = Trigger(targets=frozenset({1, 2}))
    traitor = Traitor(cluster.replicas[0], [make_behaviour("equivocate", trigger)])
    report_forgeries(traitor, log)
    effects = traitor.step(Receive(frame, channel=("client", 0)))
    sends = [e for e in effects if type(e) is SendToReplicas]
    pre_prepares = {e.replicas: e.message for e in sends if e.message.message.TYPE == "PRE-PREPARE"}
    assert set(pre_prepares) == {(1, 2), (3,)}
    marks = [event for event in lines_of(stream) if event["event"] == "fault"]
    assert [(m["fault"], m["behaviour"], m["forged"], m["to"]) for m in marks] == [
        ("traitor", "equivocate", True, ["replica-1", "replica-2"])
    ]
    assert marks[0]["frame"] == frame_id(encode_signed(pre_prepares[(1, 2)]))
    assert marks[0]["digest"] != pre_prepares[(3,)].message.digest.hex()[:16]


def test_a_crashing_traitor_logs_its_crash_and_its_restart_once() -> None:
    cluster, frame = a_request()
    stream = io.StringIO()
    now = [0]
    crash = make_behaviour("crash", Trigger(at_ms=10), restart_ms=50)
    traitor = Traitor(
        cluster.replicas[1], [crash], clock=lambda: now[0], rebuild=lambda: cluster.fresh_replica(1)
    )
    report_forgeries(traitor, EventLog("replica 1", json_lines=True, stream=stream))
    traitor.step(Receive(frame, channel=("client", 0)))  # up: nothing to report
    now[0] = 20
    traitor.step(Receive(frame, channel=("client", 0)))  # down from now on
    traitor.step(Receive(frame, channel=("client", 0)))
    traitor.step(TimerFired(crash.timer_name("restart")))
    faults = [(e["fault"], e["detail"]) for e in lines_of(stream) if e["event"] == "fault"]
    assert faults == [
        ("crash", "replica-1 crashed"),
        ("restart", "replica-1 restarted from its journal"),
    ]


# ---------------------------------------------------------------------- merge


def event(wall_ms: float, node: str, name: str, **fields: Any) -> str:
    return json.dumps({"t": 0, "wall_ms": wall_ms, "node": node, "event": name, **fields})


def write_logs(folder: Path) -> None:
    (folder / "replica-0.log").write_text(
        "\n".join(
            [
                event(1000.5, "replica-0", "started", n=4, f=1, clients=2),
                "Traceback (most recent call last): not an event",
                event(1003.0, "replica-0", "send", type="PREPARE", frame="ab", to=["replica-1"]),
                event(1003.0, "replica-0", "executed", seq=1),
                '{"half a line',
            ]
        )
    )
    (folder / "replica-1.log").write_text(
        event(1000.0, "replica-1", "traitor", behaviours="stall:ms=5")
        + "\n"
        + event(1004.0, "replica-1", "receive", frame="ab", accepted=True)
        + "\n"
    )
    (folder / "client-0.jsonl").write_text(event(1001.0, "client-0", "invoke", op="get") + "\n")


def test_logs_merge_in_wall_clock_order_from_the_earliest_event(tmp_path: Path) -> None:
    write_logs(tmp_path)
    header, events = merge_folder(tmp_path)
    assert [(e["t"], e["node"], e["event"]) for e in events] == [
        (0.0, "replica-1", "traitor"),
        (0.5, "replica-0", "started"),
        (1.0, "client-0", "invoke"),
        (3.0, "replica-0", "send"),  # equal wall clocks keep their log's order
        (3.0, "replica-0", "executed"),
        (4.0, "replica-1", "receive"),
    ]
    assert header["driver"] == "runtime" and header["skipped_lines"] == 2
    assert (header["n"], header["f"], header["replicas"], header["clients"]) == (
        4, 1, [0, 1, 2, 3], [0, 1],
    )  # fmt: skip
    assert header["traitors"] == {"1": "stall:ms=5"}


def test_a_merged_trace_reads_back_and_a_folder_loads_like_a_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_logs(logs)
    header, events = merge_logs(sorted(logs.iterdir()), seed=7, traitors={})
    write_trace(logs / "merged.jsonl", header, events)  # a trace in the folder is no log
    assert load_trace(logs) == merge_folder(logs)
    again_header, again_events = read_trace(logs / "merged.jsonl")
    assert again_header["seed"] == 7 and again_header["traitors"] == {}
    assert again_events == events
    assert load_trace(logs / "merged.jsonl") == (again_header, again_events)


def test_a_folder_without_logs_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.log").write_text("nothing to see\n")
    with pytest.raises(ValueError, match=r"no process logs with trace events") as error:
        load_trace(tmp_path)
    assert "\n" not in str(error.value)


def test_pbft_trace_draws_a_folder_of_process_logs(tmp_path: Path) -> None:
    from pbft.cli import main

    logs = tmp_path / "logs"
    logs.mkdir()
    write_logs(logs)
    assert main(["trace", str(logs)]) == 0
    assert "<svg" in (tmp_path / "logs.html").read_text(encoding="utf-8")
