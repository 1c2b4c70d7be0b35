"""A self-contained HTML report: inline CSS, inline SVG bar charts, a little inline JS; opens offline."""

from __future__ import annotations

import html
import math

from hybridexport.report.comparison import Comparison, Entry, LayerDelta
from hybridexport.report.text import fmt_ci, fmt_ms, fmt_pct, headline, how, units_text

CHART_LAYERS = 25  # layers per chart (the slowest, by max of base and new)
COLORS = {"base": "#9aa5b1", "regression": "#d64545", "improvement": "#2f9e44", "unchanged": "#4c6ef5"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#1f2933;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}
.meta{color:#616e7c;font-size:13px}.pass{color:#2f9e44}.fail{color:#d64545}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f7fa;cursor:pointer;user-select:none}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.v-regression{color:#d64545;font-weight:600}.v-improvement{color:#2f9e44;font-weight:600}.v-unchanged{color:#616e7c}.v-added{color:#b71c1c}.v-removed{color:#616e7c;text-decoration:line-through}
.tag{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;background:#e4e7eb;margin-left:4px}
.note{color:#616e7c;font-size:12px;margin:2px 0}
svg{display:block;margin:6px 0}svg text{font:11px system-ui,sans-serif;fill:#323f4b}
svg .lbl{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:10.5px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
details{margin:6px 0}summary{cursor:pointer;color:#3e4c59}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
"""

SCRIPT = """
(function(){
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var rows=Array.from(t.tBodies[0].rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
        rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;
          var nx=parseFloat(x),ny=parseFloat(y);var c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?c:-c;});
        rows.forEach(function(r){t.tBodies[0].appendChild(r);});
      });
    });
  });
  var only=document.getElementById('only-regressions');
  if(only){only.addEventListener('change',function(){
    document.querySelectorAll('section.entry').forEach(function(s){
      s.style.display=(only.checked&&s.dataset.verdict!=='regression')?'none':'';});});}
  document.documentElement.dataset.ready='1';
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _shorten(label: str, limit: int = 52) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1):]


