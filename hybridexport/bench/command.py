"""``hybridexport bench``: per-layer latency of an artifact on a device (measured, or predicted)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure (or predict) per-layer latency of exported artifacts on a device"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridexport.cliargs import MODEL_HELP, add_model_arguments, ranged
    from hybridexport.export.formats import NAMES
    from hybridexport.export.manifest import DEFAULT_OUT

    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help=MODEL_HELP + "; or an artifact file (.onnx, .tflite, .mlpackage, .pte, made by convert "
                             "or elsewhere); default: every artifact `convert` wrote into --out")
    parser.add_argument("--device", "-d", default="host", help="device profile (see `hybridexport devices`; default host)")
    parser.add_argument("--format", "-f", dest="format", choices=(*NAMES, "pytorch"),
                        help="artifact format (default: the device's own: coreml for iPhones, tflite for Android, onnx on host)")
    parser.add_argument("--runner", "-r", help="force a runner (e.g. predicted, host-executorch)")
    parser.add_argument("--runs", type=ranged(1, 100000), default=50, help="timed runs (default 50)")
    parser.add_argument("--warmup", type=ranged(0, 100000), default=10, help="untimed warm-up runs (default 10)")
    parser.add_argument("--threads", type=ranged(1, 1024), help="CPU threads (default: the device protocol's, 1 on host)")
    parser.add_argument("--precision", help="artifact precision (default: the device protocol's for its format)")
    add_model_arguments(parser, names=False)
    parser.add_argument("--checkpoint", help="weights to convert with when the artifact must be built")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"artifact directory (default {DEFAULT_OUT})")
    parser.add_argument("--json", metavar="OUT", help="write the Profile (a list when several) as JSON to OUT")
    parser.add_argument("--top", type=ranged(0, 100000), default=15, help="rows to show (default 15)")
    parser.add_argument("--depth", type=ranged(1, 64), help="sum rows per module path cut to DEPTH components")
    g = parser.add_argument_group("phones")
    g.add_argument("--serial", help="adb serial of the phone (default: the attached one matching --device)")
    g.add_argument("--benchmark-binary", metavar="PATH",
                   help="TFLite benchmark_model for the phone (or $HYBRIDEXPORT_BENCHMARK_MODEL)")
    g.add_argument("--android-delegate", choices=("cpu", "gpu", "nnapi"),
                   help="cpu (XNNPACK), gpu or nnapi (default: the device protocol's)")
    g.add_argument("--ios-team", metavar="TEAMID",
                   help="Apple development team that signs coremltools' ModelRunner app (or $HYBRIDEXPORT_IOS_TEAM)")
    g.add_argument("--ios-provisioning-profile", metavar="UUID",
                   help="sign with this provisioning profile instead (or $HYBRIDEXPORT_IOS_PROVISIONING_PROFILE)")
    g.add_argument("--ios-bundle-id", metavar="ID", help="ModelRunner's bundle id (the profile's; or $HYBRIDEXPORT_IOS_BUNDLE_ID)")
    g.add_argument("--compute-units", type=str.upper, choices=("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"),
                   help="Core ML compute units on an iPhone or Mac (default: the device protocol's, ALL)")
    g.add_argument("--probe-timeout", type=ranged(1, 3600), metavar="S",
                   help="seconds a device probe (adb devices, devicectl list) may take (or $HYBRIDEXPORT_PROBE_TIMEOUT; "
                        "default 10)")
    g.add_argument("--bench-timeout", type=ranged(1, 86400), metavar="S",
                   help="seconds one on-device benchmark may take (or $HYBRIDEXPORT_BENCH_TIMEOUT; default 120 + 5 per run)")
    g.add_argument("--probe-device", action="store_true",
                   help="with -r predicted on a phone: probe the attached one (~1 min) and rescale the prediction "
                        "by its speed against the probe its calibration stored (calibrate --probe)")
    g.add_argument("--qai-hub-device", metavar="NAME",
                   help="Qualcomm AI Hub device name (default: the profile's match.qai_hub_devices)")
    g.add_argument("--qai-hub-timeout", type=ranged(1, 86400), metavar="S",
                   help="seconds to wait for an AI Hub job (or $HYBRIDEXPORT_QAI_HUB_TIMEOUT; default 3600)")
    from hybridexport.bench.suite import add_suite_arguments

    add_suite_arguments(parser)


def _not_measured(device: str, options: dict) -> list[str]:
    """Why each measuring runner of ``device`` could not run here (what a real measurement would need)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.select import runner_status

    return [f"{s.name}: {s.reason}" for s in runner_status(load_device(device), options)
            if not s.available and s.name != "predicted"]


def run(args: argparse.Namespace) -> int:
    if args.suite:
        from hybridexport.bench.suite import run_suite

        return int(run_suite(args))
    from hybridexport.atomic import write_json
    from hybridexport.bench import bench
    from hybridexport.bench.table import profile_table
    from hybridexport.cliargs import writable_file
    from hybridexport.console import console, plain

    if args.json:
        writable_file(args.json, "--json")
    if args.probe_device:
        from hybridexport.bench.devices import load_device
        from hybridexport.errors import InputFileError

        if load_device(args.device).kind == "host":
            raise InputFileError("--probe-device rescales a phone's prediction; host predictions probe this machine "
                                 "every time: leave out --probe-device")
        if args.runner != "predicted":
            raise InputFileError("--probe-device rescales a prediction to the attached phone: pass it with "
                                 "-r predicted" + (f" (not -r {args.runner})" if args.runner else ""))
    options = {k: v for k, v in {
        "serial": args.serial, "benchmark_binary": args.benchmark_binary,
        "android_delegate": args.android_delegate, "ios_team": args.ios_team,
        "ios_provisioning_profile": args.ios_provisioning_profile, "ios_bundle_id": args.ios_bundle_id,
        "compute_units": args.compute_units, "qai_hub_device": args.qai_hub_device,
        "qai_hub_timeout": args.qai_hub_timeout, "probe_timeout": args.probe_timeout,
        "bench_timeout": args.bench_timeout, "probe_device": args.probe_device,
    }.items() if v}
    profiles = bench(args.model, device=args.device, fmt=args.format, runner=args.runner, runs=args.runs,
                     warmup=args.warmup, threads=args.threads, out=Path(args.out), precision=args.precision,
                     resolution=args.resolution, checkpoint=args.checkpoint, options=options, progress=True,
                     input_shapes=args.input_shape)
    for p in profiles:
        console.print(profile_table(p, top=args.top, depth=args.depth, wide=console.width >= 110))
        for note in p.notes:
            console.print(f"[dim]note: {plain(note)}[/]", highlight=False)
        if isinstance(p.extra.get("placement"), dict):
            from hybridexport.bench.runners.coreml_placement import placement_table

            console.print(placement_table(p.extra["placement"]), highlight=False)
        if p.obtained == "predicted":
            for why in _not_measured(p.device, options):
                console.print(f"[dim]not measured: {plain(why)}[/]", highlight=False)
    if args.json:
        data = profiles[0].to_dict() if len(profiles) == 1 else [p.to_dict() for p in profiles]
        write_json(args.json, data)
        console.print(f"wrote {plain(args.json)}", highlight=False)
    return 0
