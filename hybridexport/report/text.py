"""Terminal rendering of a Comparison (rich tables) and small formatting helpers shared by renderers."""

from __future__ import annotations

import io
import math

from rich.console import Console
from rich.table import Table

from hybridexport.console import plain
from hybridexport.report.comparison import Comparison, Entry

VERDICT_STYLE = {"regression": "bold red", "improvement": "green", "unchanged": "dim"}


def fmt_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def fmt_pct(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.1f}%" if signed else f"{value:.1f}%"


def fmt_ci(entry: Entry) -> str:
    """The ratio interval as a percent-change interval, e.g. ``[+3.1%, +8.0%]``."""
    if not entry.ci:
        return ""
    lo, hi = entry.ci
    return f"[{100 * (lo - 1):+.1f}%, {100 * (hi - 1):+.1f}%]"


def how(entry: Entry) -> str:
    """How the verdict was reached, in a few words."""
    obtained = entry.new.obtained if entry.base.obtained == entry.new.obtained else (
        f"{entry.base.obtained}→{entry.new.obtained}")
    if entry.method == "bootstrap":
        conf = f"{100 * (entry.confidence or 0):.0f}% CI"
        p = f", p={entry.p_value:.2g}" if entry.p_value is not None and math.isfinite(entry.p_value) else ""
        text = f"{obtained} {entry.statistic}, n={entry.base.total_ms.n}/{entry.new.total_ms.n}, {conf}{p}"
    else:
        text = f"{obtained}, threshold"
    text += f", ±{100 * entry.threshold:.0f}%"
    if entry.informational:
        text += ", informational"
    return text


def headline(cmp: Comparison) -> str:
    s = cmp.summary()
    parts = [f"{s['regression']} regression(s)", f"{s['improvement']} improvement(s)", f"{s['unchanged']} unchanged"]
    if s["missing"]:
        parts.append(f"{s['missing']} missing")
    gating = len(cmp.gating_regressions())
    status = "FAIL" if gating else "PASS"
    return f"{status}: " + ", ".join(parts)


def render_console(cmp: Comparison, console: Console, top: int = 5) -> None:
    """Print the comparison as rich tables."""
    console.print(f"[bold]latency comparison[/] base={plain(cmp.base_source)} new={plain(cmp.new_source)}",
                  highlight=False)
    table = Table(show_lines=False)
    for col, justify in (("model", "left"), ("device", "left"), ("format", "left"), ("base ms", "right"),
                         ("new ms", "right"), ("Δ", "right"), ("interval", "right"), ("verdict", "left"),
                         ("how", "left")):
        table.add_column(col, justify=justify)
    for e in cmp.entries:
        verdict = e.verdict + (" (info)" if e.informational and e.verdict != "unchanged" else "")
        table.add_row(plain(e.model), plain(e.device), plain(e.format), fmt_ms(e.base_ms), fmt_ms(e.new_ms),
                      fmt_pct(e.delta_pct), fmt_ci(e), f"[{VERDICT_STYLE[e.verdict]}]{verdict}[/]", plain(how(e)))
    for m in cmp.missing:
        table.add_row(plain(m.model), plain(m.device), plain(m.format), "-", "-", "-", "", "[yellow]missing[/]",
                      plain(f"{m.label}: {m.reason}"))
    console.print(table)
    for e in cmp.entries:
        layers = e.top_regressed(top) if e.verdict == "regression" else []
        if layers:
            lt = Table(title=f"top regressed layers: {plain(e.key)}")
            for col in ("layer", "ops", "base ms", "new ms", "Δ ms", "Δ%", "units"):
                lt.add_column(col, justify="right" if "ms" in col or "%" in col else "left")
            for layer in layers:
                lt.add_row(plain(layer.module), plain(",".join(layer.op_types[:3])), fmt_ms(layer.base_ms),
                           fmt_ms(layer.new_ms), f"{layer.delta_ms:+.3f}", fmt_pct(layer.delta_pct),
                           plain(units_text(layer.base_units, layer.new_units)))
            console.print(lt)
        for note in e.notes:
            console.print(f"  note {plain(e.key)}: {plain(note)}", highlight=False)
        extra = []
        if e.added():
            extra.append(f"{len(e.added())} added")
        if e.removed():
            extra.append(f"{len(e.removed())} removed")
        if e.moved():
            extra.append(f"{len(e.moved())} moved: " + ", ".join(
                f"{m.module} {units_text(m.base_units, m.new_units)}" for m in e.moved()[:5]))
        if extra:
            console.print(f"  layers {plain(e.key)}: " + plain("; ".join(extra)), highlight=False)
    console.print(headline(cmp), style="bold red" if cmp.gating_regressions() else "bold green", highlight=False)


def units_text(base: list[str], new: list[str]) -> str:
    b, n = "+".join(base), "+".join(new)
    if not b or not n or b == n:
        return b or n or "-"
    return f"{b} → {n}"


def render_text(cmp: Comparison, top: int = 5, width: int = 140) -> str:
    """The console rendering as plain text (for ``--format text --out FILE``)."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    render_console(cmp, console, top=top)
    return console.export_text()
