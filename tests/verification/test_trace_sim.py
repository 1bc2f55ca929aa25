"""The simulator writes the shared trace format (docs/trace.md): deterministic, well formed,
every frame accounted for, traitors' forgeries and the core's refusals marked, and a violation
found by the explorer shown where the executions conflict."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from faults.verification.explore import draw_plan, run_plan
from faults.verification.sim_trace import SimTrace, sim_header
from faults.verification.trace_files import check_trace_path
from pbft import messages
from pbft.cli import main
from pbft.trace.format import EVENT_NAMES, FAULT_KINDS, TraceWriter, read_trace
from tests.verification.mutants import mutant

SCENARIOS = Path(__file__).resolve().parents[2] / "scripts" / "scenarios"
#: Seed 42: n = 7, an equivocating and Byzantine primary, two partitions, loss on the
#: primary's links, a crash and restart, Byzantine client requests.
BUSY_SEED = 42
#: Seed 15 (duplication, delay, loss, a crashing traitor), seed 9 (equivocation, reordering).
OTHER_SEEDS = (15, 9)
MESSAGE_TYPES = {
    cls.TYPE for cls in vars(messages).values() if isinstance(getattr(cls, "TYPE", None), str)
}
NODE = re.compile(r"(replica|client)-\d+")
HEX16 = re.compile(r"[0-9a-f]{16}")
#: A digest is 16 hex characters, or fewer when a traitor sent a shorter one.
DIGEST = re.compile(r"[0-9a-f]{0,16}")


def replay(seed: int, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    status = main(["explore", "--replay", str(seed), "--trace", str(path)])
    output = capsys.readouterr().out
    assert status in (0, 1), output
    return output


def check_event(event: dict[str, Any], header: dict[str, Any]) -> None:
    """One event as docs/trace.md describes it."""
    assert event["event"] in EVENT_NAMES | {"equivocation"}, event
    assert NODE.fullmatch(event["node"]), event
    assert isinstance(event["t"], float) and event["t"] >= 0, event
    name = event["event"]
    if "type" in event:
        assert event["type"] in MESSAGE_TYPES | {"BYTES"}, event
    if "digest" in event:
        assert DIGEST.fullmatch(event["digest"]), event
    if name in ("send", "receive"):
        assert HEX16.fullmatch(event["frame"]), event
    if name == "send":
        assert event["to"] and all(NODE.fullmatch(to) for to in event["to"]), event
    elif name == "receive":
        assert NODE.fullmatch(event["from"]) and isinstance(event["accepted"], bool), event
        assert event["accepted"] == ("reason" not in event), event
    elif name == "fault":
        assert event["fault"] in FAULT_KINDS and event["detail"], event
    elif name == "executed":
        assert isinstance(event["seq"], int) and isinstance(event["requests"], int), event
    elif name == "invoke":
        assert event["op"] in ("put", "get", "delete", "cas", "invalid"), event
    elif name == "view-change-started":
        assert isinstance(event["new_view"], int), event
    if event["node"].startswith("replica-"):
        assert int(event["node"].split("-")[1]) in header["replicas"], event


def test_the_same_seed_writes_a_byte_identical_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.trace", tmp_path / "second.trace"
    replay(BUSY_SEED, first, capsys)
    output = replay(BUSY_SEED, second, capsys)
    assert first.read_bytes() == second.read_bytes()
    assert f"trace written to {second}" in output


def test_tracing_watches_without_changing_the_run() -> None:
    """The run's own fingerprint (trace_hash) is the same with and without a trace."""
    plan = draw_plan(BUSY_SEED)
    untraced = run_plan(plan, BUSY_SEED)
    trace = SimTrace(TraceWriter(_Sink(), sim_header(plan, BUSY_SEED, None)))
    traced = run_plan(plan, BUSY_SEED, trace)
    assert traced.trace_hash == untraced.trace_hash
    assert traced.violations == untraced.violations
    assert trace.writer.events_written > 1000


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_every_line_is_the_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.trace"
    replay(BUSY_SEED, path, capsys)
    header, events = read_trace(path)
    assert header["driver"] == "sim" and header["seed"] == BUSY_SEED and header["n"] == 7
    assert header["plan"]["network"] and header["started"] is None
    assert header["traitors"] == {"0": "byzantine:budget=100,large=0,rate=0.5; "
                                  "equivocate:targets=2+3+4"}  # fmt: skip
    for event in events:
        check_event(event, header)
    times = [event["t"] for event in events]
    assert times == sorted(times), "events are written in time order"
    names = Counter(event["event"] for event in events)
    expected = EVENT_NAMES - {"state-transferred", "violation"}
    assert not expected - set(names), f"no {sorted(expected - set(names))} events"
    assert names["equivocation"], "honest backups caught the equivocating primary"
    faults = {event["fault"] for event in events if event["event"] == "fault"}
    assert {"partition-on", "partition-off", "loss", "crash", "restart", "traitor"} <= faults


