"""A trace as a self-contained HTML page: a PBFT space-time diagram in inline SVG.

:func:`render_html` is the entry point (``pbft trace FILE`` calls it). The geometry comes from
:mod:`pbft.trace.layout`; this module writes it as markup, in drawing order: bands (view
changes, crashes, partitions, stable checkpoints) under everything, then the lanes, the
client operations, the arrows (a halo under each conflicting or forged one) and the point
marks (prepared, committed, executed, faults) on top.

Size matters more than elegance here: a 10,000-request run has 100,000 arrows (290,000 when
no request shares a batch; ``docs/trace.md``, "Large runs"). So an arrow is one ``<line>``
with integer coordinates and classes (colour, arrowhead and dash come from the style sheet,
not from attributes); its tooltip is a compact list in one JSON document (:class:`Tips`),
indexed by the element's ``data-i``, not a ``<title>`` per element; and the digests a click
follows are its only other attributes. The CSS and script are in
:mod:`pbft.trace.page_assets`. The page fetches nothing from the network.

Other pictures of the same run (the linearizability checker's, which lives in ``faults``, a
package this one must not import) come in as ready HTML fragments through ``appendix``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from pbft.trace.layout import (
    ROW_PX,
    Arrow,
    Band,
    Layout,
    Links,
    Mark,
    build_layout,
    links_of,
    request_key,
)
from pbft.trace.page_assets import PHASES, SCRIPT, page_header, style_sheet

GUTTER_PX = 74
LANE_PX = 150
TOP_PX = 12
LANE_HEAD_PX = 40
#: A lost frame's stub: this far towards its destination lane.
STUB_PX = 30
#: Left-gutter time labels at least this far apart.
TICK_SPACING_PX = 56
#: A traitor's behaviour spec is cut to this length under its lane's name (full on hover).
SPEC_CHARS = 26


def render_html(
    header: dict[str, Any],
    events: list[dict[str, Any]],
    *,
    seq_from: int | None = None,
    seq_to: int | None = None,
    replicas: set[int] | None = None,
    title: str | None = None,
    appendix: Sequence[str] = (),
) -> str:
    """The page for one trace; ``appendix``: HTML fragments shown under the diagram."""
    layout = build_layout(header, events, seq_from=seq_from, seq_to=seq_to, replicas=replicas)
    links = links_of(events)
    tips = Tips()
    chart = _chart_svg(layout, tips, links)
    title = title or _default_title(header)
    extra = "".join(f'<section class="appendix">{fragment}</section>' for fragment in appendix)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style_sheet()}</style></head><body>"
        f"{page_header(header, layout, title, seq_from, seq_to)}"
        f'<div class="scroll"><div class="lanes">{_lanes_svg(layout)}</div>{chart}</div>'
        f'{extra}<div id="tip"></div>'
        f'<script type="application/json" id="tips">{tips.json()}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def _default_title(header: dict[str, Any]) -> str:
    seed = header.get("seed")
    run = f"seed {seed}" if seed is not None else str(header.get("started") or "a run")
    return f"PBFT trace: {header.get('driver', '?')} driver, {run}"


def _lane_x(layout: Layout, node: str) -> int | None:
    if node not in layout.lanes:
        return None
    return GUTTER_PX + layout.lanes.index(node) * LANE_PX + LANE_PX // 2


def _width(layout: Layout) -> int:
    return GUTTER_PX + len(layout.lanes) * LANE_PX + 16


def _y(layout: Layout, row: int) -> int:
    return TOP_PX + layout.row_y[row]


def _svg_open(width: int, height: int, element_id: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{element_id}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" data-w="{width}" data-h="{height}">'
    )


# ------------------------------------------------------------------ page parts


def _lanes_svg(layout: Layout) -> str:
    width = _width(layout)
    parts = [_svg_open(width, LANE_HEAD_PX, "lanes")]
    for node in layout.lanes:
        x = _lane_x(layout, node)
        name = html.escape(node)
        if node in layout.traitors:
            spec = layout.traitors[node]
            short = spec if len(spec) <= SPEC_CHARS else spec[: SPEC_CHARS - 1] + "…"
            parts.append(
                f'<text class="lane-name traitor-name" x="{x}" y="16" text-anchor="middle">'
                f"&#9760; {name} (traitor)</text>"
                f'<text class="traitor-spec" x="{x}" y="31" text-anchor="middle">'
                f"<title>{html.escape(spec)}</title>{html.escape(short)}</text>"
            )
        else:
            parts.append(
                f'<text class="lane-name" x="{x}" y="22" text-anchor="middle">{name}</text>'
            )
    parts.append(f'<text class="tick" x="{GUTTER_PX - 8}" y="34" text-anchor="end">ms</text>')
    return "".join(parts) + "</svg>"


def _defs() -> str:
    markers = "".join(
        f'<marker id="arrow-{key}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto"><path d="M0,1L10,5L0,9z" fill="{colour}"/></marker>'
        for key, (_, colour) in PHASES.items()
    )
    return (
        f"<defs>{markers}"
        '<marker id="cross" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="9" '
        'markerHeight="9" orient="auto"><path d="M1,1L9,9M9,1L1,9" stroke="#c00000" '
        'stroke-width="2.2"/></marker>'
        '<marker id="lost" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="7" '
        'markerHeight="7"><circle cx="5" cy="5" r="3.5" fill="#fff" stroke="#555"/></marker>'
        '<pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="8" height="8" fill="#eee"/>'
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#aaa" stroke-width="3"/></pattern></defs>'
    )


def _chart_svg(layout: Layout, tips: Tips, links: Links) -> str:
    width, height = _width(layout), layout.height_px + TOP_PX
    parts = [_svg_open(width, height, "chart"), _defs()]
    for index, node in enumerate(layout.lanes):
        left = GUTTER_PX + index * LANE_PX
        traitor = " traitor" if node in layout.traitors else ""
        parts.append(
            f'<rect class="lane-bg{traitor}" x="{left + 4}" y="0" width="{LANE_PX - 8}" '
            f'height="{height}"/>'
        )
    parts.extend(_bands(layout, tips))
    parts.extend(_ticks(layout))
    for node in layout.lanes:
        x = _lane_x(layout, node)
        parts.append(f'<line class="lane" x1="{x}" y1="0" x2="{x}" y2="{height}"/>')
    parts.extend(_client_operations(layout, tips, links))
    for arrow in layout.arrows:
        parts.append(_arrow(layout, arrow, tips, links))
    for mark in layout.marks:
        parts.append(_mark(layout, mark, tips))
    return "".join(parts) + "</svg>"


def _ticks(layout: Layout) -> list[str]:
    parts, last, last_t = [], -TICK_SPACING_PX, None
    for row, t in enumerate(layout.row_t):
        y = _y(layout, row)
        if y - last >= TICK_SPACING_PX and t != last_t:
            parts.append(
                f'<text class="tick" x="{GUTTER_PX - 8}" y="{y + 4}" text-anchor="end">{t:g}</text>'
                f'<line class="gridline" x1="{GUTTER_PX - 4}" y1="{y}" x2="{GUTTER_PX}" y2="{y}"/>'
            )
            last, last_t = y, t
    return parts


def _bands(layout: Layout, tips: Tips) -> list[str]:
    parts, views_drawn = [], set()
    for band in layout.bands:
        top, bottom = _y(layout, band.first_row) - ROW_PX // 2, _y(layout, band.last_row)
        left, right = _band_span(layout, band)
        tip = tips.text(band.label)
        if band.kind == "new-view":
            if band.label in views_drawn:
                continue  # the first replica to enter a view draws its line across the lanes
            views_drawn.add(band.label)
            y = _y(layout, band.first_row)
            parts.append(
                f'<line class="band-new-view" x1="{GUTTER_PX}" y1="{y}" '
                f'x2="{_width(layout) - 8}" y2="{y}" data-i="{tip}"/>'
                f'<text class="nv-label" x="4" y="{y - 3}">{html.escape(band.label)}</text>'
            )
        elif band.kind == "checkpoint":
            y = _y(layout, band.first_row)
            parts.append(
                f'<line class="band-checkpoint" x1="{left + 8}" y1="{y}" x2="{right - 8}" '
                f'y2="{y}" data-i="{tip}"/>'
            )
        else:
            height = max(bottom - top, ROW_PX)
            parts.append(
                f'<rect class="band-{band.kind}" x="{left + 4}" y="{top}" '
                f'width="{right - left - 8}" height="{height}" data-i="{tip}"/>'
            )
            if band.kind == "view-change" and height > 2 * ROW_PX:
                parts.append(
                    f'<text class="tick" x="{left + 8}" y="{top + 11}">'
                    f"{html.escape(band.label)}</text>"
                )
    return parts


def _band_span(layout: Layout, band: Band) -> tuple[int, int]:
    if band.node in layout.lanes:
        left = GUTTER_PX + layout.lanes.index(band.node) * LANE_PX
        return left, left + LANE_PX
    return GUTTER_PX, GUTTER_PX + len(layout.lanes) * LANE_PX


class Tips:
    """The tooltips' texts, one JSON document indexed by the elements' ``data-i``.

    A mark's or band's tip is its text; an arrow's, the bulk of a big page, is a compact list
    the page's script spells out (``arrowText``): [type, sender, receiver, sent ms, received
    ms, view, seq, frame, reason, flags], with the strings as indices into ``names`` and
    flags 1 = forged, 2 = conflicting. The digest is the element's own ``data-d``."""

    FORGED, CONFLICT = 1, 2

    def __init__(self) -> None:
        self.items: list[str | list[Any]] = []
        self.names: dict[str, int] = {}

    def text(self, text: str) -> int:
        self.items.append(text)
        return len(self.items) - 1

    def arrow(self, arrow: Arrow) -> int:
        flags = (self.FORGED if arrow.forged else 0) | (self.CONFLICT if arrow.conflict else 0)
        reason = None if arrow.accepted else self._name(arrow.reason or "rejected")
        self.items.append(
            [
                self._name(arrow.type), self._name(arrow.sender), self._name(arrow.receiver),
                arrow.sent_t, arrow.received_t, arrow.view, arrow.seq, arrow.frame, reason, flags,
            ]
        )  # fmt: skip
        return len(self.items) - 1

    def _name(self, name: str) -> int:
        return self.names.setdefault(name, len(self.names))

    def json(self) -> str:
        document = {"names": list(self.names), "items": self.items}
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        return text.replace("</", "<\\/")  # never closes the <script> it sits in


