"""The picture of a real simulated run, made by the project's own commands in real processes:
``pbft scenario run scripts/scenarios/equivocating-primary.toml --sim --trace`` writes the
trace, ``pbft trace`` draws it; the SVG shows the equivocation and the view change, and
headless Chromium draws a page that is not blank and whose script runs."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scripts" / "scenarios" / "equivocating-primary.toml"
SVG = "{http://www.w3.org/2000/svg}"
TYPES = ("REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY", "CHECKPOINT", "VIEW-CHANGE",
         "NEW-VIEW", "FETCH-STATE", "STATE", "FETCH-COMMITTED", "COMMIT-CERTIFICATE")  # fmt: skip


def pbft(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pbft", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The equivocating-primary scenario's trace and its page."""
    folder = tmp_path_factory.mktemp("picture")
    trace, page = folder / "equivocation.jsonl", folder / "equivocation.html"
    ran = pbft("scenario", "run", str(SCENARIO), "--sim", "--trace", str(trace))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    drawn = pbft("trace", str(trace), "-o", str(page))
    assert drawn.returncode == 0, drawn.stderr
    return trace, page


def chart_of(page: Path) -> ET.Element:
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<svg\b[^>]*id="chart".*?</svg>', text, flags=re.DOTALL)
    assert match is not None
    return ET.fromstring(match.group(0))


def classes(element: ET.Element) -> set[str]:
    return set((element.get("class") or "").split())


def test_the_equivocation_and_the_view_change_are_in_the_picture(run: tuple[Path, Path]) -> None:
    trace, page = run
    lines = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    header, events = lines[0], lines[1:]
    chart = chart_of(page)
    lanes = [e for e in chart.iter(f"{SVG}line") if "lane" in classes(e)]
    assert len(lanes) == len(header["replicas"]) + len(header["clients"])
    messages = [e for e in chart.iter(f"{SVG}line") if "m" in classes(e)]
    delivered = [e for e in messages if "stub" not in classes(e)]
    assert len(delivered) == sum(e["event"] == "receive" for e in events)
    # The traitor sent two different PRE-PREPAREs for one (view, seq): both stories glow.
    stories: dict[tuple[int, int], set[str]] = {}
    for event in events:
        if event["event"] == "send" and event["type"] == "PRE-PREPARE":
            stories.setdefault((event["view"], event["seq"]), set()).add(event["digest"])
    conflicting = {d for digests in stories.values() if len(digests) > 1 for d in digests}
    assert conflicting, "the scenario's primary should have equivocated"
    halos = [e for e in chart.iter(f"{SVG}line") if {"halo", "conflict"} <= classes(e)]
    assert {e.get("data-d") for e in halos} == conflicting
    assert sum("rej" in classes(e) for e in messages) == sum(
        e["event"] == "receive" and not e["accepted"] for e in events
    )
    bands = Counter(c for e in chart.iter() for c in classes(e) if c.startswith("band-"))
    assert bands["band-view-change"] >= 3 and bands["band-new-view"] >= 1
    assert "Linearizability" in page.read_text(encoding="utf-8")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run "
    "installs it when it runs as root)",
)


def chromium(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *mode,
        "--window-size=1400,900", page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_chromium
def test_chromium_draws_a_page_that_is_not_blank(run: tuple[Path, Path], tmp_path: Path) -> None:
    screenshot = tmp_path / "page.png"
    done = chromium(run[1], tmp_path, f"--screenshot={screenshot}")
    assert screenshot.exists(), done.stderr[-2000:]
    width, height, pixels = read_png(screenshot.read_bytes())
    assert (width, height) == (1400, 900)
    background = Counter(pixels).most_common(1)[0][0]
    drawn = sum(pixel != background for pixel in pixels)
    assert drawn > 0.02 * width * height, f"only {drawn} pixels differ from the background"
    assert len(set(pixels)) > 20  # the phases' colours, not one flat fill


@needs_chromium
def test_the_page_script_runs_and_follows_a_request(run: tuple[Path, Path], tmp_path: Path) -> None:
    """A click on a REQUEST arrow highlights its batch's phases and its replies."""
    probe = tmp_path / "probe.html"
    probe.write_text(
        run[1].read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = chromium(probe, tmp_path, "--dump-dom").stdout
    result = re.search(r'data-probe="([^"]*)"', dom)
    assert result is not None, dom[-2000:]
    report = json.loads(result.group(1).replace("&quot;", '"'))
    assert report["errors"] == []
    assert {"REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY"} <= set(report["followed"])
    assert report["zoomed"] > report["width"]
    assert report["rejected"].startswith(tuple(TYPES)) and "REJECTED: " in report["rejected"]
    assert report["conflict"].startswith("PRE-PREPARE") and "CONFLICTING" in report["conflict"]


PROBE = """<script>
const errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));});
const text=function(e){return window.pbftTipText(e);};
const request=document.querySelector('line.ph-request[data-b]');
request.dispatchEvent(new MouseEvent('click',{bubbles:true}));
const followed=Array.from(document.querySelectorAll('#chart line.m.hl')).map(function(e){
  return text(e).split(/\\s/)[0];});
const rejected=text(document.querySelector('line.m.rej'));
const conflict=text(document.querySelector('line.halo.conflict + line.m'));
const chart=document.getElementById('chart');const width=+chart.getAttribute('width');
document.getElementById('zoom-in').click();
document.body.setAttribute('data-probe',JSON.stringify({errors:errors,followed:followed,
  width:width,zoomed:+chart.getAttribute('width'),rejected:rejected,conflict:conflict}));
</script>"""


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB pixels) of a PNG: with Pillow when it is installed (it is not a test
    dependency), else decoded here (8-bit RGB or RGBA, slower)."""
    try:
        from PIL import Image
    except ImportError:
        return decode_png(data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    raw = image.tobytes()
    return image.width, image.height, [raw[i : i + 3] for i in range(0, len(raw), 3)]


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, width, height, channels = 8, b"", 0, 0, 0
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[9] in (2, 6), "8-bit RGB(A) expected"
            channels = 3 if body[9] == 2 else 4
        elif kind == b"IDAT":
            chunks += body
        position += 12 + length
    raw, stride = zlib.decompress(chunks), width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        unfilter(kind, line, previous, channels)
        rows.append(line)
        previous = line
    pixels = [bytes(row[x : x + 3]) for row in rows for x in range(0, stride, channels)]
    return width, height, pixels


def unfilter(kind: int, line: bytearray, previous: bytearray, channels: int) -> None:
    """Undo one row's PNG filter in place (RFC 2083, section 6)."""
    for x in range(len(line)):
        left = line[x - channels] if x >= channels else 0
        up, corner = previous[x], previous[x - channels] if x >= channels else 0
        if kind == 1:
            line[x] = (line[x] + left) & 0xFF
        elif kind == 2:
            line[x] = (line[x] + up) & 0xFF
        elif kind == 3:
            line[x] = (line[x] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - corner
            distances = (abs(estimate - left), abs(estimate - up), abs(estimate - corner))
            best = (left, up, corner)[distances.index(min(distances))]
            line[x] = (line[x] + best) & 0xFF
