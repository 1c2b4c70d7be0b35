"""JUnit XML: one testcase per model × device × format; a (gating) regression is a failure."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hybridexport.report.comparison import Comparison
from hybridexport.report.text import fmt_ci, fmt_ms, fmt_pct, how

#: characters XML 1.0 cannot hold (ElementTree writes them anyway, and JUnit readers then reject the file)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    """Outside text (model and layer names, notes, reasons) as XML-safe text (ElementTree escapes <, &, ")."""
    return _NOT_XML.sub("\ufffd", str(text))


def render_junit(cmp: Comparison, top: int = 5, suite_name: str = "hybridexport.latency",
                 fail_on_missing: bool = False) -> str:
    cases = []
    failures = skipped = 0
    for e in cmp.entries:
        case = ET.Element("testcase", classname=_x(f"{suite_name}.{e.model}"), name=_x(f"{e.device}/{e.format}"),
                          time=f"{max(e.new_ms, 0) / 1000.0:.6f}")
        detail = [f"{e.key}: {fmt_ms(e.base_ms)} → {fmt_ms(e.new_ms)} ms ({fmt_pct(e.delta_pct)}) {fmt_ci(e)}",
                  f"verdict: {e.verdict} ({how(e)})"]
        detail += [f"note: {n}" for n in e.notes]
        layers = e.top_regressed(top)
        if layers:
            detail.append("top regressed layers:")
            detail += [f"  {x.module}: {fmt_ms(x.base_ms)} → {fmt_ms(x.new_ms)} ms ({x.delta_ms:+.3f} ms, "
                       f"{fmt_pct(x.delta_pct)})" for x in layers]
        text = "\n".join(detail)
        if e.gating:
            failures += 1
            ci = f" {fmt_ci(e)}" if e.ci else ""
            msg = f"latency regression {fmt_pct(e.delta_pct)}{ci} beyond the {100 * e.threshold:.0f}% threshold"
            ET.SubElement(case, "failure", message=_x(msg), type="LatencyRegression").text = _x(text)
        else:
            ET.SubElement(case, "system-out").text = _x(text)
        cases.append(case)
    for m in cmp.missing:
        case = ET.Element("testcase", classname=_x(f"{suite_name}.{m.model}"), name=_x(f"{m.device}/{m.format}"),
                          time="0")
        msg = _x(f"{m.label}: {m.reason}")
        if fail_on_missing and m.side == "new":
            failures += 1
            ET.SubElement(case, "failure", message=msg, type="LatencyMissing")
        else:
            skipped += 1
            ET.SubElement(case, "skipped", message=msg)
        cases.append(case)
    suite_name = _x(suite_name)
    root = ET.Element("testsuites", name=suite_name, tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures),
                          errors="0", skipped=str(skipped), timestamp=cmp.created)
    props = ET.SubElement(suite, "properties")
    for name, value in (("base", cmp.base_source), ("new", cmp.new_source), ("threshold", cmp.threshold),
                        ("measured_threshold", cmp.measured_threshold), ("confidence", cmp.confidence)):
        ET.SubElement(props, "property", name=name, value=_x(value))
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