def _arrow(layout: Layout, arrow: Arrow, tips: Tips, links: Links) -> str:
    x1, x2 = _lane_x(layout, arrow.sender), _lane_x(layout, arrow.receiver)
    if x1 is None or x2 is None:
        return ""  # to or from a lane filtered out
    y1, y2 = _y(layout, arrow.start_row), _y(layout, arrow.end_row)
    direction = 1 if x2 >= x1 else -1
    if not arrow.delivered:
        x2, y2, state = x1 + direction * STUB_PX, y1 + 4, " stub"
    else:
        x2 -= direction * 2  # the arrowhead's tip on the lane, not across it
        state = "" if arrow.accepted else " rej"
    attributes = f'x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"'
    digest = _follow(arrow.digest, links.of(arrow.digest, arrow.request))
    index = tips.arrow(arrow)
    halo = ""
    for flag in ("forged", "conflict"):
        if getattr(arrow, flag):
            halo += f'<line class="halo {flag}" {attributes}{digest}/>'
    return f'{halo}<line class="m ph-{arrow.phase}{state}" {attributes} data-i="{index}"{digest}/>'


def _follow(digest: str | None, belongs_to: list[str]) -> str:
    """The attributes a click follows: the element's own digest and the ones it belongs to."""
    data = f' data-d="{html.escape(digest)}"' if digest else ""
    if belongs_to:
        data += f' data-b="{html.escape(" ".join(belongs_to))}"'
    return data


