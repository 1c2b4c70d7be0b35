"""Markdown report for a CI job summary or a PR comment: one row per model × device, top regressed layers."""

from __future__ import annotations

import re

from hybridexport.console import one_line
from hybridexport.report.comparison import Comparison, Entry
from hybridexport.report.text import fmt_ci, fmt_ms, fmt_pct, headline, how, units_text

ICON = {"regression": "🔴", "improvement": "🟢", "unchanged": "⚪"}
MARKER = "<!-- hybridexport-latency-report -->"  # lets a CI bot find and update its previous comment


def _stat_text(cmp: Comparison) -> str:
    parts = cmp.statistic.split("+")
    return parts[0] if len(parts) == 1 else " and ".join(parts) + " must both show the change"


#: characters with a meaning in GitHub Markdown that a name may hold: backslash-escaped (CommonMark shows
#: an escaped ASCII punctuation character as itself); ``<``, ``>`` and ``&`` become entities, so no HTML
#: from a name or message ever reaches the page
_MD_SPECIAL = set("\\`*_[]|~#!:")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def md_text(text: object) -> str:
    """Outside text (a model name, a note, a failure reason) as literal Markdown prose on one line."""
    return "".join(_ENTITIES.get(c) or ("\\" + c if c in _MD_SPECIAL else c) for c in one_line(text))


def md_code(text: object, cell: bool = False) -> str:
    """Outside text (a layer path, a file name) as a code span: shown verbatim, never HTML or Markdown. The
    fence is longer than any run of backticks inside. In a table ``cell`` a name with ``|`` (GFM splits cells
    on it even inside code spans) becomes ``<code>`` around escaped prose instead."""
    s = one_line(text)
    if not s:
        return "*(empty)*"
    if cell and "|" in s:
        return f"<code>{md_text(s)}</code>"
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    if s.startswith("`") or s.endswith("`"):
        s = f" {s} "
    return f"{fence}{s}{fence}"


def _verdict(e: Entry) -> str:
    text = f"{ICON[e.verdict]} {e.verdict}"
    if e.informational and e.verdict != "unchanged":
        text += " (informational)"
    return text


def _layer_table(e: Entry, top: int) -> list[str]:
    lines = ["| layer (nn.Module) | ops | base ms | new ms | Δ ms | Δ% | units |", "|---|---|---:|---:|---:|---:|---|"]
    for layer in e.top_regressed(top):
        name = md_code(layer.module + (" *(added)*" if layer.status == "added" else ""), cell=True)
        lines.append(
            f"| {name} | {md_text(', '.join(layer.op_types[:3]))} | {fmt_ms(layer.base_ms)} | "
            f"{fmt_ms(layer.new_ms)} | {layer.delta_ms:+.3f} | {fmt_pct(layer.delta_pct)} | "
            f"{md_text(units_text(layer.base_units, layer.new_units))} |"
        )
    return lines


def render_markdown(cmp: Comparison, top: int = 5) -> str:
    gating = cmp.gating_regressions()
    icon = "❌" if gating else "✅"
    out = [MARKER, f"## {icon} Latency: {headline(cmp)}", ""]
    thr = f"threshold {100 * cmp.threshold:.0f}%"
    if cmp.measured_threshold != cmp.threshold:
        thr += f" (measured: {100 * cmp.measured_threshold:.0f}%)"
    out.append(f"base {md_code(cmp.base_source)} → new {md_code(cmp.new_source)} · {thr} · measured runs: "
               f"{_stat_text(cmp)} of the raw timings, each clearing a {100 * cmp.confidence:.0f}% bootstrap interval")
    out.append("")
    out.append("| model | device | format | base ms | new ms | Δ | interval | verdict | how |")
    out.append("|---|---|---|---:|---:|---:|---|---|---|")
    for e in cmp.entries:
        out.append(
            f"| {md_text(e.model)} | {md_text(e.device)} | {md_text(e.format)} | {fmt_ms(e.base_ms)} | {fmt_ms(e.new_ms)} | "
            f"**{fmt_pct(e.delta_pct)}** | {fmt_ci(e)} | {_verdict(e)} | {md_text(how(e))} |"
        )
    for m in cmp.missing:
        out.append(f"| {md_text(m.model)} | {md_text(m.device)} | {md_text(m.format)} | - | - | - | | ⚠️ {m.label} | "
                   f"{md_text(m.reason)} |")
    out.append("")
    regressed = [e for e in cmp.entries if e.verdict == "regression" and e.top_regressed(top)]
    if regressed:
        out.append("### Top regressed layers")
        for e in regressed:
            out += ["", f"**{md_text(e.model)} @ {md_text(e.device)} ({md_text(e.format)})** {fmt_pct(e.delta_pct)}", ""]
            out += _layer_table(e, top)
        out.append("")
    others = [e for e in cmp.entries if e.verdict != "regression" and e.top_regressed(top)]
    if others:
        out += ["<details><summary>Slower layers in entries without a regression verdict</summary>", ""]
        for e in others:
            out += [f"**{md_text(e.model)} @ {md_text(e.device)} ({md_text(e.format)})** {fmt_pct(e.delta_pct)}", ""]
            out += _layer_table(e, top) + [""]
        out += ["</details>", ""]
    changes = []
    for e in cmp.entries:
        parts = []
        if e.added():
            parts.append("added " + ", ".join(md_code(x.module) for x in e.added()[:8])
                         + (f" (+{len(e.added()) - 8} more)" if len(e.added()) > 8 else ""))
        if e.removed():
            parts.append("removed " + ", ".join(md_code(x.module) for x in e.removed()[:8])
                         + (f" (+{len(e.removed()) - 8} more)" if len(e.removed()) > 8 else ""))
        if e.moved():
            parts.append("moved " + ", ".join(f"{md_code(x.module)} {md_text(units_text(x.base_units, x.new_units))}"
                                              for x in e.moved()[:8]))
        if parts:
            changes.append(f"- **{md_text(e.key)}**: " + "; ".join(parts))
    if changes:
        out += ["### Layer changes", ""] + changes + [""]
    notes = [f"- {md_text(e.key)}: {md_text(n)}" for e in cmp.entries for n in e.notes]
    if notes:
        out += ["<details><summary>Notes</summary>", ""] + notes + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"
