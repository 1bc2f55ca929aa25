"""The trace picture (``pbft trace``): the page's SVG, read back with an XML parser, shows
one lane per node, one arrow per delivered message, the equivocation, the rejections, the
bands and the violations, and the command's errors are one line each."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from faults.verification.linearizability import Operation
from faults.verification.linearizability_picture import (
    failing_window,
    history_from_trace,
    linearization,
    picture,
)
from pbft.cli import main
from pbft.trace.format import TraceWriter, make_header
from pbft.trace.page_assets import SCRIPT
from pbft.trace.render import render_html

SVG = "{http://www.w3.org/2000/svg}"
REPLICAS = [f"replica-{i}" for i in range(4)]


class Trace:
    """A hand-written trace: an equivocating primary of view 0, a view change to view 1."""

    def __init__(self) -> None:
        self.header = make_header(
            driver="sim", n=4, f=1, clients=[0], replicas=[0, 1, 2, 3],
            traitors={0: "equivocate:targets=1+2"}, seed=1,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.frames = 0

    def add(self, t: float, node: str, event: str, **fields: Any) -> None:
        self.events.append({"t": t, "node": node, "event": event, **fields})

    def send(self, t: float, node: str, type: str, to: list[str], **fields: Any) -> str:
        self.frames += 1
        frame = f"{self.frames:016x}"
        self.add(t, node, "send", type=type, frame=frame, to=to, **fields)
        return frame

    def receive(self, t: float, node: str, frame: str, sender: str, **fields: Any) -> None:
        send = next(e for e in self.events if e.get("frame") == frame and e["event"] == "send")
        accepted = "reason" not in fields
        copied = {k: send[k] for k in ("type", "view", "seq", "digest") if k in send}
        self.add(t, node, "receive", frame=frame, accepted=accepted, **copied, **fields)
        self.events[-1]["from"] = sender


def equivocation() -> Trace:
    trace = Trace()
    trace.add(0, "client-0", "invoke", op="put", key="k", value="v", timestamp=1)
    request = trace.send(0, "client-0", "REQUEST", ["replica-0"], digest="r1", client=0)
    trace.events[-1]["timestamp"] = 1
    trace.receive(1, "replica-0", request, "client-0")
    # The traitor shows replicas 1 and 2 one batch and replica 3 another, for (0, 1).
    a = trace.send(1, "replica-0", "PRE-PREPARE", REPLICAS[1:3], view=0, seq=1, digest="b1")
    trace.events[-1]["requests"] = ["r1"]
    b = trace.send(1, "replica-0", "PRE-PREPARE", ["replica-3"], view=0, seq=1, digest="b2")
    trace.add(1, "replica-0", "fault", fault="traitor", behaviour="equivocate", forged=True,
              frame=b, detail="PRE-PREPARE made up")  # fmt: skip
    trace.receive(2, "replica-1", a, "replica-0")
    trace.receive(2, "replica-2", a, "replica-0")
    trace.receive(2, "replica-3", b, "replica-0")
    prepare = trace.send(2, "replica-3", "PREPARE", REPLICAS[:3], view=0, seq=1, digest="b2")
    trace.receive(3, "replica-1", prepare, "replica-3", reason="digest-mismatch")
    trace.receive(3, "replica-2", prepare, "replica-3", reason="digest-mismatch")
    # replica-0 never receives it: lost on the way (a stub).
    for index, node in enumerate(REPLICAS[1:], start=1):
        trace.add(500, node, "view-change-started", new_view=1)
        others = [r for r in REPLICAS if r != node]
        frame = trace.send(500, node, "VIEW-CHANGE", others, view=1)
        for other in others:
            trace.receive(501 + index / 10, other, frame, node)
    new_view = trace.send(502, "replica-1", "NEW-VIEW", ["replica-0", *REPLICAS[2:]], view=1)
    trace.receive(503, "replica-0", new_view, "replica-1")
    trace.receive(503, "replica-2", new_view, "replica-1")
    for node in REPLICAS[1:]:
        trace.add(503, node, "view-change-completed", view=1)
        trace.add(504, node, "executed", view=1, seq=1, digest="b1", requests=1)
        trace.add(505, node, "checkpoint-stable", seq=1, digest="s1")
        reply = trace.send(504, node, "REPLY", ["client-0"], view=1, client=0, timestamp=1)
        trace.receive(505, "client-0", reply, node)
    trace.add(505, "client-0", "complete", op="put", key="k", result=True, timestamp=1)
    return trace


def svgs(page: str) -> dict[str, ET.Element]:
    """Each inline <svg> of the page, parsed as XML, by id."""
    found = re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)
    parsed = [ET.fromstring(text) for text in found]
    return {svg.get("id", f"svg-{index}"): svg for index, svg in enumerate(parsed)}


def classes(element: ET.Element) -> set[str]:
    return set((element.get("class") or "").split())


def arrows(chart: ET.Element, kind: str | None = None) -> list[ET.Element]:
    lines = [e for e in chart.iter(f"{SVG}line") if "m" in classes(e)]
    return [e for e in lines if kind is None or kind in classes(e)]


def tips(page: str) -> dict[str, Any]:
    """The tooltips: {"names": [...], "items": [text, or an arrow's compact list]}."""
    text = re.search(r'<script type="application/json" id="tips">(.*?)</script>', page, re.S)
    assert text is not None
    return json.loads(text.group(1))


def arrow_tip(page: str, arrow: ET.Element) -> dict[str, Any]:
    """An arrow's compact tip, named (pbft.trace.render.Tips documents the order)."""
    document = tips(page)
    item = document["items"][int(arrow.get("data-i", -1))]
    fields = "type sender receiver sent received view seq frame reason flags".split()
    named = dict(zip(fields, item, strict=True))
    for field in ("type", "sender", "receiver", "reason"):
        if named[field] is not None:
            named[field] = document["names"][named[field]]
    return named


def test_one_lane_per_node_and_the_traitor_marked() -> None:
    trace = equivocation()
    page = render_html(trace.header, trace.events)
    names = [t.text or "" for t in svgs(page)["lanes"].iter(f"{SVG}text")]
    for node in [*REPLICAS, "client-0"]:
        assert sum(node in name for name in names) == 1, names
    assert any("replica-0" in name and "traitor" in name for name in names)
    backgrounds = [e for e in svgs(page)["chart"].iter(f"{SVG}rect") if "lane-bg" in classes(e)]
    assert len(backgrounds) == 5
    assert [("traitor" in classes(e)) for e in backgrounds] == [True] + [False] * 4


def test_one_arrow_per_delivered_message_and_a_stub_per_lost_one() -> None:
    trace = equivocation()
    chart = svgs(render_html(trace.header, trace.events))["chart"]
    receives = [e for e in trace.events if e["event"] == "receive"]
    delivered = [e for e in arrows(chart) if "stub" not in classes(e)]
    assert len(delivered) == len(receives)
    # The PREPARE to replica-0 and the NEW-VIEW to replica-3 never arrived.
    assert len(arrows(chart, "stub")) == 2


def test_conflicting_pre_prepares_and_the_forged_one_are_highlighted() -> None:
    trace = equivocation()
    page = render_html(trace.header, trace.events)
    chart = svgs(page)["chart"]
    conflict = [e for e in chart.iter(f"{SVG}line") if {"halo", "conflict"} <= classes(e)]
    forged = [e for e in chart.iter(f"{SVG}line") if {"halo", "forged"} <= classes(e)]
    assert len(conflict) == 3  # every PRE-PREPARE of (view 0, seq 1): two stories, three arrows
    assert {e.get("data-d") for e in conflict} == {"b1", "b2"}
    assert [e.get("data-d") for e in forged] == ["b2"]
    pre_prepares = arrows(chart, "ph-pre-prepare")
    assert all(arrow_tip(page, e)["flags"] & 2 for e in pre_prepares)
    assert [arrow_tip(page, e)["flags"] & 1 for e in pre_prepares].count(1) == 1


def test_rejected_messages_are_drawn_apart_with_their_reason() -> None:
    trace = equivocation()
    page = render_html(trace.header, trace.events)
    rejected = arrows(svgs(page)["chart"], "rej")
    assert len(rejected) == 2
    for arrow in rejected:
        tip = arrow_tip(page, arrow)
        assert (tip["type"], tip["reason"], tip["sender"]) == (
            "PREPARE",
            "digest-mismatch",
            "replica-3",
        )
    assert ".m.rej{stroke-dasharray" in page and "url(#cross)" in page


def test_view_changes_checkpoints_and_client_operations_are_drawn() -> None:
    trace = equivocation()
    chart = svgs(render_html(trace.header, trace.events))["chart"]
    kinds = [c for e in chart.iter() for c in classes(e) if c.startswith("band-")]
    assert kinds.count("band-view-change") == 3
    assert kinds.count("band-new-view") == 1  # one line across the lanes per new view
    assert kinds.count("band-checkpoint") == 3
    operations = [e for e in chart.iter(f"{SVG}rect") if "op" in classes(e)]
    assert len(operations) == 1 and "pending" not in classes(operations[0])


def test_crashes_and_partitions_are_bands_and_network_faults_amber_marks() -> None:
    trace = equivocation()
    trace.add(10, "replica-2", "fault", fault="crash", detail="crash")
    trace.add(20, "network", "fault", fault="partition-on", detail="{0,1} | {2,3}")
    trace.add(30, "replica-1", "fault", fault="loss", detail="lost", frame="0" * 16)
    trace.add(40, "network", "fault", fault="partition-off", detail="healed")
    trace.add(50, "replica-2", "fault", fault="restart", detail="restart")
    chart = svgs(render_html(trace.header, trace.events))["chart"]
    rects = {c: e for e in chart.iter(f"{SVG}rect") for c in classes(e) if c.startswith("band-")}
    assert float(rects["band-partition"].get("width", 0)) > 4 * 140  # across every lane
    assert float(rects["band-crash"].get("width", 0)) < 150  # on replica-2's lane only
    faults = [e for e in chart.iter() if "ev-fault" in classes(e)]
    assert [("network" in classes(e)) for e in faults] == [False, True]  # the traitor's; loss


def test_a_click_on_the_request_reaches_its_batch_and_replies() -> None:
    trace = equivocation()
    chart = svgs(render_html(trace.header, trace.events))["chart"]
    (request,) = arrows(chart, "ph-request")
    assert request.get("data-d") == "r1" and request.get("data-b") == "b1"
    replies = arrows(chart, "ph-reply")
    assert replies and all(e.get("data-b") == "r1" for e in replies)


def test_violations_highlight_the_conflicting_executions() -> None:
    trace = equivocation()
    trace.add(505, "replica-3", "executed", view=1, seq=2, digest="x")
    trace.add(505, "replica-2", "executed", view=1, seq=2, digest="y")
    trace.add(506, "explorer", "violation", checker="agreement", detail="seq 2", seqs=[2])
    page = render_html(trace.header, trace.events)
    violating = [e for e in svgs(page)["chart"].iter() if "violating" in classes(e)]
    assert sorted(e.get("data-d") or "" for e in violating) == ["x", "y"]
    assert 'class="violations"' in page and "agreement" in page
    # Narrowing the picture keeps the verdict and the conflict, even with a lane hidden.
    narrow = render_html(trace.header, trace.events, seq_from=2, seq_to=2, replicas={0, 3})
    violating = [e for e in svgs(narrow)["chart"].iter() if "violating" in classes(e)]
    assert [e.get("data-d") for e in violating] == ["x"] and "agreement" in narrow


def test_the_page_fetches_nothing() -> None:
    trace = equivocation()
    page = render_html(trace.header, trace.events)
    addresses = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert addresses == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=", page)


def test_sequence_and_replica_filters() -> None:
    trace = equivocation()
    trace.add(600, "replica-1", "send", type="PREPARE", frame="f" * 16, to=["replica-2"],
              view=1, seq=9, digest="b9")  # fmt: skip
    trace.add(601, "replica-2", "receive", type="PREPARE", frame="f" * 16, accepted=True,
              view=1, seq=9, digest="b9", **{"from": "replica-1"})  # fmt: skip
    only_nine = svgs(render_html(trace.header, trace.events, seq_from=9))["chart"]
    assert [e.get("data-d") for e in arrows(only_nine)] == ["b9"]
    without_zero = render_html(trace.header, trace.events, replicas={1, 2, 3})
    names = "".join(t.text or "" for t in svgs(without_zero)["lanes"].iter(f"{SVG}text"))
    assert "replica-0" not in names and "replica-3" in names


def write(path: Path, trace: Trace) -> Path:
    with TraceWriter.open(path, trace.header) as writer:
        for event in trace.events:
            fields = {k: v for k, v in event.items() if k not in ("t", "node", "event")}
            writer.event(event["t"], event["node"], event["event"], **fields)
    return path


def test_command_writes_the_page_beside_the_trace(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", equivocation())
    assert main(["trace", str(path)]) == 0
    page = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert "Linearizability" in page and "linearizable</b>" in page  # the picture appended
    assert main(["trace", str(path), "-o", str(tmp_path / "x.html"), "--replicas", "1,2"]) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.jsonl"], "cannot read"),
        (["not-a-trace.jsonl"], "not a pbft trace"),
        (["run.jsonl", "--from", "5", "--to", "2"], "--from 5 is after --to 2"),
        (["run.jsonl", "--from", "50"], "no event of"),
        (["run.jsonl", "--replicas", "0,7"], "the trace's replicas are [0, 1, 2, 3]"),
    ],
)
def test_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    write(tmp_path / "run.jsonl", equivocation())
    (tmp_path / "not-a-trace.jsonl").write_text('{"hello": 1}\n')
    argv = ["trace", *(str(tmp_path / a) if a.endswith(".jsonl") else a for a in arguments)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


# ------------------------------------------------------------ linearizability picture


def op(client: int, name: str, value: Any, start: float, end: float | None, result: Any):
    return Operation(client, name, "k", value, start, end, result)


def test_a_linearizable_history_is_numbered_in_the_order_found() -> None:
    history = [
        op(0, "put", "a", 0, 3, True),
        op(1, "get", None, 1, 5, "a"),
        op(2, "put", "b", 2, 8, True),
        op(0, "get", None, 6, 9, "b"),
    ]
    order = linearization(history)
    assert order is not None and [history[i].op for i in order][-1] == "get"
    page = picture(history)
    badges = re.findall(r'font-size="8.5" fill="[^"]+">(\d+)</text>', page)
    assert sorted(map(int, badges)) == [1, 2, 3, 4]
    assert "linearizable</b>" in page and 'class="window"' not in page


def test_a_stale_read_is_the_shortest_failing_window() -> None:
    history = [
        op(0, "put", "1", 0, 2, True),
        op(1, "put", "2", 3, 5, True),
        op(0, "get", None, 6, 7, "1"),  # reads the overwritten value: not linearizable
        op(2, "get", None, 8, 20, "2"),
    ]
    assert failing_window(history) == (1, 2)
    page = picture(history)
    assert "not linearizable" in page and 'class="window"' in page
    assert page.count('class="op culprit"') == 1 and page.count('class="op window"') == 1


def test_the_history_comes_from_the_trace_events() -> None:
    (operation,) = history_from_trace(equivocation().events)
    assert (operation.client, operation.op, operation.value, operation.result) == (
        0, "put", "v", True,
    )  # fmt: skip
    assert (operation.invoke_ms, operation.return_ms) == (0.0, 505.0)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed to parse the JS")
def test_the_page_script_parses(tmp_path: Path) -> None:
    """A syntax error would silently leave the page without tooltips, zoom or follow."""
    script = tmp_path / "page.js"
    script.write_text(SCRIPT, encoding="utf-8")
    checked = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