MARK_CLASSES = {
    "prepared": "ev-prepared",
    "committed": "ev-committed",
    "executed": "ev-executed",
    "fault": "ev-fault",
}
#: Small offsets so that prepared, committed and executed of one row do not hide each other.
MARK_OFFSETS = {"prepared": -8, "committed": 0, "executed": 8}


def _mark(layout: Layout, mark: Mark, tips: Tips) -> str:
    name = mark.event["event"]
    if name in ("invoke", "complete"):
        return ""  # drawn as operation bars
    x = _lane_x(layout, mark.node)
    if x is None:
        x = GUTTER_PX - 14  # a fault of the network itself: in the gutter
    x += MARK_OFFSETS.get(name, 12)
    y = _y(layout, mark.row)
    classes = f"ev {MARK_CLASSES.get(name, 'ev-other')}" + (" violating" if mark.violating else "")
    if name == "fault" and mark.event.get("fault") != "traitor":
        classes += " network"  # the network's doing (loss, delay, ...), not a traitor's
    fields = {k: v for k, v in mark.event.items() if k not in ("node", "event", "t")}
    text = f"{name} at {mark.node}, {mark.event['t']:g} ms\n" + "\n".join(
        f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in fields.items()
    )
    if mark.violating:
        text += "\nCONFLICTING EXECUTION (see the violation above)"
    index = tips.text(text)
    digest = mark.event.get("digest")
    data = f' data-i="{index}"' + _follow(str(digest) if digest else None, [])
    radius = 6 if mark.violating else 3
    if name == "executed":
        return (
            f'<rect class="{classes}" x="{x - radius}" y="{y - radius}" width="{2 * radius}" '
            f'height="{2 * radius}"{data}/>'
        )
    if name == "fault":
        return f'<path class="{classes}" d="M{x},{y - 5}L{x + 5},{y + 4}L{x - 5},{y + 4}z"{data}/>'
    return f'<circle class="{classes}" cx="{x}" cy="{y}" r="{radius}"{data}/>'


