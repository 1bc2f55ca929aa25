"""The trace page's chrome: its header (run, counts, controls, legend), inline style sheet and
script, and the phase palette they share.

Kept apart from :mod:`pbft.trace.render` so that the diagram's markup code reads on its own.
The page fetches nothing: this CSS and this script are written into it. The script does four small
things, all on the static SVG the renderer wrote: a tooltip with the fields of the message or
event under the pointer (one JSON document, indexed by each element's ``data-i``),
following a request (a click highlights every element that shares a digest with it, through
``data-d``, its own digest, and ``data-b``, the digests it belongs to: batch, request),
zoom (buttons and Ctrl+wheel scale the SVG), and hiding phases (the legend's check boxes and
the "collapse" box, which hides the repeated PREPARE and COMMIT arrows).
"""

from __future__ import annotations

import html
from typing import Any

from pbft.trace.layout import Layout

#: Phase key -> (legend label, colour). Red is kept for traitors, conflicts and violations.
PHASES: dict[str, tuple[str, str]] = {
    "request": ("request", "#1f77b4"),
    "pre-prepare": ("pre-prepare", "#7b4fc9"),
    "prepare": ("prepare", "#2ca02c"),
    "commit": ("commit", "#ff7f0e"),
    "reply": ("reply", "#17a2b8"),
    "checkpoint": ("checkpoint", "#8c564b"),
    "view-change": ("view-change", "#e377c2"),
    "new-view": ("new-view", "#9a9a00"),
    "fetch-state": ("fetch / state", "#7f7f7f"),
    "other": ("other", "#444444"),
}


def style_sheet() -> str:
    phase_rules = "\n".join(
        f".ph-{key}{{stroke:{colour};marker-end:url(#arrow-{key})}}"
        f".sw-{key}{{background:{colour}}}"
        f".hide-{key} .ph-{key}{{display:none}}"
        for key, (_, colour) in PHASES.items()
    )
    return CSS + phase_rules


def page_header(
    header: dict[str, Any], layout: Layout, title: str, seq_from: int | None, seq_to: int | None
) -> str:
    delivered = sum(1 for a in layout.arrows if a.delivered)
    rejected = sum(1 for a in layout.arrows if a.delivered and not a.accepted)
    lost = len(layout.arrows) - delivered
    traitors = ", ".join(f"{node}: {spec}" for node, spec in layout.traitors.items()) or "none"
    span = f"{layout.row_t[-1]:g} ms" if layout.row_t else "empty"
    seqs = ""
    if seq_from is not None or seq_to is not None:
        seqs = f" &middot; seq {seq_from if seq_from is not None else '…'} to "
        seqs += f"{seq_to if seq_to is not None else '…'}"
    meta = (
        f"n = <b>{header.get('n')}</b>, f = <b>{header.get('f')}</b> &middot; "
        f"traitors: <b>{html.escape(traitors)}</b> &middot; {delivered} messages delivered, "
        f"{rejected} rejected, {lost} lost &middot; {span}{seqs} &middot; "
        f"pbft {html.escape(str(header.get('pbft_version', '?')))}"
    )
    violations = "".join(
        f"<div>&#9888; <b>{html.escape(str(v.get('checker')))}</b>: "
        f"{html.escape(str(v.get('detail', '')))}</div>"
        for v in layout.violations
    )
    if violations:
        violations = f'<div class="violations">{violations}</div>'
    legend = "".join(
        f'<label><input type="checkbox" data-phase="{key}" checked>'
        f'<span class="swatch sw-{key}"></span>{label}</label>'
        for key, (label, _) in PHASES.items()
    )
    return (
        f"<header><h1>{html.escape(title)}</h1><div class=meta>{meta}</div>{violations}"
        '<div class="controls"><span><button id="zoom-out">&minus;</button> '
        '<span id="zoom">100%</span> <button id="zoom-in">+</button> '
        '<button id="zoom-fit">fit</button> <button id="zoom-reset">1:1</button></span>'
        '<label><input type="checkbox" id="collapse"> collapse PREPARE/COMMIT</label>'
        f'<span class="legend">{legend}</span></div><div class="controls">'
        '<span class="key">- - &#10005; rejected (reason on hover)</span>'
        '<span class="key">&middot;&middot;&#9675; lost on the way</span>'
        '<span class="key" style="color:#d62728">&#9644; conflicting PRE-PREPAREs</span>'
        '<span class="key" style="color:#ff00aa">&#9644; forged by a traitor</span>'
        '<span class="key">&#9675; prepared &#9679; committed &#9632; executed</span>'
        '<span class="key"><span style="color:#d62728">&#9650;</span> traitor '
        '<span style="color:#e0a000">&#9650;</span> network fault</span>'
        '<span class="key">click a message: follow its request; Ctrl+wheel: zoom</span>'
        "</div></header>"
    )


CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;
background:#fff}
header{padding:10px 16px 6px;border-bottom:1px solid #ddd;background:#fafafa}
h1{font-size:17px;margin:0 0 4px}
.meta{color:#555}
.meta b{color:#222}
.violations{margin:6px 0 0;padding:6px 10px;background:#fdecea;border:1px solid #d62728;
color:#8b0000;border-radius:4px}
.controls{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;margin-top:6px}
.controls button{font:inherit;padding:1px 8px}
.legend label{white-space:nowrap;cursor:pointer;margin-right:8px}
.swatch{display:inline-block;width:18px;height:4px;vertical-align:middle;margin-right:3px}
.key{display:inline-block;margin-right:10px;color:#444}
.scroll{overflow:auto;max-height:calc(100vh - 150px);position:relative}
.lanes{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ccc}
svg text{font:11px system-ui,sans-serif;fill:#333}
.lane{stroke:#bbb;stroke-width:1}
.lane-bg.traitor{fill:#fdecea}
.lane-bg{fill:#fbfbfb}
.lane-name{font-weight:600;font-size:12px}
.traitor-name{fill:#c00000;font-weight:700}
.traitor-spec{fill:#c00000;font-size:10px}
.tick{fill:#888;font-size:10px}
.gridline{stroke:#eee}
.m{stroke-width:1.3;fill:none}
.m.rej{stroke-dasharray:4 3;marker-end:url(#cross)!important}
.m.stub{stroke-dasharray:2 2;marker-end:url(#lost)!important}
.halo{fill:none}
.halo.conflict{stroke:#d62728;stroke-width:4;opacity:.75}
.halo.forged{stroke:#ff00aa;stroke-width:10;opacity:.3}
.band-view-change{fill:#e377c2;opacity:.16}
.band-crash{fill:url(#hatch)}
.band-partition{fill:#6a51a3;opacity:.10}
.band-checkpoint{stroke:#8c564b;stroke-width:3;opacity:.7}
.band-new-view{stroke:#9a9a00;stroke-width:1.5;stroke-dasharray:6 3}
.nv-label{fill:#6b6b00;font-weight:600}
.ev{stroke:#333;stroke-width:.8}
.ev-prepared{fill:#fff}
.ev-committed{fill:#ff7f0e}
.ev-executed{fill:#333}
.ev-fault{fill:#d62728;stroke:none}
.ev-fault.network{fill:#e0a000}
.ev-other{fill:#999}
.ev.violating{fill:#d62728;stroke:#8b0000;stroke-width:2}
.op{fill:#1f77b4;opacity:.25;stroke:#1f77b4}
.op.pending{fill:none;stroke-dasharray:3 2}
.following .m:not(.hl),.following .halo:not(.hl),.following .ev:not(.hl){opacity:.08}
.hl{stroke-width:3}
#tip{position:fixed;display:none;pointer-events:none;background:#222;color:#fff;padding:5px 8px;
border-radius:4px;font:12px/1.35 ui-monospace,monospace;white-space:pre;z-index:9;
max-width:560px;overflow:hidden}
.appendix{padding:8px 16px;border-top:1px solid #ddd}
"""

SCRIPT = """
(function(){
const tips=JSON.parse(document.getElementById('tips').textContent);
const tip=document.getElementById('tip');
const ms=function(t){return t===null?'?':t+' ms';};
// An arrow's tip is a compact list (see pbft.trace.render.Tips); spell it out.
function arrowText(a,el){
  const n=tips.names;
  let head=n[a[0]];
  if(a[5]!==null)head+='  view '+a[5];
  if(a[6]!==null)head+='  seq '+a[6];
  const lines=[head,n[a[1]]+' -> '+n[a[2]]];
  if(el.getAttribute('data-d'))lines.push('digest '+el.getAttribute('data-d'));
  lines.push(a[4]===null?'sent '+ms(a[3])+', never received (lost or cut)':
    'sent '+ms(a[3])+', received '+ms(a[4]));
  if(a[7])lines.push('frame '+a[7]);
  if(a[8]!==null)lines.push('REJECTED: '+n[a[8]]);
  if(a[9]&1)lines.push('FORGED or rewritten by a traitor');
  if(a[9]&2)lines.push('CONFLICTING: another PRE-PREPARE for view '+a[5]+', seq '+a[6]);
  return lines.join('\\n');
}
function tipText(el){
  const item=tips.items[+el.getAttribute('data-i')];
  return typeof item==='string'?item:arrowText(item,el);
}
window.pbftTipText=tipText;
const chart=document.getElementById('chart');
const head=document.getElementById('lanes');
let zoom=1;
document.addEventListener('mousemove',function(e){
  const el=e.target.closest?e.target.closest('[data-i]'):null;
  if(!el){tip.style.display='none';return;}
  tip.textContent=tipText(el);
  tip.style.display='block';
  const x=Math.min(e.clientX+14,window.innerWidth-tip.offsetWidth-4);
  const y=Math.min(e.clientY+14,window.innerHeight-tip.offsetHeight-4);
  tip.style.left=x+'px';tip.style.top=y+'px';
});
function tokens(el){
  return [el.getAttribute('data-d')].concat((el.getAttribute('data-b')||'').split(' '))
    .filter(Boolean);
}
chart.addEventListener('click',function(e){
  const el=e.target.closest('[data-d],[data-b]');
  chart.querySelectorAll('.hl').forEach(function(h){h.classList.remove('hl');});
  if(!el){chart.classList.remove('following');return;}
  // A request's digest leads to its batches, a batch's to its requests, a request's to its
  // replies: a few rounds over the arrows reach all three phases and the replies.
  const keys=new Set(tokens(el));
  for(let round=0;round<3;round++){
    const before=keys.size;
    Array.from(keys).forEach(function(k){
      chart.querySelectorAll('[data-d="'+k+'"],[data-b~="'+k+'"]').forEach(function(h){
        h.classList.add('hl');
        if(h.classList.contains('m'))tokens(h).forEach(function(t){keys.add(t);});
      });
    });
    if(keys.size===before)break;
  }
  chart.classList.add('following');
});
function scale(svg){
  svg.setAttribute('width',Math.round(+svg.dataset.w*zoom));
  svg.setAttribute('height',Math.round(+svg.dataset.h*zoom));
}
function setZoom(z){zoom=Math.max(0.05,Math.min(8,z));scale(chart);scale(head);
  document.getElementById('zoom').textContent=Math.round(zoom*100)+'%';}
document.getElementById('zoom-in').onclick=function(){setZoom(zoom*1.25);};
document.getElementById('zoom-out').onclick=function(){setZoom(zoom/1.25);};
document.getElementById('zoom-fit').onclick=function(){
  const box=document.querySelector('.scroll');
  setZoom(Math.min(box.clientWidth/+chart.dataset.w,box.clientHeight/+chart.dataset.h));};
document.getElementById('zoom-reset').onclick=function(){setZoom(1);};
document.querySelector('.scroll').addEventListener('wheel',function(e){
  if(!e.ctrlKey)return;e.preventDefault();setZoom(zoom*(e.deltaY<0?1.1:1/1.1));
},{passive:false});
function phaseBox(box){document.body.classList.toggle('hide-'+box.dataset.phase,!box.checked);}
document.querySelectorAll('input[data-phase]').forEach(function(box){
  box.addEventListener('change',function(){phaseBox(box);});phaseBox(box);});
const collapse=document.getElementById('collapse');
collapse.addEventListener('change',function(){
  ['prepare','commit'].forEach(function(p){
    const box=document.querySelector('input[data-phase="'+p+'"]');
    box.checked=!collapse.checked;phaseBox(box);});
});
})();
"""
