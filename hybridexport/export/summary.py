"""Terminal rendering of convert results: one line per artifact and a one-screen summary table."""

from __future__ import annotations

import os

from rich import box
from rich.markup import escape
from rich.table import Table

from hybridexport.export.formats import title
from hybridexport.export.manifest import Manifest


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def parity_cell(m: Manifest) -> str:
    """``✓ 6.5e-07 4/4``: worst relative L2 error vs PyTorch and top-1 agreement (``n=4`` for models with
    several outputs); or why there is none."""
    p = m.parity
    if p.n_inputs and p.rel_l2_err is not None:
        mark = "[green]✓[/]" if p.verified else "[red]✗[/]"
        if p.top1_agreement is None:  # several outputs (a backbone's feature maps): no top-1
            return f"{mark} {p.rel_l2_err:.1e} n={p.n_inputs}"
        agree = round(p.top1_agreement * p.n_inputs)
        return f"{mark} {p.rel_l2_err:.1e} {agree}/{p.n_inputs}"
    if "structurally" in p.reason:
        return "[yellow]structural[/]"
    return "[yellow]not run[/]"


def short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("../..") else path


def artifact_line(m: Manifest) -> str:
    how = "reused (unchanged inputs; --force rebuilds)" if m.extra.get("reused") else f"built in {m.seconds:.1f} s"
    line = f"[green]✓[/] {title(m.format)} {m.precision} → {short_path(m.path)}  [dim]{how}[/]"
    for p in (m.extra.get("rewrite") or {}).get("passes", []):
        lat = p.get("latency") or {}
        if lat.get("slower") and not p.get("applied"):
            line += (f"\n  [yellow]skipped {escape(p['name'])}[/]: {escape(lat['how'])} slower with it, "
                     f"{lat['before_ms']:.3f} → {lat['after_ms']:.3f} ms ({(lat['ratio'] - 1) * 100:+.1f}%)")
    return line


def summary_table(manifests: list[Manifest], failures: list[tuple[str, str, str]] | None = None) -> Table:
    """One row per artifact (and per failed format): size, parity (rel L2, top-1), ops, rank-5 tensors, time.

    ``failures`` are (model, format, why). The model column appears only when there are several models.
    """
    failures = failures or []
    models = list(dict.fromkeys([m.model for m in manifests] + [f[0] for f in failures]))
    several = len(models) > 1
    heading = "hybridexport convert" + ("" if several or not models else f" {models[0]}")
    table = Table(title=heading, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    cols = (["model"] if several else []) + ["format", "prec", "size", "parity", "ops", "rank5", "time"]
    for col in cols:
        table.add_column(col, justify="right" if col in ("size", "ops", "rank5", "time") else "left", no_wrap=True)
    for m in manifests:
        cells = [
            title(m.format),
            m.precision,
            human_size(m.size_bytes),
            parity_cell(m),
            str(sum(m.ops.values())),
            str(m.rank5_tensors),
            "cached" if m.extra.get("reused") else f"{m.seconds:.1f} s",
        ]
        table.add_row(*([m.model] if several else []), *cells)
    for model, fmt, _why in failures:
        cells = [title(fmt), "", "", "[red]failed[/]", "", "", ""]
        table.add_row(*([model] if several else []), *cells)
    notes = ["parity: worst relative L2 error vs PyTorch, top-1 agreement"]
    reasons = list(dict.fromkeys(m.parity.reason.split(";")[0] for m in manifests if "structurally" in m.parity.reason))
    for why in reasons:
        notes.append(f"structural: checked without running ({why})")
    table.caption = "\n".join(notes)
    return table
