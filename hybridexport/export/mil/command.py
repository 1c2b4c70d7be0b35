"""``hybridexport diagnose``: where a Core ML artifact loses precision, op by op, against an fp32 reference."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from hybridexport.export.mil.precision import PrecisionReport

HELP = ("where a Core ML artifact loses precision: interpret its ML Program op by op (fp16 as stored) against "
        "the same model converted at fp32, and report each op's error by nn.Module, the first op beyond the "
        "tolerance and any fp16 overflow (inf), NaN or underflow, with a fix; exit 1 when an inf/NaN appears "
        "or the outputs exceed the tolerance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="the .mlpackage `hybridexport convert --to coreml` wrote (its manifest "
                        "<artifact>.json beside it names the model, resolution, checkpoint and passes)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed of the random input (default: the first parity input, 1000)")
    parser.add_argument("--tolerance", type=float, default=None, metavar="REL",
                        help="relative L2 error per op that counts as lost (default: the parity tolerance of "
                        "the artifact's precision: fp16 1e-2, int8 0.1, fp32 1e-4)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="the checkpoint it was converted with, when the manifest's path has moved")
    parser.add_argument("--top", type=int, default=15, metavar="N",
                        help="rows in the table: the N largest errors plus every flagged op (default 15)")
    parser.add_argument("--all", action="store_true", help="show every op in program order")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def run(args: argparse.Namespace) -> int:
    from hybridexport.export.options import BadOptionError

    if args.tolerance is not None and not args.tolerance > 0:
        raise BadOptionError(f"--tolerance must be > 0, got {args.tolerance}")
    if args.top < 0:
        raise BadOptionError(f"--top must be >= 0, got {args.top}")
    from hybridexport.export.mil.precision import precision_report

    report = precision_report(args.artifact, seed=args.seed, tolerance=args.tolerance, checkpoint=args.checkpoint,
                              verbose=bool(getattr(args, "verbose", False)))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        from hybridexport.console import console

        console.print(render(report, top=None if args.all else args.top))
        for line in report.suggestions():
            console.print(f"[bold]→[/] {line}", highlight=False, soft_wrap=True)
    return 0 if report.ok() else 1


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if v == float("inf") else f"{v:.1e}"


def render(report: PrecisionReport, top: int | None = 15) -> Table:
    """The op table: program order; with ``top``, only the ``top`` largest errors and the flagged ops."""
    from rich import box
    from rich.table import Table

    jump = report.first_jump
    flagged = {o.name for o in report.origins} | ({jump.name} if jump else set())
    rows = report.ops
    if top is not None:
        worst = sorted((o for o in rows if o.rel_err is not None), key=lambda o: -o.rel_err)[:top]
        keep = {o.name for o in worst} | flagged
        rows = [o for o in rows if o.name in keep]
    table = Table(title=f"hybridexport diagnose {report.model or report.artifact} ({report.precision})",
                  title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("#", "op", "output", "module", "shape", "max |x|", "rel err", ""):
        table.add_column(col, justify="right" if col in ("#", "max |x|", "rel err") else "left",
                         no_wrap=col != "module")
    for o in rows:
        flag = []
        if o.origin:
            flag.append(f"[red]{o.origin.upper()} here[/]")
        elif o.inf or o.nan:
            flag.append("[dim]inf/NaN in[/]")
        if jump is not None and o.name == jump.name:
            flag.append("[yellow]first > tol[/]")
        if o.subnormal > 0.5:
            flag.append("[yellow]< fp16 normal[/]")
        rel = _fmt(o.rel_err)
        if o.rel_err is not None and not o.rel_err <= report.tolerance:
            rel = f"[red]{rel}[/]"
        table.add_row(str(o.index), o.op_type, o.name, o.module or "[dim]?[/]", "x".join(map(str, o.shape)),
                      _fmt(o.max_abs) if not (o.inf or o.nan) else f"{_fmt(o.ref_max_abs)}*", rel, " ".join(flag))
    shown = "" if top is None else f"{len(rows)} of {len(report.ops)} op outputs shown (--all for every op); "
    table.caption = (
        f"{shown}rel err: ||y - y_fp32|| / ||y_fp32|| vs the fp32 reference (tolerance {report.tolerance:g}); "
        f"* max |x| of the fp32 reference where the artifact has inf/NaN\n"
        f"outputs vs fp32 program {_fmt(report.output_rel_err)}, vs PyTorch {_fmt(report.pytorch_rel_err)} "
        f"(fp32 program vs PyTorch {_fmt(report.reference_pytorch_rel_err)}); "
        f"{report.matched_share:.0%} of op outputs matched by name\n"
        f"{report.method} on a {report.input}; reference: {report.reference}; modules: {report.module_mapping}"
    )
    return table