def overview_svg(cmp: Comparison, width: int = 1100) -> str:
    """Diverging bars: end-to-end change per entry, with the threshold band shaded."""
    entries = cmp.entries
    if not entries:
        return ""
    label_w, row_h, pad = 330, 22, 30
    plot_w = width - label_w - 110
    span = max([abs(e.delta_pct) for e in entries if math.isfinite(e.delta_pct)] + [200 * cmp.threshold, 1.0])
    span *= 1.1
    x0 = label_w + plot_w / 2

    def x(pct: float) -> float:
        return x0 + (pct / span) * (plot_w / 2)

    height = pad + row_h * len(entries) + 10
    thr = 100 * max(cmp.threshold, cmp.measured_threshold)
    parts = [f'<svg class="chart overview" role="img" aria-label="end-to-end change per model and device" '
             f'width="100%" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    t_lo, t_hi = x(-100 * cmp.threshold), x(100 * cmp.threshold)
    parts.append(f'<rect x="{t_lo:.1f}" y="{pad - 6}" width="{t_hi - t_lo:.1f}" height="{height - pad}" fill="#f0f4f8"/>')
    if thr > 100 * cmp.threshold:
        m_lo, m_hi = x(-thr), x(thr)
        parts.append(f'<rect x="{m_lo:.1f}" y="{pad - 6}" width="{m_hi - m_lo:.1f}" height="{height - pad}" '
                     'fill="none" stroke="#cbd2d9" stroke-dasharray="3 3"/>')
    parts.append(f'<line x1="{x0:.1f}" y1="{pad - 8}" x2="{x0:.1f}" y2="{height}" stroke="#7b8794"/>')
    for pct in (-span / 1.1, span / 1.1):
        parts.append(f'<text x="{x(pct):.1f}" y="{pad - 12}" text-anchor="middle">{pct:+.0f}%</text>')
    for i, e in enumerate(entries):
        y = pad + i * row_h
        d = e.delta_pct if math.isfinite(e.delta_pct) else 0.0
        xa, xb = sorted((x0, x(d)))
        parts.append(f'<text class="lbl" x="{label_w - 8}" y="{y + 13}" text-anchor="end">{_e(_shorten(e.key, 48))}</text>')
        parts.append(f'<rect class="bar {e.verdict}" x="{xa:.1f}" y="{y + 3}" width="{max(xb - xa, 1):.1f}" height="14" '
                     f'fill="{COLORS[e.verdict]}"><title>{_e(e.key)}: {fmt_pct(e.delta_pct)} ({e.verdict})</title></rect>')
        parts.append(f'<text x="{(xb if d >= 0 else xa) + (4 if d >= 0 else -4):.1f}" y="{y + 14}" '
                     f'text-anchor="{"start" if d >= 0 else "end"}">{fmt_pct(e.delta_pct)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def layer_chart_svg(e: Entry, limit: int = CHART_LAYERS, width: int = 1100) -> str:
    """Paired horizontal bars (base, new) for the slowest layers of one entry."""
    layers = sorted(e.layers, key=lambda layer: max(layer.base_ms or 0, layer.new_ms or 0), reverse=True)[:limit]
    if not layers:
        return ""
    label_w, group_h, pad = 380, 26, 8
    plot_w = width - label_w - 200
    vmax = max(max(layer.base_ms or 0, layer.new_ms or 0) for layer in layers) or 1.0
    height = pad + group_h * len(layers) + 4
    parts = [f'<svg class="chart layers" role="img" aria-label="per-layer latency, base and new: {_e(e.key)}" '
             f'width="100%" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i, layer in enumerate(layers):
        y = pad + i * group_h
        color = COLORS[layer.verdict] if layer.status == "matched" else (
            COLORS["regression"] if layer.status == "added" else COLORS["base"])
        tag = {"added": " [added]", "removed": " [removed]"}.get(layer.status, "") + (" [moved]" if layer.moved else "")
        parts.append(f'<text class="lbl" x="{label_w - 8}" y="{y + 14}" text-anchor="end">'
                     f'<title>{_e(layer.module)}</title>{_e(_shorten(layer.module) + tag)}</text>')
        for j, (value, fill, name) in enumerate(((layer.base_ms, COLORS["base"], "base"), (layer.new_ms, color, "new"))):
            if value is None:
                continue
            w = max(plot_w * value / vmax, 0.5)
            parts.append(f'<rect class="bar {name}" x="{label_w}" y="{y + 3 + j * 10}" width="{w:.1f}" height="9" '
                         f'fill="{fill}"><title>{_e(layer.module)} {name}: {fmt_ms(value)} ms</title></rect>')
        delta = f"{fmt_ms(layer.base_ms)} → {fmt_ms(layer.new_ms)} ms"
        if layer.delta_pct is not None:
            delta += f" ({fmt_pct(layer.delta_pct)})"
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 15}">{_e(delta)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _layer_rows(layers: list[LayerDelta]) -> str:
    rows = []
    for layer in layers:
        status = layer.status + (", moved" if layer.moved else "")
        rows.append(
            f'<tr><td><code>{_e(layer.module)}</code></td><td>{_e(", ".join(layer.op_types[:4]))}</td>'
            f'<td class="num" data-v="{_num(layer.base_ms)}">{fmt_ms(layer.base_ms)}</td>'
            f'<td class="num" data-v="{_num(layer.new_ms)}">{fmt_ms(layer.new_ms)}</td>'
            f'<td class="num" data-v="{_num(layer.delta_ms)}">{layer.delta_ms:+.3f}</td>'
            f'<td class="num" data-v="{_num(layer.delta_pct)}">{fmt_pct(layer.delta_pct)}</td>'
            f'<td>{_e(units_text(layer.base_units, layer.new_units))}</td><td>{_e(status)}</td>'
            f'<td class="v-{layer.verdict}">{_e(layer.verdict)}</td></tr>'
        )
    return "".join(rows)


def _entry_section(e: Entry, top: int) -> str:
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in dict.fromkeys((e.new.obtained, e.new.runner, e.method)) if t)
    if e.informational:
        tags += '<span class="tag">informational</span>'
    out = [f'<section class="entry" data-verdict="{_e(e.verdict)}" id="{_e(e.key)}">',
           f'<h2>{_e(e.model)} @ {_e(e.device)} ({_e(e.format)}) — <span class="v-{e.verdict}">{_e(e.verdict)}</span> '
           f'{_e(fmt_pct(e.delta_pct))}{tags}</h2>',
           f'<p class="meta">{_e(fmt_ms(e.base_ms))} → {_e(fmt_ms(e.new_ms))} ms {_e(fmt_ci(e))} · {_e(how(e))}</p>']
    out += [f'<p class="note">{_e(n)}</p>' for n in e.notes]
    out.append(f'<div class="legend"><span style="background:{COLORS["base"]}"></span>base'
               f'<span style="background:{COLORS["unchanged"]}"></span>new'
               f'<span style="background:{COLORS["regression"]}"></span>new, slower'
               f'<span style="background:{COLORS["improvement"]}"></span>new, faster</div>')
    out.append(layer_chart_svg(e))
    top_layers = e.top_regressed(top)
    if top_layers:
        out.append("<h3>Top regressed layers</h3>")
        out.append(_layer_table(top_layers, sortable=False))
    out.append(f"<details><summary>All {len(e.layers)} layers</summary>{_layer_table(e.layers)}</details>")
    out.append("</section>")
    return "".join(out)


def _layer_table(layers: list[LayerDelta], sortable: bool = True) -> str:
    cls = ' class="sortable"' if sortable else ""
    head = ("<tr><th>layer (nn.Module)</th><th>ops</th><th class=num>base ms</th><th class=num>new ms</th>"
            "<th class=num>Δ ms</th><th class=num>Δ%</th><th>units</th><th>status</th><th>verdict</th></tr>")
    return f"<table{cls}><thead>{head}</thead><tbody>{_layer_rows(layers)}</tbody></table>"


def render_html(cmp: Comparison, top: int = 5, title: str = "hybridexport latency report") -> str:
    gating = bool(cmp.gating_regressions())
    rows = []
    for e in cmp.entries:
        verdict = e.verdict + (" (informational)" if e.informational and e.verdict != "unchanged" else "")
        rows.append(
            f'<tr><td><a href="#{_e(e.key)}">{_e(e.model)}</a></td><td>{_e(e.device)}</td><td>{_e(e.format)}</td>'
            f'<td class="num" data-v="{_num(e.base_ms)}">{fmt_ms(e.base_ms)}</td>'
            f'<td class="num" data-v="{_num(e.new_ms)}">{fmt_ms(e.new_ms)}</td>'
            f'<td class="num" data-v="{_num(e.delta_pct)}">{fmt_pct(e.delta_pct)}</td><td>{_e(fmt_ci(e))}</td>'
            f'<td class="v-{e.verdict}">{_e(verdict)}</td><td>{_e(how(e))}</td></tr>'
        )
    for m in cmp.missing:
        rows.append(f"<tr><td>{_e(m.model)}</td><td>{_e(m.device)}</td><td>{_e(m.format)}</td><td></td><td></td><td></td>"
                    f"<td></td><td>{_e(m.label)}</td><td>{_e(m.reason)}</td></tr>")
    thr = f"threshold {100 * cmp.threshold:.0f}%"
    if cmp.measured_threshold != cmp.threshold:
        thr += f", measured {100 * cmp.measured_threshold:.0f}%"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="{"fail" if gating else "pass"}"><strong>{_e(headline(cmp))}</strong></p>',
        f'<p class="meta">base <code>{_e(cmp.base_source)}</code> → new <code>{_e(cmp.new_source)}</code> · {_e(thr)} · '
        f'measured: {_e(" and ".join(cmp.statistic.split("+")))} of raw timings, {100 * cmp.confidence:.0f}% '
        f'bootstrap interval · '
        f'{_e(cmp.created)}</p>',
        "<h2>End-to-end change</h2>",
        overview_svg(cmp),
        '<table class="sortable summary"><thead><tr><th>model</th><th>device</th><th>format</th><th class=num>base ms</th>'
        "<th class=num>new ms</th><th class=num>Δ</th><th>interval</th><th>verdict</th><th>how</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>",
        '<label><input type="checkbox" id="only-regressions"> show only regressions</label>',
    ]
    body += [_entry_section(e, top) for e in cmp.entries]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
