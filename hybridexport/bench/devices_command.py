"""``hybridexport devices``: device profiles and which runners can serve each one here, now."""

from __future__ import annotations

import argparse
import json

HELP = "list device profiles and which runners can serve them on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serial", help="adb serial to check for Android devices")
    parser.add_argument("--benchmark-binary", metavar="PATH", help="TFLite benchmark_model binary to check for")
    parser.add_argument("--ios-app", metavar="BUNDLE_ID", help="iOS benchmark app to check for")


def device_report(options: dict | None = None) -> list[dict]:
    """One entry per profile: facts, protocol, and each runner's availability with the reason."""
    from hybridexport.bench.devices import list_devices
    from hybridexport.bench.select import runner_status

    out = []
    for d in list_devices():
        facts = d.facts()
        out.append({
            "name": d.name,
            "display_name": d.display_name,
            "kind": d.kind,
            "soc": facts.get("soc", {}).get("name", "") if d.kind != "host" else facts["cpu"].get("model", ""),
            "protocol": d.protocol,
            "runners": [s.to_dict() for s in runner_status(d, options or {})],
        })
    return out


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from hybridexport.console import console

    options = {k: v for k, v in {"serial": args.serial, "benchmark_binary": args.benchmark_binary,
                                 "ios_app": args.ios_app}.items() if v}
    report = device_report(options)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title="device profiles", title_justify="left")
    for col in ("device", "hardware", "protocol", "runners (✓ can run here)"):
        table.add_column(col, overflow="fold")
    for d in report:
        p = d["protocol"]
        proto = f"{p.get('format', '')} {p.get('precision', '')} · {p.get('compute_units', '')}"
        lines = []
        for r in d["runners"]:
            lines.append(f"[green]✓ {r['name']}[/]" if r["available"] else f"[red]✗ {r['name']}[/] [dim]{r['reason']}[/]")
        table.add_row(f"[bold]{d['name']}[/]\n{d['display_name']}", d["soc"], proto, "\n".join(lines))
    console.print(table)
    return 0
