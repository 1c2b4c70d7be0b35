"""``hybridexport devices``: device profiles and which runners can serve each one here, now."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hybridexport.cliargs import ranged

HELP = "list device profiles and which runners can serve them on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serial", help="adb serial to check for Android devices")
    parser.add_argument("--benchmark-binary", metavar="PATH", help="TFLite benchmark_model binary to check for")
    parser.add_argument("--probe-timeout", type=ranged(1, 3600), metavar="S",
                        help="seconds each device probe may take (or $HYBRIDEXPORT_PROBE_TIMEOUT; default 10)")
    parser.add_argument("--ios-team", metavar="TEAMID",
                        help="Apple development team that signs coremltools' ModelRunner app (or $HYBRIDEXPORT_IOS_TEAM)")
    parser.add_argument("--ios-provisioning-profile", metavar="UUID",
                        help="sign with this provisioning profile instead (or $HYBRIDEXPORT_IOS_PROVISIONING_PROFILE)")
    parser.add_argument("--ios-bundle-id", metavar="ID",
                        help="ModelRunner's bundle id (the profile's; or $HYBRIDEXPORT_IOS_BUNDLE_ID)")
    parser.add_argument("--compute-units", type=str.upper, choices=("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"),
                        help="Core ML compute units to check a Mac for")
    parser.add_argument("--prepare", metavar="DEVICE",
                        help="build, install and launch coremltools' ModelRunner app on the attached iPhone/iPad "
                             "of this profile once (needs macOS + Xcode and --ios-team), then exit")


def device_report(options: dict | None = None) -> list[dict]:
    """One entry per profile: facts, protocol, and each runner's availability with the reason.

    Profiles are checked in parallel and share their probes (one ``adb devices`` for every Android
    profile), so a hung tool costs one probe timeout, not one per profile.
    """
    from concurrent.futures import ThreadPoolExecutor

    from hybridexport.bench.devices import list_devices
    from hybridexport.bench.probing import probe_scope
    from hybridexport.bench.select import runner_status

    def entry(d: Any) -> dict:
        facts = d.facts()
        return {
            "name": d.name,
            "display_name": d.display_name,
            "kind": d.kind,
            "soc": facts.get("soc", {}).get("name", "") if d.kind != "host" else facts["cpu"].get("model", ""),
            "protocol": d.protocol,
            "runners": [s.to_dict() for s in runner_status(d, options or {})],
        }

    devices = list_devices()
    with probe_scope(), ThreadPoolExecutor(max_workers=max(1, min(8, len(devices)))) as pool:
        return list(pool.map(entry, devices))


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from hybridexport.console import console, plain

    options = {k: v for k, v in {"serial": args.serial, "benchmark_binary": args.benchmark_binary,
                                 "ios_team": args.ios_team, "ios_provisioning_profile": args.ios_provisioning_profile,
                                 "ios_bundle_id": args.ios_bundle_id, "compute_units": args.compute_units,
                                 "probe_timeout": args.probe_timeout}.items() if v}
    if args.prepare:
        from hybridexport.bench.devices import load_device
        from hybridexport.bench.runners.apple_devices import prepare_command

        console.print(plain(prepare_command(load_device(args.prepare), options)), highlight=False)
        return 0
    report = device_report(options)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title="device profiles", title_justify="left")
    for col in ("device", "hardware", "protocol", "runners (✓ can run here)"):
        table.add_column(col, overflow="fold")
    for d in report:
        p = d["protocol"]
        proto = plain(f"{p.get('format', '')} {p.get('precision', '')} · {p.get('compute_units', '')}")
        lines = []
        for r in d["runners"]:
            lines.append(f"[green]✓ {plain(r['name'])}[/]" if r["available"] else
                         f"[red]✗ {plain(r['name'])}[/] [dim]{plain(r['reason'])}[/]")
        table.add_row(f"[bold]{plain(d['name'])}[/]\n{plain(d['display_name'])}", plain(d["soc"]), proto,
                      "\n".join(lines))
    console.print(table)
    return 0
