"""The trace format's contract: header, events, frame ids, and a reader that refuses anything
that is not a pbft trace with one message naming the line."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from pbft.trace.format import (
    FORMAT,
    VERSION,
    TraceWriter,
    digest_prefix,
    frame_id,
    make_header,
    message_fields,
    node_name,
    operation_fields,
    read_trace,
    result_value,
)


def header(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "driver": "sim",
        "n": 4,
        "f": 1,
        "clients": [0, 1],
        "replicas": [0, 1, 2, 3],
        "traitors": {0: "equivocate:targets=1+2"},
        "seed": 42,
        "plan": {"loss": 0.1},
    }
    fields.update(overrides)
    return make_header(**fields)  # type: ignore[arg-type]


def test_frame_id_is_the_sha256_prefix_of_the_bytes_on_the_wire() -> None:
    frame = b"\x00\x01frame"
    assert frame_id(frame) == hashlib.sha256(frame).hexdigest()[:16]
    assert frame_id(frame) != frame_id(frame + b"!")


def test_digest_prefix_and_node_names() -> None:
    assert digest_prefix(bytes(range(32))) == "0001020304050607"
    assert node_name("replica", 0) == "replica-0"
    assert node_name("client", 12) == "client-12"
    with pytest.raises(ValueError, match="replica or a client"):
        node_name("server", 1)


def test_header_names_the_run() -> None:
    made = header()
    assert made["kind"] == "header" and made["format"] == FORMAT and made["version"] == VERSION
    assert made["time_unit"] == "ms" and made["driver"] == "sim"
    # JSON object keys are strings: the traitor's replica id too.
    assert made["traitors"] == {"0": "equivocate:targets=1+2"}
    assert made["pbft_version"] and made["python"].count(".") == 2
    assert made["started"] is None
    with pytest.raises(ValueError, match="driver"):
        header(driver="carrier-pigeon")


def test_written_trace_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "run.trace"
    with TraceWriter.open(path, header()) as writer:
        writer.event(0, "client-0", "invoke", op="put", key="k", value="é", timestamp=1)
        writer.event(1.23456, "replica-0", "send", type="REQUEST", frame="ab" * 8, to=["r"])
    read_header, events = read_trace(path)
    assert read_header == header()
    assert events == [
        {"t": 0.0, "node": "client-0", "event": "invoke", "op": "put", "key": "k", "value": "é"}
        | {"timestamp": 1},
        {"t": 1.235, "node": "replica-0", "event": "send", "type": "REQUEST", "frame": "ab" * 8}
        | {"to": ["r"]},
    ]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(isinstance(json.loads(line), dict) for line in lines)
    # Fields keep their order: time, lane and name first, for a person reading the file.
    assert lines[1].startswith('{"t":0.0,"node":"client-0","event":"invoke"')


def test_same_events_give_byte_identical_text() -> None:
    def write() -> str:
        stream = io.StringIO()
        writer = TraceWriter(stream, header())
        writer.event(3, "replica-1", "executed", seq=1, requests=2)
        return stream.getvalue()

    assert write() == write()


def write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "file.trace"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_HEADER = json.dumps(header())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "empty, not a pbft trace"),
        (("hello world",), "line 1: not JSON"),
        (('{"kind": "event"}',), "line 1: not a pbft trace"),
        (('{"kind": "header", "format": "other"}',), "line 1: not a pbft trace"),
        (
            (GOOD_HEADER.replace('"version": 1', '"version": 99'),),
            "line 1: trace format version 99",
        ),
        ((GOOD_HEADER, '{"t": 1, "node": "replica-0"}'), "line 2: event has no 'event'"),
        ((GOOD_HEADER, "", '{"t": "soon", "node": "a", "event": "send"}'), "line 3: 't' is not"),
        ((GOOD_HEADER, "[1, 2]"), "line 2: an event is a JSON object"),
        ((GOOD_HEADER, "Send(frame=b'')"), "line 2: not JSON, not a pbft trace event"),
    ],
)
def test_reader_refuses_what_is_not_a_trace_naming_the_line(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    path = write_lines(tmp_path, *lines) if lines else tmp_path / "empty.trace"
    if not lines:
        path.write_text("")
    with pytest.raises(ValueError, match=message) as raised:
        read_trace(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_reader_refuses_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_trace(tmp_path / "absent.trace")
    binary = tmp_path / "binary.trace"
    binary.write_bytes(GOOD_HEADER.encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match="line 2: not UTF-8"):
        read_trace(binary)


def test_operations_and_results_as_the_client_events_show_them() -> None:
    from pbft import service

    assert operation_fields(service.put("k", "v")) == {"op": "put", "key": "k", "value": "v"}
    assert operation_fields(service.get("k")) == {"op": "get", "key": "k"}
    assert operation_fields(service.cas("k", None, "n")) == {
        "op": "cas",
        "key": "k",
        "expected": None,
        "new": "n",
    }
    assert operation_fields(b"\xc1junk") == {"op": "invalid", "key": ""}
    assert result_value(service.KeyValueStore().execute(service.put("k", "v"))) is True
    assert result_value(service.KeyValueStore().execute(service.get("absent"))) is None
    assert "error" in result_value(service.KeyValueStore().execute(b"\x90"))
    assert result_value(b"\xc1") == {"undecodable": "c1"}


def test_message_fields_name_what_a_message_is_about() -> None:
    from pbft.messages import Checkpoint, Prepare, Signed, ViewChange

    prepare = Signed(Prepare(view=2, seq=7, digest=bytes(range(32)), sender=1), b"", b"")
    assert message_fields(prepare) == {
        "type": "PREPARE",
        "view": 2,
        "seq": 7,
        "digest": "0001020304050607",
    }
    checkpoint = Signed(Checkpoint(seq=8, state_digest=b"\xff" * 32, sender=0), b"", b"")
    assert message_fields(checkpoint) == {"type": "CHECKPOINT", "seq": 8, "digest": "f" * 16}
    # A VIEW-CHANGE is about the view it asks for.
    view_change = Signed(ViewChange(3, 0, (), (), 2), b"", b"")
    assert message_fields(view_change)["view"] == 3
    # A traitor's short digest shows as what it is.
    short = Signed(Prepare(view=0, seq=1, digest=b"", sender=1), b"", b"")
    assert message_fields(short)["digest"] == ""
