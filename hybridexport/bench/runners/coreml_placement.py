"""Placement: where Core ML's compute plan puts each op, beside where the static Neural Engine rules said it would.

Static verdicts come from the artifact's op table (``OpRow.findings``: ``"<severity>:<rule>"``) or, for a
package without one, from :func:`hybridexport.analyze.ane_rules.ane_report` on the program read back from
it. An op with no ``off-ane:`` finding is predicted to run on the Neural Engine. The compute plan gives
each op's preferred device (``ane``, ``gpu``, ``cpu``), the devices that support it and its estimated cost.

A disagreement is an op the rules put on the Neural Engine that Core ML runs elsewhere, or one the
rules put off it that Core ML runs there. Comparing needs compute units that include the Neural
Engine (``ALL``, ``CPU_AND_NE``); with others the counts are shown and nothing is compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNITS = ("ane", "gpu", "cpu")
WITH_NE = ("ALL", "CPU_AND_NE")


@dataclass
class PlannedOp:
    """One op of the compute plan."""

    name: str  # its first output's name (what the op table and the Profile rows call it)
    op_type: str
    unit: str  # preferred device: "ane" | "gpu" | "cpu"
    supported: list[str] = field(default_factory=list)
    cost: float | None = None  # Core ML's estimated share of the model's work
    module: str = ""


def static_verdicts(table: Any, package: str | Path | None) -> tuple[dict[str, list[str]], str]:
    """Op output name → its findings, and where they came from (op table, or the rules run on the package)."""
    if table is not None:
        return {o.name: list(o.findings) for o in table.ops}, "the op table's Neural Engine findings"
    if package is None:
        return {}, ""
    from hybridexport.export.formats import get

    t = get("coreml").op_table(Path(package))
    return {o.name: list(o.findings) for o in t.ops}, "hybridexport.analyze.ane_rules on the package (it has no op table)"


def predicted_unit(findings: list[str]) -> str:
    """``"ane"`` unless a finding says the op runs off the Neural Engine."""
    return "off-ane" if any(f.startswith("off-ane:") for f in findings) else "ane"


def placement(ops: list[PlannedOp], verdicts: dict[str, list[str]], compute_units: str, source: str) -> dict[str, Any]:
    """The placement report (a plain dict, for ``Profile.extra["placement"]``)."""
    total_cost = sum(o.cost or 0.0 for o in ops) or 1.0
    by_unit = {u: {"ops": 0, "cost_share": 0.0} for u in UNITS}
    for o in ops:
        slot = by_unit.setdefault(o.unit, {"ops": 0, "cost_share": 0.0})
        slot["ops"] += 1
        slot["cost_share"] += (o.cost or 0.0) / total_cost
    for slot in by_unit.values():
        slot["cost_share"] = round(slot["cost_share"], 4)
    compared = compute_units in WITH_NE and bool(verdicts)
    report: dict[str, Any] = {
        "compute_units": compute_units,
        "static_source": source,
        "ops": len(ops),
        "by_unit": by_unit,
        "compared": compared,
    }
    if not verdicts:
        report["why_not_compared"] = "no static verdicts (no op table, and the package could not be read back)"
        return report
    if not compared:
        report["why_not_compared"] = (f"compute units {compute_units} exclude the Neural Engine; the rules predict "
                                      "placement for ALL / CPU_AND_NE")
        return report
    static = {"ane": 0, "off-ane": 0, "unknown": 0}
    agree = 0
    disagreements = []
    for o in ops:
        if o.name not in verdicts:
            static["unknown"] += 1
            continue
        want = predicted_unit(verdicts[o.name])
        static[want] += 1
        on_ane = o.unit == "ane"
        if (want == "ane") == on_ane:
            agree += 1
            continue
        disagreements.append({
            "name": o.name, "op_type": o.op_type, "module": o.module, "plan": o.unit, "supported": o.supported,
            "static": want, "findings": verdicts[o.name], "cost": o.cost,
        })
    disagreements.sort(key=lambda d: -(d["cost"] or 0.0))
    report.update(static=static, agree=agree, disagreements=disagreements)
    return report


def summary_line(p: dict[str, Any]) -> str:
    """One line: where the ops run, and how the static rules fared."""
    names = {"ane": "Neural Engine", "gpu": "GPU", "cpu": "CPU"}
    parts = [f"{names.get(u, u)} {v['ops']} ({100 * v['cost_share']:.0f}% of cost)"
             for u, v in p["by_unit"].items() if v["ops"]]
    head = f"placement ({p['compute_units']}): {p['ops']} ops — " + ", ".join(parts or ["none"])
    if not p.get("compared"):
        return f"{head}; not compared with the static rules: {p.get('why_not_compared', '')}"
    s = p["static"]
    known = s["ane"] + s["off-ane"]
    return (f"{head}; static rules put {s['ane']} of {known} on the Neural Engine, {p['agree']} agree with Core ML, "
            f"{len(p['disagreements'])} disagree" + (f" ({s['unknown']} ops without a static verdict)" if s["unknown"] else ""))


def placement_table(p: dict[str, Any], top: int = 10) -> Any:
    """A rich renderable: the summary line, and the costliest disagreements."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from hybridexport.console import plain

    line = Text(summary_line(p))
    rows = p.get("disagreements") or []
    if not rows:
        return line
    t = Table(title=f"ops where Core ML and the static rules disagree (top {min(top, len(rows))} by cost)",
              title_justify="left")
    for col in ("op", "type", "module", "Core ML", "rules", "findings", "cost"):
        t.add_column(col, overflow="fold")
    for d in rows[:top]:
        cost = "" if d["cost"] is None else f"{100 * d['cost']:.2f}%"
        t.add_row(plain(d["name"]), plain(d["op_type"]), plain(d["module"]) if d["module"] else "[red]unmapped[/]",
                  d["plan"] + ("" if "ane" in d["supported"] or d["plan"] == "ane" else " (ANE unsupported)"),
                  "Neural Engine" if d["static"] == "ane" else "off the Neural Engine",
                  ", ".join(d["findings"]) or "none", cost)
    return Group(line, t)
