"""Rich rendering of a :class:`~hybridexport.analyze.model.ModelAnalysis` for ``hybridexport info``."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from hybridexport.analyze.model import ModelAnalysis

RAW_OPS_SHOWN = 25


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.235 M'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def size(n: int) -> str:
    """Bytes as MiB (or KiB when small)."""
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _versus(value: float, reference: float | None, label: str = "paper") -> str:
    if not reference:
        return ""
    return f"  [dim]({label} {reference:g}, {100 * (value - reference) / reference:+.1f}%)[/]"


def summary_panel(a: ModelAnalysis) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    # Paper figures are for the card's resolution only.
    paper = a.paper if a.paper.get("resolution") == a.resolution else {}
    weights = f"  [dim]weights: {a.checkpoint}[/]" if a.checkpoint else "  [dim]random init[/]"
    grid.add_row("definition", a.source + weights)
    grid.add_row("input", " + ".join("×".join(map(str, s)) for s in a.input_shapes) + " (fp32)")
    grid.add_row("params", f"{human(a.params)} as built")
    grid.add_row(
        "params, BN folded",
        f"{human(a.params_fused)}{_versus(a.params_fused / 1e6, paper.get('params_m'))}"
        f"  [dim]{a.bn_folded} BN folded, {a.bn_unfolded} kept[/]",
    )
    if a.macs_paper_convention is not None:
        grid.add_row("MACs", human(a.macs))
        grid.add_row("MAdds, paper's rule",
                     f"{human(a.macs_paper_convention)}{_versus(a.macs_paper_convention / 1e9, paper.get('gmacs'))}")
    elif "gmacs_code" in paper:
        printed = "" if paper.get("gmacs_note") else f"  [dim]paper prints {paper.get('gmacs')} G[/]"
        grid.add_row("MACs", f"{human(a.macs)}{_versus(a.macs / 1e9, paper['gmacs_code'], 'card count')}{printed}")
    else:
        grid.add_row("MACs", f"{human(a.macs)}{_versus(a.macs / 1e9, paper.get('gmacs'))}")
    if paper.get("gmacs_note"):
        grid.add_row("", f"[dim]{paper['gmacs_note']}[/]")
    grid.add_row("", f"[dim]{a.macs_convention}[/]")
    if a.macs_paper_convention_note:
        rule = a.macs_paper_convention_note.split(";")[0]  # the rule; --json has the card's full note
        grid.add_row("", f"[dim]paper's rule: {rule}[/]")
    where = f" in {a.peak_activation_module}" if a.peak_activation_module else ""
    grid.add_row("peak activations", f"{size(a.peak_activation_bytes)} at fp32  [dim]at {a.peak_activation_node}{where}[/]")
    cats = a.op_categories
    grid.add_row(
        "graph",
        f"{a.total_ops} ops: {cats.get('reshape', 0)} reshape, {cats.get('transpose', 0)} transpose, "
        f"{cats.get('softmax', 0)} softmax, {cats.get('matmul', 0)} matmul, {cats.get('attention', 0)} SDPA; "
        f"{a.rank5_tensors} tensors of rank ≥ 5",
    )
    if "top1" in paper:
        grid.add_row("paper top-1", f"{paper['top1']}%")
    at = f"{a.resolution}px" if a.resolution else " + ".join("×".join(map(str, s)) for s in a.input_shapes)
    return Panel(grid, title=f"[bold]{a.name}[/] @ {at}", expand=False)


def stage_table(a: ModelAnalysis) -> Table:
    t = Table(title="Per stage", title_justify="left")
    t.add_column("module")
    t.add_column("output", style="dim")
    t.add_column("params", justify="right")
    t.add_column("BN folded", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("% MACs", justify="right")
    for s in a.stages:
        shape = "×".join(map(str, s.output_shape)) if s.output_shape else ""
        pct = f"{100 * s.macs / a.macs:.1f}" if a.macs else ""
        t.add_row(s.name, shape, human(s.params), human(s.params_fused), human(s.macs), pct)
    t.add_section()
    t.add_row("total", "", human(a.params), human(a.params_fused), human(a.macs), "100.0")
    return t


def op_tables(a: ModelAnalysis) -> Columns:
    cats = Table(title="Op categories", title_justify="left")
    cats.add_column("category")
    cats.add_column("count", justify="right")
    for name, n in a.op_categories.items():
        cats.add_row(name, str(n))
    cats.add_row("rank ≥ 5 tensors", str(a.rank5_tensors), style="bold" if a.rank5_tensors else None)
    raw = Table(title=f"ATen ops ({len(a.ops)} kinds)", title_justify="left")
    raw.add_column("op")
    raw.add_column("count", justify="right")
    items = list(a.ops.items())
    for name, n in items[:RAW_OPS_SHOWN]:
        raw.add_row(name, str(n))
    if len(items) > RAW_OPS_SHOWN:
        rest = sum(n for _, n in items[RAW_OPS_SHOWN:])
        raw.add_row(f"[dim]{len(items) - RAW_OPS_SHOWN} more kinds (--json lists all)[/]", str(rest))
    return Columns([cats, raw])


def render(a: ModelAnalysis, console: Console) -> None:
    console.print(Group(summary_panel(a), stage_table(a), op_tables(a)))
