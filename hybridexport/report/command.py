"""``hybridexport compare BASE NEW``: noise-aware latency comparison; exit 1 on a regression."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hybridexport.errors import InputFileError

HELP = "compare two profiles or suite results: per-layer deltas, noise-aware verdicts, reports (exit 1 on regression)"
FORMATS = ("text", "markdown", "html", "json", "junit", "model-explorer")
_BY_SUFFIX = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".xml": "junit",
              ".json": "json", ".txt": "text"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridexport.cliargs import ranged, ranged_float

    parser.add_argument("base", metavar="BASE", help="baseline: a profile JSON (bench --json) or suite results JSON")
    parser.add_argument("new", metavar="NEW", help="the run to judge, same kind of file as BASE")
    parser.add_argument("--threshold", default="5%",
                        help="relative change that counts, e.g. 5%% or 0.05 (default 5%%); predicted profiles use it as is")
    parser.add_argument("--measured-threshold", default=None, metavar="THRESHOLD",
                        help="threshold for measured-vs-measured pairs (default: --threshold); they must also clear "
                             "the bootstrap interval")
    parser.add_argument("--confidence", type=ranged_float(0.5, 1.0, closed_hi=False), default=0.99,
                        help="bootstrap interval level, 0.5 to below 1 (default 0.99)")
    parser.add_argument("--statistic", default="p20+median",
                        help="what measured runs are compared by: p20+median (default: both must show the change), "
                             "or one of median, p20, pNN")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="report format (default: text on the terminal, or from each --out file's extension)")
    parser.add_argument("--out", metavar="FILE", action="append", default=None,
                        help="write the report here (repeatable: .md .html .xml=junit .json .txt, or *.node_data.json"
                             " / a directory for model-explorer)")
    parser.add_argument("--top", type=ranged(0, 10000), default=5, help="regressed layers to list per entry (default 5)")
    parser.add_argument("--overlay", choices=("latency", "delta"), default="latency",
                        help="model-explorer: new per-node latency heat map, or per-layer change vs base")
    parser.add_argument("--graph-id", default=None,
                        help="model-explorer: key the overlay by this graph id (ONNX: main_graph); default: the open graph")
    parser.add_argument("--graph", metavar="MODEL.onnx", default=None,
                        help="model-explorer: the exported ONNX the overlay is for (maps onnxruntime's node names to its ids)")
    parser.add_argument("--allow-different", action="store_true",
                        help="compare two lone profiles of different models or input shapes (two designs, e.g. an "
                             "ablation); from different devices or formats the verdict is informational")
    parser.add_argument("--fail-on-missing", action="store_true",
                        help="exit 1 also when a model × device × format in BASE is missing or failed in NEW")


def _format_for(path: str, explicit: str | None, n_outs: int) -> str:
    if explicit and n_outs == 1:
        return explicit
    if path.endswith(".node_data.json") or Path(path).is_dir() or path.endswith("/"):
        return "model-explorer"
    fmt = _BY_SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputFileError(f"cannot tell the report format of '{path}' from its extension; pass --format "
                             f"({', '.join(FORMATS)}) with a single --out")
    if explicit and fmt != explicit:
        raise InputFileError(f"--format {explicit} conflicts with '{path}' ({fmt}); with several --out files the "
                             "format comes from each extension")
    return fmt


def render(cmp, fmt: str, args: argparse.Namespace) -> str | dict[str, str]:
    """The report text for ``fmt`` (model-explorer: file name → text)."""
    import json

    if fmt == "text":
        from hybridexport.report.text import render_text

        return render_text(cmp, top=args.top)
    if fmt == "markdown":
        from hybridexport.report.markdown import render_markdown

        return render_markdown(cmp, top=args.top)
    if fmt == "html":
        from hybridexport.report.html import render_html

        return render_html(cmp, top=args.top)
    if fmt == "junit":
        from hybridexport.report.junit import render_junit

        return render_junit(cmp, top=args.top, fail_on_missing=args.fail_on_missing)
    if fmt == "json":
        return json.dumps(cmp.to_dict(), indent=2) + "\n"
    from hybridexport.report.model_explorer import render_model_explorer

    return render_model_explorer(cmp, overlay=args.overlay, graph_id=args.graph_id, graph=args.graph)


def _write(out: str, content: str | dict[str, str]) -> list[Path]:
    from hybridexport.atomic import write_text

    if isinstance(content, str):
        return [write_text(out, content)]
    if len(content) == 1 and not (Path(out).is_dir() or out.endswith("/")):
        return [write_text(out, next(iter(content.values())))]
    base = Path(out)
    if base.suffix == ".json" and not base.is_dir():
        base = base.with_name(base.name.removesuffix(".node_data.json").removesuffix(".json"))
    return [write_text(base / name, text) for name, text in content.items()]


def run(args: argparse.Namespace) -> int:
    from hybridexport.console import console, err_console
    from hybridexport.report.compare import compare

    threshold = parse_threshold(args.threshold)
    measured = parse_threshold(args.measured_threshold) if args.measured_threshold is not None else None
    outs = args.out or []
    plan = [(out, _format_for(out, args.format, len(outs))) for out in outs]  # validate before any work
    from hybridexport.cliargs import writable_dir, writable_file

    for out, fmt in plan:
        (writable_dir if fmt == "model-explorer" and not out.endswith(".json") else writable_file)(out, "--out")
    cmp = compare(args.base, args.new, threshold=threshold, measured_threshold=measured, confidence=args.confidence,
                  statistic=args.statistic, allow_different=args.allow_different)
    if not outs:
        fmt = args.format or "text"
        if fmt == "text":
            from hybridexport.report.text import render_console

            render_console(cmp, console, top=args.top)
        else:
            content = render(cmp, fmt, args)
            if isinstance(content, dict):
                if len(content) != 1:
                    raise InputFileError("model-explorer output has one file per entry; pass --out DIR")
                content = next(iter(content.values()))
            print(content, end="")
    else:
        from hybridexport.report.text import render_console

        render_console(cmp, err_console, top=args.top)
        for out, fmt in plan:
            for path in _write(out, render(cmp, fmt, args)):
                err_console.print(f"wrote {path} ({fmt})", highlight=False)
    return cmp.exit_code(fail_on_missing=args.fail_on_missing)


def parse_threshold(text: str) -> float:
    """``5%`` → 0.05, ``0.05`` → 0.05; a bare number ≥ 1 is ambiguous and refused."""
    s = str(text).strip()
    try:
        if s.endswith("%"):
            value = float(s[:-1]) / 100.0
        else:
            value = float(s)
            if value >= 1:
                raise InputFileError(f"threshold '{text}' is ambiguous; write it as a percent ('{s}%') or a fraction")
    except ValueError:
        raise InputFileError(f"threshold '{text}' is not a number; write e.g. 5% or 0.05") from None
    if not (0 <= value < 10) or not math.isfinite(value):
        raise InputFileError(f"threshold '{text}' is out of range; write e.g. 5% or 0.05")
    return value
