"""``hybridexport calibrate``: fit a device's latency model and store it in its profile."""

from __future__ import annotations

import argparse

HELP = "fit a device's per-op latency model (phones: published latencies; host: measured here)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="device profile name (iphone13, pixel6, host, ...)")
    parser.add_argument("--data", help="published_latency.csv (default: ../shared/data/latency/published_latency.csv)")
    parser.add_argument("--dry-run", action="store_true", help="fit and print, but do not write the profile")
    parser.add_argument("--json", action="store_true", help="print the latency_model as JSON")
    parser.add_argument("--timer", choices=("cpu", "runner"), default="cpu",
                        help="host only: thread CPU time (stable on a shared machine; default) or the "
                             "host-onnxruntime runner's wall time")
    parser.add_argument("--allow-load", action="store_true",
                        help="host only: fit even on a loaded or unsteady machine (refused otherwise); the "
                             "conditions are recorded and the stored band widened")
    parser.add_argument("--refit", action="store_true",
                        help="host only: measure nothing; fit again from the measurements the last calibration "
                             "stored (profiles/<device>.measurements.json.gz), in seconds")
    parser.add_argument("--probe", action="store_true",
                        help="phones only: first probe the attached device's own GEMM and copy throughput through "
                             "its measuring runner (~1 min), store it in the profile and take the fit's peaks from "
                             "it; predictions can then be rescaled to a device probed later (bench --probe-device)")
    parser.add_argument("--serial", help="with --probe: the adb serial (or device id) to probe")
    parser.add_argument("--benchmark-binary", metavar="PATH",
                        help="with --probe on Android: TFLite benchmark_model for the phone (or "
                             "$HYBRIDEXPORT_BENCHMARK_MODEL)")


def run(args: argparse.Namespace) -> int:
    import json

    from hybridexport.calibrate.profiles import calibration_config, profile_path, read_profile, write_keys
    from hybridexport.cliargs import writable_file
    from hybridexport.console import console, plain, status
    from hybridexport.errors import InputFileError

    device = args.device
    profile = read_profile(device)
    cfg = calibration_config(device, profile)
    host = device == "host" or (cfg["format"] == "onnx" and not cfg.get("match"))
    if host and args.data:
        raise InputFileError(f"--data is the published latency table phones are fitted on; '{device}' is measured "
                             "on this machine instead: leave out --data")
    if args.allow_load and not host:
        raise InputFileError(f"--allow-load is for host calibrations (measured here); '{device}' is fitted on "
                             "published latencies: leave out --allow-load")
    if args.refit and not host:
        raise InputFileError(f"--refit fits again from stored host measurements; '{device}' is fitted on published "
                             "latencies every time: leave out --refit")
    if args.probe and host:
        raise InputFileError(f"--probe measures a phone's own roofline; '{device}' is probed by every host calibration "
                             "already: leave out --probe")
    for given, flag in ((args.serial, "--serial"), (args.benchmark_binary, "--benchmark-binary")):
        if given and not args.probe:
            raise InputFileError(f"{flag} is for probing the device: pass it with --probe")
    if args.refit and (args.allow_load or args.timer != "cpu"):
        given = "--allow-load" if args.allow_load else "--timer"
        raise InputFileError(f"{given} applies to measuring, and --refit measures nothing (the stored measurements "
                             f"keep their timer and conditions): leave out {given}")
    if not args.dry_run:  # a long host calibration must not end in an unwritable profile
        try:
            writable_file(profile_path(device), "the device profile")
        except InputFileError:
            raise InputFileError(f"cannot write the latency model into {profile_path(device)} (not writable): pass "
                                 "--dry-run, or set HYBRIDEXPORT_PROFILES to a writable copy of profiles/") from None
    if args.data:
        from hybridexport.calibrate.catalog import read_csv

        read_csv(args.data)  # a wrong file is reported before any fitting
    probe = None
    with status(f"calibrating the latency model of {plain(device)}"):
        if host:
            from hybridexport.calibrate.host import calibrate_host, refit_host
            from hybridexport.calibrate.measurements import measurements_path

            if args.refit:
                model = refit_host(device)
            else:
                model = calibrate_host(device, timer=args.timer, allow_load=args.allow_load,
                                       save_to=None if args.dry_run else measurements_path(device))
        else:
            from hybridexport.calibrate.fit import calibrate_phone

            if args.probe:
                probe = probe_device(device, {k: v for k, v in (("serial", args.serial),
                                                                 ("benchmark_binary", args.benchmark_binary)) if v})
            model = calibrate_phone(device, args.data, probe=probe)
    if args.json:
        console.print_json(json.dumps(model))
    else:
        print_summary(device, model)
    if not args.dry_run:
        path = write_keys(device, {"latency_model": model, **({"probe": probe} if probe else {})})
        console.print(f"wrote {'probe and ' if probe else ''}latency_model to {plain(path)}", highlight=False)
    return 0


def probe_device(device: str, options: dict) -> dict:
    """Probe the attached ``device`` (:mod:`.device_probe`): the record its profile stores as ``probe``."""
    from hybridexport.bench.devices import load_device
    from hybridexport.calibrate.device_probe import measure_device_probe, probe_record
    from hybridexport.calibrate.profiles import calibration_config
    from hybridexport.console import console

    cfg = calibration_config(device)
    probe, source = measure_device_probe(load_device(device), options, precision=cfg["precision"], unit=cfg["unit"])
    console.print(f"probe of {device} ({source.get('device_model') or source['runner']}): "
                  f"{probe.gemm_gflops:.1f} GFLOP/s, {probe.bandwidth_gbs:.2f} GB/s at {source['precision']}",
                  highlight=False)
    return probe_record(probe, source)


def print_summary(device: str, model: dict) -> None:
    from rich.table import Table

    from hybridexport.console import console

    prov = model.get("provenance", {})
    fit, held = model["fit"], model["heldout"]
    t = Table(title=f"latency model of {device}: {prov.get('protocol', '')}", title_justify="left")
    for col in ("", "rows", "MAPE", "within ±10%", "within ±20%", "Spearman"):
        t.add_column(col, justify="right" if col else "left")
    for name, m in (("fit (all rows)", fit), (f"held out ({held.get('method')})", held)):
        t.add_row(name, str(m["n"]), f"{m['mape']:.1f}%", f"{m['within10']:.0%}", f"{m['within20']:.0%}",
                  f"{m['spearman']:.3f}")
    console.print(t)
    console.print(f"rows used: {prov.get('rows_used')}, skipped: {prov.get('rows_skipped')}")
    reasons: dict[str, int] = {}
    for s in prov.get("skipped", []):
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        console.print(f"  skipped {n:3d}: {why}", highlight=False)
    p = model["params"]
    console.print("parameters: " + ", ".join(f"{k}={v:.3g}" for k, v in p.items()), highlight=False)
