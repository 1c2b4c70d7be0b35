"""Markdown report for a CI job summary or a PR comment: one row per model × device, top regressed layers."""

from __future__ import annotations

from hybridexport.report.comparison import Comparison, Entry
from hybridexport.report.text import fmt_ci, fmt_ms, fmt_pct, headline, how, units_text

ICON = {"regression": "🔴", "improvement": "🟢", "unchanged": "⚪"}
MARKER = "<!-- hybridexport-latency-report -->"  # lets a CI bot find and update its previous comment


def _stat_text(cmp: Comparison) -> str:
    parts = cmp.statistic.split("+")
    return parts[0] if len(parts) == 1 else " and ".join(parts) + " must both show the change"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict(e: Entry) -> str:
    text = f"{ICON[e.verdict]} {e.verdict}"
    if e.informational and e.verdict != "unchanged":
        text += " (informational)"
    return text


def _layer_table(e: Entry, top: int) -> list[str]:
    lines = ["| layer (nn.Module) | ops | base ms | new ms | Δ ms | Δ% | units |", "|---|---|---:|---:|---:|---:|---|"]
    for layer in e.top_regressed(top):
        name = layer.module + (" *(added)*" if layer.status == "added" else "")
        lines.append(
            f"| `{_cell(name)}` | {_cell(', '.join(layer.op_types[:3]))} | {fmt_ms(layer.base_ms)} | "
            f"{fmt_ms(layer.new_ms)} | {layer.delta_ms:+.3f} | {fmt_pct(layer.delta_pct)} | "
            f"{_cell(units_text(layer.base_units, layer.new_units))} |"
        )
    return lines


def render_markdown(cmp: Comparison, top: int = 5) -> str:
    gating = cmp.gating_regressions()
    icon = "❌" if gating else "✅"
    out = [MARKER, f"## {icon} Latency: {headline(cmp)}", ""]
    thr = f"threshold {100 * cmp.threshold:.0f}%"
    if cmp.measured_threshold != cmp.threshold:
        thr += f" (measured: {100 * cmp.measured_threshold:.0f}%)"
    out.append(f"base `{_cell(cmp.base_source)}` → new `{_cell(cmp.new_source)}` · {thr} · measured runs: "
               f"{_stat_text(cmp)} of the raw timings, each clearing a {100 * cmp.confidence:.0f}% bootstrap interval")
    out.append("")
    out.append("| model | device | format | base ms | new ms | Δ | interval | verdict | how |")
    out.append("|---|---|---|---:|---:|---:|---|---|---|")
    for e in cmp.entries:
        out.append(
            f"| {_cell(e.model)} | {_cell(e.device)} | {_cell(e.format)} | {fmt_ms(e.base_ms)} | {fmt_ms(e.new_ms)} | "
            f"**{fmt_pct(e.delta_pct)}** | {fmt_ci(e)} | {_verdict(e)} | {_cell(how(e))} |"
        )
    for m in cmp.missing:
        out.append(f"| {_cell(m.model)} | {_cell(m.device)} | {_cell(m.format)} | - | - | - | | ⚠️ {m.label} | "
                   f"{_cell(m.reason)} |")
    out.append("")
    regressed = [e for e in cmp.entries if e.verdict == "regression" and e.top_regressed(top)]
    if regressed:
        out.append("### Top regressed layers")
        for e in regressed:
            out += ["", f"**{_cell(e.model)} @ {_cell(e.device)} ({_cell(e.format)})** {fmt_pct(e.delta_pct)}", ""]
            out += _layer_table(e, top)
        out.append("")
    others = [e for e in cmp.entries if e.verdict != "regression" and e.top_regressed(top)]
    if others:
        out += ["<details><summary>Slower layers in entries without a regression verdict</summary>", ""]
        for e in others:
            out += [f"**{_cell(e.model)} @ {_cell(e.device)} ({_cell(e.format)})** {fmt_pct(e.delta_pct)}", ""]
            out += _layer_table(e, top) + [""]
        out += ["</details>", ""]
    changes = []
    for e in cmp.entries:
        parts = []
        if e.added():
            parts.append("added " + ", ".join(f"`{_cell(x.module)}`" for x in e.added()[:8])
                         + (f" (+{len(e.added()) - 8} more)" if len(e.added()) > 8 else ""))
        if e.removed():
            parts.append("removed " + ", ".join(f"`{_cell(x.module)}`" for x in e.removed()[:8])
                         + (f" (+{len(e.removed()) - 8} more)" if len(e.removed()) > 8 else ""))
        if e.moved():
            parts.append("moved " + ", ".join(f"`{_cell(x.module)}` {_cell(units_text(x.base_units, x.new_units))}"
                                              for x in e.moved()[:8]))
        if parts:
            changes.append(f"- **{_cell(e.key)}**: " + "; ".join(parts))
    if changes:
        out += ["### Layer changes", ""] + changes + [""]
    notes = [f"- {_cell(e.key)}: {_cell(n)}" for e in cmp.entries for n in e.notes]
    if notes:
        out += ["<details><summary>Notes</summary>", ""] + notes + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"