def _client_operations(layout: Layout, tips: Tips, links: Links) -> list[str]:
    """Each client operation as a bar on its lane, from its invocation to its completion."""
    invoked: dict[tuple[str, Any], Mark] = {}
    parts = []
    last_row = len(layout.row_y) - 1
    for mark in layout.marks:
        key = (mark.node, mark.event.get("timestamp"))
        if mark.event["event"] == "invoke":
            invoked[key] = mark
        elif mark.event["event"] == "complete" and key in invoked:
            parts.append(_operation_bar(layout, invoked.pop(key), mark, last_row, tips, links))
    for start in invoked.values():
        parts.append(_operation_bar(layout, start, None, last_row, tips, links))
    return parts


def _operation_bar(
    layout: Layout, start: Mark, end: Mark | None, last_row: int, tips: Tips, links: Links
) -> str:
    x = _lane_x(layout, start.node) or 0
    top, bottom = _y(layout, start.row), _y(layout, last_row if end is None else end.row)
    event = start.event
    arguments = " ".join(
        f"{k}={event[k]}" for k in ("key", "value", "expected", "new") if k in event
    )
    result = "never completed" if end is None else f"-> {json.dumps(end.event.get('result'))}"
    text = f"{start.node}: {event.get('op')} {arguments} {result}\n"
    text += f"timestamp {event.get('timestamp')}, invoked {event['t']:g} ms"
    if end is not None:
        text += f", completed {end.event['t']:g} ms"
    index = tips.text(text)
    pending = " pending" if end is None else ""
    follow = _follow(None, links.of(None, request_key(event)))
    return (
        f'<rect class="op{pending}" x="{x + 6}" y="{top}" width="8" '
        f'height="{max(bottom - top, 3)}" data-i="{index}"{follow}/>'
    )
