"""``pbft trace FILE``: a trace file as a self-contained HTML page.

The parser and the command's body live here so that :mod:`pbft.cli` only wires them in. The
command reads the trace (:func:`pbft.trace.merge.load_trace`: a trace file, or a folder of a
real cluster's process logs, merged), checks the options against it, renders the page
(:func:`pbft.trace.render.render_html`) and writes it next to the trace (``run.trace`` ->
``run.html``) unless ``-o`` says where. Every error is one line naming its cause, and a
non-zero exit.

Extra pictures of the run are passed in by the caller as functions (``appendix``): the
linearizability picture lives in ``faults``, which this package must not import, so
:mod:`pbft.cli` hands its drawing function over.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbft.trace.layout import filter_by_seq
from pbft.trace.merge import Appendix, load_trace
from pbft.trace.render import render_html

#: Draws one more picture of a run from its header and events, or None when it has nothing.


def add_parser(commands: Any) -> None:
    trace = commands.add_parser(
        "trace", help="render a trace file (JSON lines) as a self-contained HTML page"
    )
    trace.add_argument(
        "file", type=Path, metavar="FILE",
        help="a trace, or a folder of a real cluster's process logs (see docs/trace.md)",
    )  # fmt: skip
    trace.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="the page to write (default FILE.html)"
    )
    trace.add_argument(
        "--from",
        dest="seq_from",
        type=int,
        metavar="SEQ",
        help="only sequence numbers from SEQ on (and what happened meanwhile)",
    )
    trace.add_argument("--to", dest="seq_to", type=int, metavar="SEQ",
                       help="only sequence numbers up to SEQ")  # fmt: skip
    trace.add_argument(
        "--replicas", metavar="I,J,...", help="only these replicas' lanes (clients always shown)"
    )
    trace.add_argument("--title", help="the page's title")


def parse_replicas(text: str | None, known: Sequence[int]) -> set[int] | None:
    """``"0,2"`` -> {0, 2}; a ValueError naming the problem for anything else."""
    if text is None:
        return None
    try:
        chosen = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"--replicas takes replica ids like 0,1,2, not {text!r}") from None
    unknown = sorted(chosen - set(known))
    if not chosen or unknown:
        raise ValueError(f"--replicas {text!r}: the trace's replicas are {list(known)}")
    return chosen


def run(args: argparse.Namespace, appendix: Sequence[Appendix] = ()) -> int:
    if args.seq_from is not None and args.seq_to is not None and args.seq_from > args.seq_to:
        print(f"pbft trace: --from {args.seq_from} is after --to {args.seq_to}", file=sys.stderr)
        return 2
    try:
        header, events = load_trace(args.file)  # a trace, or a folder of process logs
        replicas = parse_replicas(args.replicas, header.get("replicas", []))
    except ValueError as error:
        print(f"pbft trace: {error}", file=sys.stderr)
        return 2
    shown = filter_by_seq(events, args.seq_from, args.seq_to) if events else []
    if events and not shown:
        print(
            f"pbft trace: no event of {args.file} has a sequence number in "
            f"[{_bound(args.seq_from)}, {_bound(args.seq_to)}]",
            file=sys.stderr,
        )
        return 2
    output = args.output or args.file.with_suffix(".html")
    if output.resolve() == args.file.resolve():
        print(f"pbft trace: {output} would overwrite the trace; give -o OUT", file=sys.stderr)
        return 2
    started = time.perf_counter()
    fragments = [fragment for draw in appendix if (fragment := draw(header, events))]
    page = render_html(
        header, events, seq_from=args.seq_from, seq_to=args.seq_to, replicas=replicas,
        title=args.title, appendix=fragments,
    )  # fmt: skip
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as error:
        print(f"pbft trace: cannot write {output}: {error.strerror or error}", file=sys.stderr)
        return 1
    took = time.perf_counter() - started
    size_mb = len(page.encode()) / 1e6
    window = "" if len(shown) == len(events) else f" (of {len(events)} in the trace)"
    print(f"{output}: {len(shown)} events{window}, {size_mb:.1f} MB, rendered in {took:.1f} s")
    return 0


def _bound(seq: int | None) -> str:
    return "any" if seq is None else str(seq)
