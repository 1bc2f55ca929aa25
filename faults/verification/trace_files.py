"""Where a simulated run's trace goes: a JSON-lines file, or a picture when it ends in .html.

``--trace FILE`` of ``pbft explore --replay`` and ``pbft scenario run --sim`` goes through
here: :func:`check_trace_path` refuses a path that cannot work before the run starts,
:func:`open_trace` gives the :class:`~faults.verification.sim_trace.SimTrace` to run with
(writing to the file, or to memory when a picture is wanted), and :func:`close_trace` closes
it, rendering the picture with :func:`pbft.trace.render.render_html` for an ``.html`` path.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faults.verification.sim_trace import SimTrace
from pbft.trace.format import TraceWriter


def is_picture(path: Path) -> bool:
    """``--trace run.html`` asks for the picture; any other name for the JSON lines."""
    return path.suffix.lower() in (".html", ".htm")


def check_trace_path(path: Path) -> None:
    """Refuse, before a run starts, a ``--trace`` path that cannot be written (ValueError)."""
    if not path.parent.is_dir():
        raise ValueError(f"--trace {path}: folder {path.parent} does not exist")
    if is_picture(path):
        try:
            importlib.import_module("pbft.trace.render")
        except ImportError:
            raise ValueError(
                f"--trace {path}: this pbft cannot draw traces yet (no pbft.trace.render); "
                "write the JSON lines instead (--trace FILE.trace)"
            ) from None


def open_trace(path: Path, header: Mapping[str, Any]) -> SimTrace:
    """A trace of one run into ``path``: the JSON lines, or kept in memory for a picture."""
    if is_picture(path):
        return SimTrace(TraceWriter(io.StringIO(), header))
    return SimTrace(TraceWriter.open(path, header))


def close_trace(trace: SimTrace, path: Path, title: str) -> str:
    """Finish ``trace`` (drawing the picture when ``path`` is .html); say what was written."""
    writer = trace.writer
    writer.close()
    if not is_picture(path):
        return f"trace written to {path} ({writer.events_written} events)"
    from faults.verification.linearizability_picture import picture_from_trace
    from pbft.trace.render import render_html

    stream = writer.stream
    assert isinstance(stream, io.StringIO)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    appendix = [fragment] if (fragment := picture_from_trace(lines[0], lines[1:])) else []
    page = render_html(lines[0], lines[1:], title=title, appendix=appendix)
    path.write_text(page, encoding="utf-8")
    return f"trace picture written to {path} ({writer.events_written} events)"
