"""``hybridexport rewrite MODEL``: run the verified rewrite passes and show what they changed."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "rewrite a model into mobile-friendly ops (verified passes) and report what changed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridexport.cliargs import MODEL_HELP, add_model_arguments

    parser.add_argument("model", metavar="MODEL", nargs="?", help=MODEL_HELP)
    parser.add_argument(
        "--passes", default=None, metavar="A,B,...",
        help="comma-separated passes (default: the target's pipeline; see --list-passes)",
    )
    parser.add_argument(
        "--target", default=None, metavar="TARGET",
        help="pick the target's default pipeline (onnx, tflite, coreml, executorch, coreml-ane)",
    )
    parser.add_argument("--device", "-d", default=None, metavar="DEVICE",
                        help="judge the passes by latency on this device (default with --target: the format's device)")
    parser.add_argument("--judge", choices=("predicted", "measured", "none"), default="predicted",
                        help="with --target/--device: judge passes by the latency model (default), timed here "
                             "(measured; host only), or none")
    add_model_arguments(parser, names=False)
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="local .pth/.pt/.safetensors weights to load")
    parser.add_argument("--allow-mismatch", action="store_true", help="load the checkpoint's matching keys only")
    parser.add_argument("--list-passes", action="store_true", help="list the passes and exit")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import torch

    from hybridexport.console import console, err_console, plain
    from hybridexport.errors import ConversionError
    from hybridexport.rewrite.base import known_pass_names, load_passes
    from hybridexport.rewrite.pipeline import TARGET_PASSES, resolve_passes, run_pipeline
    from hybridexport.rewrite.report import render_report
    from hybridexport.zoo.refs import check_reference, load_model

    if args.list_passes:
        registry = load_passes()
        for name in known_pass_names():
            cls = registry[name]
            console.print(f"[bold]{name}[/]{' (opt-in)' if cls.opt_in else ''}: {cls.summary}")
        return 0
    if not args.model:
        raise ConversionError("rewrite needs a MODEL (e.g. mobilevit-xxs); `hybridexport list` shows the names")
    names = resolve_passes(args.passes, args.target)  # unknown pass names fail here, before building
    if args.target is not None and args.passes is None and args.target not in TARGET_PASSES:
        known = ", ".join(sorted(TARGET_PASSES))
        raise ConversionError(f"unknown rewrite target '{args.target}'; known targets: {known}")
    shapes = getattr(args, "input_shape", None)
    check_reference(args.model, args.resolution, shapes)  # a bad reference fails here, before building
    judge, why = _judge(args)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    with err_console.status(f"rewriting {plain(args.model)} ({', '.join(names)})…"):
        loaded = load_model(args.model, checkpoint=args.checkpoint, resolution=args.resolution,
                            input_shapes=shapes, strict=not args.allow_mismatch)
        _, report = run_pipeline(loaded.module, loaded.example_inputs(), passes=names, target=args.target,
                                 judge=judge)
    report.judge = report.judge or why
    if args.json:
        data = {"model": loaded.name, "resolution": loaded.resolution,
                "input_shapes": [list(s) for s in loaded.input_shapes], **report.to_dict()}
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return 0
    render_report(report, console, title=f"rewrite {loaded.name} @ {loaded.resolution}")
    return 0


def _judge(args: argparse.Namespace) -> tuple[object | None, str]:
    """The judge ``convert`` would use for this target and device (None when not judging, and why)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.errors import ConversionError
    from hybridexport.export import formats
    from hybridexport.rewrite.judge import judge_for

    if args.judge == "none" or args.passes is not None or (args.target is None and args.device is None):
        return None, ""
    fmt = "coreml" if args.target == "coreml-ane" else args.target
    if fmt is None:
        dev = load_device(args.device)
        fmt = dev.priced_format or "onnx"
    if fmt not in formats.NAMES:
        raise ConversionError(f"--device judges passes on a format's artifact; give --target one of "
                              f"{', '.join(formats.NAMES)} (not '{fmt}')")
    return judge_for(fmt, args.device, how=args.judge)
