"""Terminal rendering of a Profile: the top layers by time with share bars, and the total."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from hybridexport.bench.profile import Profile
from hybridexport.console import plain

BAR = 8


def _share(share: float) -> Text:
    n = max(0, min(BAR, round(share * BAR)))
    return Text("█" * n + "·" * (BAR - n), style="cyan") + Text(f" {100 * share:4.1f}%")


def profile_table(profile: Profile, top: int = 15, depth: int | None = None, wide: bool = True) -> Table:
    """A rich table of the ``top`` rows (or modules cut to ``depth``) by median time.

    ``wide=False`` (a narrow terminal) drops the p10–p90 and unit columns so module paths stay readable.
    """
    rows = profile.by_module(depth) if depth else list(profile.layers)
    total = sum(r.ms.median for r in rows) or 1.0
    rows = sorted(rows, key=lambda r: -r.ms.median)
    kind = "[green]measured[/]" if profile.obtained == "measured" else "[magenta]predicted[/]"
    t = profile.total_ms
    cpu = profile.extra.get("total_cpu_ms")
    table = Table(
        title=f"{plain(profile.model)} · {plain(profile.format)} · {plain(profile.device)} · {plain(profile.runner)} "
              f"({kind})",
        caption=(f"total {t.median:.3f} ms (p10–p90 {t.p10:.3f}–{t.p90:.3f}, n={t.n})"
                 + (f", CPU time {cpu['median']:.3f} ms" if isinstance(cpu, dict) else "")
                 + f" · {len(profile.layers)} rows, row medians sum to {profile.layer_sum_ms():.3f} ms"),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("ms", justify="right", no_wrap=True)
    if wide:
        table.add_column("p10–p90", justify="right", style="dim", no_wrap=True)
    table.add_column("share", no_wrap=True)
    table.add_column("module", overflow="fold", ratio=3, min_width=20)
    table.add_column("op type", overflow="ellipsis", no_wrap=True, max_width=18 if wide else 12)
    if wide:
        table.add_column("unit", overflow="ellipsis", no_wrap=True, max_width=14)
    for i, r in enumerate(rows[:top], 1):
        spread = f"{r.ms.p10:.3f}–{r.ms.p90:.3f}" if r.ms.n > 1 and r.ms.p90 != r.ms.p10 else ""
        cells = [str(i), f"{r.ms.median:.3f}", *([spread] if wide else []), _share(r.ms.median / total),
                 plain(r.module) if r.module else f"[red]unmapped[/] {plain(r.name[:40])}", plain(r.op_type),
                 *([plain(r.compute_unit)] if wide else [])]
        table.add_row(*cells)
    if len(rows) > top:
        rest = sum(r.ms.median for r in rows[top:])
        table.add_row("", f"{rest:.3f}", *([""] if wide else []), _share(rest / total),
                      f"[dim]{len(rows) - top} more rows[/]", "", *([""] if wide else []))
    return table
