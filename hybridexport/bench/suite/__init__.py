"""Benchmark suites: models × devices × formats from a small TOML file (:mod:`.spec`), run into one
results file (:mod:`.schedule`, :mod:`hybridexport.bench.results`); one failure never stops the suite.
``hybridexport compare`` reads the results."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybridexport.bench.profile import Profile
from hybridexport.bench.results import SuiteFailure, SuiteResult
from hybridexport.bench.suite.schedule import run_suite_file
from hybridexport.bench.suite.spec import Suite, SuiteItem, load_suite, parse_suite

__all__ = ["Suite", "SuiteFailure", "SuiteItem", "SuiteResult", "add_suite_arguments", "load_suite", "parse_suite",
           "run_suite", "run_suite_file"]


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--suite FILE`` (and ``--only``) to the bench command; it owns ``--json``."""
    from hybridexport.bench.suite.spec import FARM_JOBS_MAX
    from hybridexport.cliargs import ranged

    parser.add_argument("--suite", metavar="FILE", help="run a suite (models × devices × formats, TOML) and write one "
                        "results file (--json FILE, default results/<suite>.json)")
    parser.add_argument("--only", metavar="NAME", action="append", default=None,
                        help="with --suite: keep only items whose model, device or format is NAME (repeatable)")
    parser.add_argument("--jobs", "-j", type=ranged(1, 64), default=1,
                        help="with --suite: convert artifacts and run predicted items in N processes; measured "
                             "items still run one at a time (default 1)")
    parser.add_argument("--farm-jobs", type=ranged(1, FARM_JOBS_MAX), default=None, metavar="N",
                        help="with --suite: device-farm jobs (runner qai-hub) in flight at once (default: the "
                             "suite's [defaults] farm_jobs, else 4)")


def run_suite(args: argparse.Namespace) -> int:
    """Run ``args.suite``; print a table; 0 when every item produced a profile, 1 when some failed."""
    from rich.table import Table

    from hybridexport.cliargs import writable_dir, writable_file
    from hybridexport.console import console, err_console, plain

    json_out = getattr(args, "json", None)
    suite = load_suite(args.suite)  # every mistake in the file is reported before anything runs
    if not isinstance(json_out, str | Path):  # a boolean --json flag, or none: pick the default path
        json_out = Path("results") / f"{suite.name}.json"
    writable_file(json_out, "--json")
    if getattr(args, "out", None):
        writable_dir(args.out, "--out")

    def on_item(item: SuiteItem, profile: Profile | None, failure: SuiteFailure | None, seconds: float) -> None:
        took = f"[{seconds:.0f} s]"
        if profile is not None:
            err_console.print(f"  [green]ok[/]   {plain(item.key)}: {profile.total_ms.median:.3f} ms ({profile.obtained}, "
                              f"{plain(profile.runner)}) {plain(took)}", highlight=False)
        elif failure is not None:
            err_console.print(f"  [red]fail[/] {plain(item.key)}: {plain(failure.reason)} {plain(took)}", highlight=False)

    result = run_suite_file(args.suite, out=json_out, only=getattr(args, "only", None), on_item=on_item,
                            artifacts=getattr(args, "out", None), jobs=getattr(args, "jobs", 1) or 1,
                            farm_jobs=getattr(args, "farm_jobs", None))
    table = Table(title=f"suite {plain(result.suite)} ({result.seconds:.0f} s)")
    for col in ("model", "device", "format", "runner", "obtained", "median ms", "p10–p90 ms"):
        table.add_column(col, justify="right" if "ms" in col else "left", overflow="fold")
    for p in result.profiles:
        t = p.total_ms
        table.add_row(*map(plain, (p.model, p.device, p.format, p.runner, p.obtained)), f"{t.median:.3f}",
                      f"{t.p10:.3f}–{t.p90:.3f}")
    for f in result.failures:
        table.add_row(*map(plain, (f.model, f.device, f.format, f.runner or "-")), "[red]failed[/]", "-", "-")
    console.print(table)
    for f in result.failures:
        console.print(f"[red]failed[/] {plain(f'{f.model}@{f.device}/{f.format}: {f.reason}')}", highlight=False,
                      soft_wrap=True)
    console.print(f"wrote {plain(json_out)} ({len(result.profiles)} profiles, {len(result.failures)} failures)",
                  highlight=False)
    return 1 if result.failures else 0