def _crash_windows(events: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    windows: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if event["event"] == "fault" and event["fault"] == "crash":
            windows.setdefault(event["node"], []).append((event["t"], float("inf")))
        elif event["event"] == "fault" and event["fault"] == "restart":
            start, _ = windows[event["node"]].pop()
            windows[event["node"]].append((start, event["t"]))
    return windows


@pytest.mark.parametrize("seed", (BUSY_SEED, *OTHER_SEEDS))
def test_a_frame_sent_is_received_unless_the_network_dropped_it(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pair sends and receives by frame id: every receive has its send, and every copy sent
    is received, or lost with a loss fault, or meant for a crashed node."""
    path = tmp_path / "run.trace"
    replay(seed, path, capsys)
    _, events = read_trace(path)
    sent: dict[tuple[str, str, str], float] = {}
    for event in events:
        if event["event"] == "send":
            for receiver in event["to"]:
                sent.setdefault((event["frame"], event["node"], receiver), event["t"])
    received = {(e["frame"], e["from"], e["node"]) for e in events if e["event"] == "receive"}
    lost = {
        (e["frame"], e["node"], e["to"])
        for e in events
        if e["event"] == "fault" and e["fault"] == "loss"
    }
    assert received and received <= set(sent)
    crashed = _crash_windows(events)
    end = events[-1]["t"]
    unexplained = [
        (key, at)
        for key, at in sent.items()
        if key not in received
        and key not in lost
        and key[1] != key[2]  # a replica's message to itself does not cross the network
        and not any(start <= at < stop for start, stop in crashed.get(key[2], []))
        and at < end - 100  # not still in flight when the run stopped
    ]
    assert not unexplained, unexplained[:5]
    assert lost or seed not in (BUSY_SEED, 15)


def test_an_equivocating_primary_has_its_forged_frames_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The traitor's rewritten messages carry a fault event naming the behaviour; the honest
    replicas' frames carry none."""
    path = tmp_path / "equivocate.trace"
    status = main(["scenario", "run", str(SCENARIOS / "equivocating-primary.toml"), "--sim",
                   "--trace", str(path)])  # fmt: skip
    assert status in (0, 1)
    assert f"trace written to {path}" in capsys.readouterr().out
    header, events = read_trace(path)
    traitor = next(iter(header["traitors"]))
    assert header["traitors"][traitor].startswith("equivocate")
    marks = [e for e in events if e["event"] == "fault" and e["fault"] == "traitor"]
    assert marks and all(m["forged"] is True and m["behaviour"] == "equivocate" for m in marks)
    assert {m["node"] for m in marks} == {f"replica-{traitor}"}
    sends = {(e["node"], e["frame"]): e for e in events if e["event"] == "send"}
    forged = [sends[(m["node"], m["frame"])] for m in marks]
    # Equivocation forks PRE-PREPAREs, and also the traitor's PREPAREs, COMMITs, VIEW-CHANGEs.
    assert "PRE-PREPARE" in {send["type"] for send in forged}
    assert {send["type"] for send in forged} <= {"PRE-PREPARE", "PREPARE", "COMMIT", "VIEW-CHANGE"}
    # Two different batches proposed for one (view, seq): the equivocation the picture shows.
    digests: dict[tuple[int, int], set[str]] = {}
    for send in (e for e in sends.values() if e["node"] == f"replica-{traitor}"):
        if send["type"] == "PRE-PREPARE":
            digests.setdefault((send["view"], send["seq"]), set()).add(send["digest"])
    assert any(len(found) > 1 for found in digests.values())


def test_a_refused_frame_is_received_with_accepted_false_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.trace"
    replay(BUSY_SEED, path, capsys)
    _, events = read_trace(path)
    receives = [event for event in events if event["event"] == "receive"]
    refused = Counter(event["reason"] for event in receives if not event["accepted"])
    assert refused["bad-signature"] and refused["stale"]
    assert sum(event["accepted"] for event in receives) > sum(refused.values())


def test_explore_trace_without_replay_is_refused_in_one_line(tmp_path: Path) -> None:
    """A trace is of one run: `pbft explore --trace` (many seeds) used to be accepted and
    ignored."""
    done = subprocess.run(
        [sys.executable, "-m", "pbft", "explore", "--seeds", "1", "--trace", "out.trace"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "--trace needs" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.trace").exists()


#: A protocol that executes once prepared (no COMMIT quorum): seed 21 of the explorer makes
#: two honest replicas execute different batches at seq 8 (seed 2 did, at seq 5, until
#: copies of a request were answered once per period instead of once per copy).
BROKEN = "execute-when-prepared"
BROKEN_SEED = 21
BROKEN_SEQ = 8


def test_a_violation_comes_with_its_replay_picture_and_trace_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mutant(BROKEN).applied():
        status = main(["explore", "--seeds", "1", "--start", str(BROKEN_SEED), "--jobs", "1",
                       "--no-shrink"])  # fmt: skip
        listing = capsys.readouterr().out
        path = tmp_path / "violation.trace"
        replay_status = main(["explore", "--replay", str(BROKEN_SEED), "--trace", str(path)])
    assert status == 1 and replay_status == 1
    command = f"pbft explore --replay {BROKEN_SEED} --trace violation-{BROKEN_SEED}.html"
    assert f"replay: {command}" in listing
    header, events = read_trace(path)
    violations = [event for event in events if event["event"] == "violation"]
    agreement = [v for v in violations if v["checker"] == "agreement"]
    assert agreement and agreement[0]["seqs"] == [BROKEN_SEQ], violations
    assert f"seq {BROKEN_SEQ}" in agreement[0]["detail"]
    assert events[-len(violations) :] == violations, "violations come last, after the run"
    faulty = {f"replica-{replica}" for replica in header["traitors"]}
    executed = {
        event["digest"]
        for event in events
        if event["event"] == "executed"
        and event["seq"] == BROKEN_SEQ
        and event["node"] not in faulty
    }
    assert len(executed) > 1, "the trace shows the conflicting executions themselves"


def test_a_trace_named_html_is_the_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pbft.trace.render", reason="the trace picture is not in this tree")
    path = tmp_path / f"violation-{BROKEN_SEED}.html"
    with mutant(BROKEN).applied():
        status = main(["explore", "--replay", str(BROKEN_SEED), "--trace", str(path)])
    assert status == 1
    assert f"trace picture written to {path}" in capsys.readouterr().out
    page = path.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html") and "<svg" in page


#: Seed 13: replica 0 has a twin (Twins, Bano et al.) on a lossy, partitioned network.
TWIN_SEED = 13


def test_a_twin_writes_on_its_replicas_lane_marked_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "twin.trace"
    replay(TWIN_SEED, path, capsys)
    header, events = read_trace(path)
    assert header["traitors"] == {"0": "twin"}
    twin = [event for event in events if event.get("twin")]
    assert twin and {event["node"] for event in twin} == {"replica-0"}
    assert {"send", "receive"} <= {event["event"] for event in twin}
    sent = {(e["frame"], e["node"]) for e in events if e["event"] == "send"}
    assert all((e["frame"], e["from"]) in sent for e in events if e["event"] == "receive")


def test_a_picture_is_refused_in_one_line_when_the_renderer_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pbft.trace.render", None)  # import now fails
    with pytest.raises(ValueError, match="cannot draw traces yet") as refused:
        check_trace_path(tmp_path / "run.html")
    assert "\n" not in str(refused.value)
    check_trace_path(tmp_path / "run.trace")  # the JSON lines need no renderer
