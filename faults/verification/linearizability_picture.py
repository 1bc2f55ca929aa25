"""The linearizability checker's verdict as a picture, in the manner of Porcupine's.

For each key, the clients' operations on it are bars on a time axis (one row per client,
from invocation to return; an operation that never returned runs off to the right, dashed).
When the key's history is linearizable, each bar carries its place in the linearization the
search found (``1``, ``2``, ...) and a thin line joins the operations' linearization points
in that order. When it is not, the picture marks the *shortest non-linearizable window*: the
operations of that window are shaded and the one whose result nothing can explain is red.

How the window is found. Operations are taken in invocation order; the window ends at the
first operation j such that the history up to j cannot be linearized, with every later
operation that overlaps it kept as one that may or may not have taken effect (so the test
is a relaxation of the whole history, and its failure proves the whole history wrong). It
starts at the last operation i at which everything earlier had already returned and no
state the key could have held then (absent, or any value written in the history) makes
operations i..j linearizable. Time is compressed as in Porcupine: each distinct instant of
a key's history is one step along the axis, so long idle gaps do not squeeze the overlaps
that matter.

:func:`picture` draws a history (the run report's ``clients`` list, or :class:`Operation`
values); :func:`picture_from_trace` reads a trace's ``invoke`` and ``complete`` events. The
trace page (:mod:`pbft.trace.render`) takes the result as a ready HTML fragment, since pbft
must not import faults.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from faults.verification.linearizability import ABSENT, INFINITY, Operation, apply

STEP_PX = 46
ROW_PX = 32
LEFT_PX = 78
#: Beyond this many operations a key's picture shows its first ones only (or, when it is
#: not linearizable, its window and a little context): a bar chart of thousands is no help.
MAX_OPERATIONS_SHOWN = 240
#: The window search runs one linearizability search per operation; past this, mark the key.
MAX_WINDOW_SEARCH = 400


def linearization(ops: Sequence[Operation], initial: Any = ABSENT) -> list[int] | None:
    """Indices into ``ops`` (sorted by invocation) in an order that linearizes them, or None.

    The search of :func:`faults.verification.linearizability.check_key`, keeping the path;
    an operation that never returned appears only if it had to take effect."""
    count = len(ops)
    returns = [INFINITY if op.return_ms is None else op.return_ms for op in ops]
    must = sum(1 << i for i, op in enumerate(ops) if op.returned)
    seen: set[tuple[int, Any]] = set()
    Path = tuple[int, Any] | None  # (last index, the path before it): shared prefixes
    stack: list[tuple[int, Any, Path]] = [(0, initial, None)]
    while stack:
        done, state, path = stack.pop()
        if done & must == must:
            order: list[int] = []
            while path is not None:
                order.append(path[0])
                path = path[1]
            return order[::-1]
        if (done, state) in seen:
            continue
        seen.add((done, state))
        horizon = min((returns[i] for i in range(count) if not done >> i & 1), default=INFINITY)
        for i in range(count):
            if done >> i & 1 or ops[i].invoke_ms > horizon:
                continue
            ok, after = apply(ops[i], state)
            if ok:
                stack.append((done | 1 << i, after, (i, path)))
    return None


def _relaxed(ops: Sequence[Operation], first: int, last: int) -> list[Operation]:
    """ops[first..last], plus every later operation invoked before they all returned, as
    one whose result is unknown (it may or may not have taken effect)."""
    window = list(ops[first : last + 1])
    horizon = max((INFINITY if op.return_ms is None else op.return_ms) for op in window)
    for op in ops[last + 1 :]:
        if op.invoke_ms < horizon:
            window.append(Operation(op.client, op.op, op.key, op.value, op.invoke_ms, None, None))
    return sorted(window, key=lambda o: o.invoke_ms)


def failing_window(ops: Sequence[Operation]) -> tuple[int, int] | None:
    """(first, last) indices of the shortest window that cannot be linearized (see the module
    docstring), or None when the history is linearizable or too long to search."""
    if len(ops) > MAX_WINDOW_SEARCH:
        return None
    last = next((j for j in range(len(ops)) if linearization(_relaxed(ops, 0, j)) is None), None)
    if last is None:
        return None
    states = [ABSENT] + [_written(op) for op in ops if op.op in ("put", "cas")]
    returned_before = -INFINITY  # every operation before i had returned by then
    starts = []
    for i in range(1, last + 1):
        previous = ops[i - 1].return_ms
        returned_before = max(returned_before, INFINITY if previous is None else previous)
        if returned_before < ops[i].invoke_ms:
            starts.append(i)
    for first in reversed(starts):
        window = _relaxed(ops, first, last)
        if all(linearization(window, state) is None for state in states):
            return first, last
    return 0, last


def _written(op: Operation) -> Any:
    return op.value[1] if op.op == "cas" else op.value


def history_from_trace(events: Iterable[Mapping[str, Any]]) -> list[Operation]:
    """The operations of a trace's ``invoke`` and ``complete`` events, paired by client and
    request timestamp; ``invalid`` operations (a Byzantine client's) are left out."""
    started: dict[tuple[str, Any], Mapping[str, Any]] = {}
    finished: dict[tuple[str, Any], Mapping[str, Any]] = {}
    for event in events:
        key = (str(event.get("node")), event.get("timestamp"))
        if event.get("event") == "invoke" and event.get("op") != "invalid":
            started.setdefault(key, event)
        elif event.get("event") == "complete":
            finished.setdefault(key, event)
    history = []
    for key, event in started.items():
        end = finished.get(key)
        value: Any = event.get("value")
        if event["op"] == "cas":
            value = (event.get("expected"), event.get("new"))
        client = int(key[0].rsplit("-", 1)[-1]) if key[0][-1:].isdigit() else -1
        returned = None if end is None else float(end["t"])
        result = None if end is None else end.get("result")
        history.append(
            Operation(
                client, str(event["op"]), str(event.get("key")), value, float(event["t"]),
                returned, result,
            )
        )  # fmt: skip
    return history


def picture_from_trace(
    header: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> str | None:
    """The fragment for a trace, or None when the trace has no client operations."""
    history = history_from_trace(events)
    return picture(history) if history else None


def picture(history: Iterable[Operation | Mapping[str, Any]]) -> str:
    """An HTML fragment (a heading, a sentence, one inline SVG per key) of the verdict."""
    by_key: dict[str, list[Operation]] = {}
    for entry in history:
        op = entry if isinstance(entry, Operation) else Operation.from_report(entry)
        by_key.setdefault(op.key, []).append(op)
    sections, failing = [], []
    for key in sorted(by_key):
        ops = sorted(by_key[key], key=lambda o: o.invoke_ms)
        order = linearization(ops)
        if order is None:
            failing.append(key)
        sections.append(_key_section(key, ops, order))
    if failing:
        verdict = (
            f'<b style="color:#c00000">not linearizable</b>: key(s) '
            f"{html.escape(', '.join(map(repr, failing)))}; the shaded window cannot be "
            "linearized from any state the key could have held, and the red operation's result "
            "is the one nothing explains."
        )
    else:
        verdict = (
            '<b style="color:#2a7d2a">linearizable</b>: the numbers are the order the checker '
            "found; the grey line joins the operations' linearization points."
        )
    return (
        f'<div class="linearizability"><h2 style="font-size:15px;margin:4px 0">'
        f"Linearizability: {sum(map(len, by_key.values()))} operations on {len(by_key)} key(s)"
        f'</h2><p style="margin:2px 0 8px">{verdict}</p>{"".join(sections)}</div>'
    )


def _key_section(key: str, ops: list[Operation], order: list[int] | None) -> str:
    window = failing_window(ops) if order is None else None
    shown = _shown_range(len(ops), window)
    subset = ops[shown[0] : shown[1]]
    note = ""
    if shown != (0, len(ops)):
        note = f" (operations {shown[0] + 1} to {shown[1]} of {len(ops)} shown)"
    status = "linearizable" if order is not None else "NOT linearizable"
    if order is None and window is None:
        status += " (history too long to find the window)"
    heading = (
        f'<div style="margin:8px 0 2px;font-weight:600">key {html.escape(repr(key))}: '
        f"{status}{note}</div>"
    )
    drawing = _key_svg(subset, shown[0], _points(ops, order or []), window)
    return f'{heading}<div style="overflow-x:auto">{drawing}</div>'


def _points(ops: list[Operation], order: list[int]) -> dict[int, tuple[int, float]]:
    """index -> (place in the linearization, its linearization point): each operation takes
    effect at its invocation or just after the one before it, whichever is later (always
    before its return, since the order respects real time)."""
    points, latest = {}, -INFINITY
    for place, index in enumerate(order, start=1):
        latest = max(latest, ops[index].invoke_ms)
        points[index] = (place, latest)
    return points


def _shown_range(count: int, window: tuple[int, int] | None) -> tuple[int, int]:
    if count <= MAX_OPERATIONS_SHOWN:
        return 0, count
    if window is None:
        return 0, MAX_OPERATIONS_SHOWN
    first = max(0, window[0] - 10)
    return first, min(count, max(window[1] + 11, first + 20), first + MAX_OPERATIONS_SHOWN)


def _key_svg(
    ops: list[Operation],
    offset: int,
    points: dict[int, tuple[int, float]],
    window: tuple[int, int] | None,
) -> str:
    instants = sorted({op.invoke_ms for op in ops} | {op.return_ms for op in ops if op.returned})
    step = {t: i for i, t in enumerate(instants)}
    clients = sorted({op.client for op in ops})
    row = {client: i for i, client in enumerate(clients)}
    width = max(LEFT_PX + (len(instants) + 2) * STEP_PX + 40, 480)
    height = len(clients) * ROW_PX + 26

    def x_of(t: float | None) -> float:
        if t is None:
            return LEFT_PX + (len(instants) + 1) * STEP_PX
        return LEFT_PX + step.get(t, bisect.bisect_left(instants, t)) * STEP_PX

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="linearizability-key" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="font:11px sans-serif">'
    ]
    for client, index in row.items():
        parts.append(
            f'<text x="4" y="{index * ROW_PX + 27}" fill="#333">client-{client}</text>'
            f'<line x1="{LEFT_PX}" y1="{index * ROW_PX + 34}" x2="{width - 10}" '
            f'y2="{index * ROW_PX + 34}" stroke="#eee"/>'
        )
    if window is not None:
        inside = ops[max(window[0] - offset, 0) : window[1] - offset + 1]
        left = min(x_of(op.invoke_ms) for op in inside) - 6
        right = max(x_of(op.return_ms) for op in inside) + 6
        parts.append(
            f'<rect class="window" x="{left}" y="0" width="{right - left}" height="{height - 20}" '
            'fill="#d62728" opacity=".10"><title>the shortest window that cannot be '
            "linearized</title></rect>"
        )
    line, used = [], {}
    for local, op in enumerate(ops):
        index = offset + local
        state = "plain"
        if window is not None and window[0] <= index <= window[1]:
            state = "culprit" if index == window[1] else "window"
        x1, x2 = x_of(op.invoke_ms), x_of(op.return_ms)
        y = row[op.client] * ROW_PX + 4
        place, point_x = None, x1
        if index in points:
            place, at = points[index]
            # Operations linearized at one instant: side by side, in their order.
            point_x = x_of(at) + 8 + 5 * used.get(at, 0)
            # An operation may take effect at the very instant it returns: keep its badge
            # on its own bar, not on the next one's.
            point_x = max(min(point_x, x2 - 7), x1 + 7)
            used[at] = used.get(at, 0) + 1
            line.append((place, point_x, y + 8))
        parts.append(_bar(op, x1, x2, y, state, place, point_x))
    parts.append(_linearization_line(line))
    parts.append(
        f'<text x="{LEFT_PX}" y="{height - 4}" fill="#888">time → (each step one distinct '
        "instant: invocations and returns in order)</text></svg>"
    )
    return "".join(parts)


BAR_COLOURS = {
    "plain": ("#dbe9f6", "#1f77b4"),
    "window": ("#fde0c5", "#e6550d"),
    "culprit": ("#f8c9c9", "#c00000"),
}


def _bar(
    op: Operation, x1: float, x2: float, y: float, state: str, place: int | None, point_x: float
) -> str:
    fill, stroke = BAR_COLOURS[state]
    dash = "" if op.returned else ' stroke-dasharray="4 3"'
    label = _label(op)
    fits = max(int((x2 - x1 - 6) / 6), 0)
    text = label if len(label) <= fits else label[: max(fits - 1, 0)] + "…" if fits > 2 else ""
    end = "never returned" if op.return_ms is None else f"{op.return_ms:g} ms"
    title = f"client-{op.client}: {label} [{op.invoke_ms:g} ms, {end}]"
    if place is not None:
        title += f"; linearized #{place}"
    badge = ""
    if place is not None:
        badge = (
            f'<circle cx="{point_x}" cy="{y + 8}" r="6.5" fill="#fff" stroke="{stroke}"/>'
            f'<text x="{point_x}" y="{y + 11}" text-anchor="middle" font-size="8.5" '
            f'fill="{stroke}">{place}</text>'
        )
    return (
        f'<g class="op {state}"><title>{html.escape(title)}</title>'
        f'<rect x="{x1}" y="{y + 8}" width="{max(x2 - x1, 4)}" height="20" rx="3" fill="{fill}" '
        f'stroke="{stroke}"{dash}/><text x="{x1 + 4}" y="{y + 23}" fill="#222">'
        f"{html.escape(text)}</text>{badge}</g>"
    )


def _label(op: Operation) -> str:
    result = "?" if not op.returned else _show(op.result)
    if op.op == "put":
        return f"put {_show(op.value)}"
    if op.op == "cas":
        expected, new = op.value
        return f"cas {_show(expected)}→{_show(new)} → {result}"
    return f"{op.op} → {result}"


def _show(value: Any) -> str:
    if value is None:
        return "∅"
    if value is True or value is False:
        return str(value).lower()
    return str(value)


def _linearization_line(points: list[tuple[int, float, float]]) -> str:
    if len(points) < 2:
        return ""
    path = " ".join(f"{x:.0f},{y:.0f}" for _, x, y in sorted(points))
    return (
        f'<polyline points="{path}" fill="none" stroke="#999" stroke-width="1" '
        'stroke-dasharray="2 2"/>'
    )
