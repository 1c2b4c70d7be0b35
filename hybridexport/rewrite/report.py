"""The rewrite report: what each pass changed, whether it was verified, and op counts before/after."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from torch import nn

#: rows of the op-count table: (label, graph_ops key); graph_ops categories group reshape-like views
#: (view/reshape/flatten/(un)squeeze) and transposes (transpose/permute)
SUMMARY_ROWS = (
    ("reshape-like", "reshape"),
    ("transpose/permute", "transpose"),
    ("rank-5+ tensors", "rank5_tensors"),
    ("matmul/linear", "matmul"),
    ("conv", "conv"),
    ("split/slice", "split"),
    ("concat", "concat"),
    ("all ops", "total"),
)


@dataclass
class PassRecord:
    """One pass in one pipeline run."""

    name: str
    applied: bool
    changes: list[str] = field(default_factory=list)
    max_abs_err: float | None = None
    reason: str = ""
    matched: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: True when the pass matched but crashed or failed verification (False for "not applicable")
    failed: bool = False
    #: the judge's verdict (before_ms, after_ms, ratio, how, slower) when the pass was judged
    latency: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["max_abs_err"] is not None and d["max_abs_err"] == float("inf"):
            d["max_abs_err"] = None
        return d


@dataclass
class RewriteReport:
    """Everything a pipeline run did. ``to_dict()`` is the JSON contract used by export manifests."""

    passes: list[PassRecord] = field(default_factory=list)
    ops_before: dict[str, Any] = field(default_factory=dict)
    ops_after: dict[str, Any] = field(default_factory=dict)
    rank5_before: int | None = None
    rank5_after: int | None = None
    target: str | None = None
    #: max abs error of the final model against the input model, and the reference output scale
    final_max_abs_err: float | None = None
    output_scale: float | None = None
    ops_source: str = ""
    #: how passes were judged on the target ("" when they were not: forced passes, no judge)
    judge: str = ""
    #: where rank ≥ 5 tensors remain after the passes: "<module path> (<class>): <n>× <op>, ..." per module
    rank5_remaining: list[str] = field(default_factory=list)
    #: seconds of the final check of the rewritten model against the input model on every verification
    #: input (and of the pass-by-pass recheck when it failed)
    final_check_seconds: float = 0.0

    def applied(self) -> list[str]:
        """Names of the passes that changed the model and passed verification."""
        return [p.name for p in self.passes if p.applied]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": [p.to_dict() for p in self.passes],
            "applied": self.applied(),
            "target": self.target,
            "ops_before": dict(self.ops_before),
            "ops_after": dict(self.ops_after),
            "rank5_before": self.rank5_before,
            "rank5_after": self.rank5_after,
            "final_max_abs_err": self.final_max_abs_err,
            "output_scale": self.output_scale,
            "ops_source": self.ops_source,
            "judge": self.judge,
            "rank5_remaining": list(self.rank5_remaining),
            "final_check_seconds": self.final_check_seconds,
        }


def count_ops(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...],
              program: torch.export.ExportedProgram | None = None
              ) -> tuple[dict[str, Any], int | None, str, list[str]]:
    """Op histogram (``hybridexport.analyze.graph_ops``), rank-5 count and where the rank ≥ 5 tensors are:
    ``(ops, rank5, source, sites)`` from one ``torch.export`` (``program``, when already made)."""
    from hybridexport.analyze.ops import count_ops as graph_counts
    from hybridexport.analyze.ops import export_program

    graph = (program or export_program(module, example)).graph
    ops = dict(graph_counts(graph))
    rank5 = ops.get("rank5_tensors")
    return ops, (int(rank5) if isinstance(rank5, int) else None), "hybridexport.analyze.graph_ops", rank5_sites(graph)


def rank5_sites(graph: torch.fx.Graph, limit: int = 12) -> list[str]:
    """One line per module whose forward makes rank ≥ 5 tensors, most first: ``"<path> (<class>): 2× view,
    2× permute"`` (``modpath.ROOT`` for the model's own forward). No pass has a rank-4 form for them."""
    from collections import Counter

    from hybridexport import modpath
    from hybridexport.analyze.ops import HIGH_RANK, max_rank, op_name

    per_module: dict[tuple[str, str], Counter[str]] = {}
    for node in graph.nodes:
        if node.op != "call_function" or max_rank(node) < HIGH_RANK:
            continue
        stack = node.meta.get("nn_module_stack")
        where = (modpath.from_module_stack(stack) or modpath.ROOT, modpath.class_of_stack(stack) if stack else "")
        per_module.setdefault(where, Counter())[op_name(node.target).split(".", 1)[-1]] += 1
    ranked = sorted(per_module.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    lines = [f"{path}{f' ({cls})' if cls else ''}: " + ", ".join(f"{n}× {op}" for op, n in ops.most_common())
             for (path, cls), ops in ranked[:limit]]
    if len(ranked) > limit:
        lines.append(f"… and {len(ranked) - limit} more modules")
    return lines


def _fmt_err(err: float | None) -> str:
    if err is None:
        return "–"
    if err == float("inf"):
        return "∞"
    return f"{err:.2e}"


def render_report(report: RewriteReport, console: Console | None = None, title: str = "rewrite") -> None:
    """Print the report as rich tables: one row per pass, then the op counts before/after."""
    from rich.markup import escape
    from rich.table import Table

    from hybridexport.console import console as default_console

    con = console or default_console
    table = Table(title=title + (f" (target {report.target})" if report.target else ""), title_justify="left")
    table.add_column("pass")
    table.add_column("applied")
    table.add_column("changes / reason", overflow="fold")
    table.add_column("max abs err", justify="right")
    table.add_column("seconds", justify="right")
    judged = any(p.latency for p in report.passes)
    if judged:
        table.add_column("latency before → after", justify="right")
    for p in report.passes:
        status = ("[green]yes[/]" if p.applied else "[red]no[/]" if p.failed
                  else "[magenta]skipped[/]" if p.latency else "[yellow]n/a[/]")
        lines = list(p.changes) if p.applied else [p.reason or "not applied"]
        lines += [f"[dim]{escape(n)}[/]" for n in p.notes]
        row = [p.name, status, "\n".join(lines) or "–", _fmt_err(p.max_abs_err), f"{p.seconds:.2f}"]
        if judged:
            lat = p.latency
            row.append(f"{lat['before_ms']:.3f} → {lat['after_ms']:.3f} ms ({(lat['ratio'] - 1) * 100:+.1f}%)" if lat
                       else "–")
        table.add_row(*row)
    con.print(table)
    if report.judge:
        con.print(f"[dim]passes judged by latency: {escape(report.judge)}; the deploy form (reparameterize, "
                  "fuse-bn) is kept as published latencies are timed on it[/]", highlight=False)

    counts = Table(title="exported-graph ops (torch.export)", title_justify="left")
    counts.add_column("op")
    counts.add_column("before", justify="right")
    counts.add_column("after", justify="right")
    for label, key in SUMMARY_ROWS:
        b, a = report.ops_before.get(key), report.ops_after.get(key)
        counts.add_row(label, "–" if b is None else str(b), "–" if a is None else str(a))
    con.print(counts)
    if report.rank5_remaining:
        con.print("[bold]rank ≥ 5 tensors remain[/] (no pass has a rank-4 form for this code):")
        for line in report.rank5_remaining:
            con.print(f"  [dim]{line}[/]", highlight=False)
    if report.final_max_abs_err is not None:
        con.print(
            f"final model vs input model: max abs error {_fmt_err(report.final_max_abs_err)} "
            f"(output scale {report.output_scale:.3g}, checked in {report.final_check_seconds:.2f} s); "
            f"ops counted by {report.ops_source}"
        )
