"""``hybridexport convert``: export a model to Core ML, TFLite, ONNX and/or ExecuTorch, verified, with manifests."""

from __future__ import annotations

import argparse
import json

HELP = "export a model to Core ML / TFLite / ONNX / ExecuTorch (verified against PyTorch, with a manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridexport.cliargs import MODEL_HELP, add_model_arguments, ranged
    from hybridexport.export.formats import NAMES
    from hybridexport.export.formats.coreml import TARGETS
    from hybridexport.export.options import PRECISIONS, TOLERANCE

    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument(
        "--to", default="onnx", metavar="FORMAT",
        help=f"{' | '.join(NAMES)} | all, or a comma list (default: onnx)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: hybridexport-out)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="default: fp16 for coreml (the published iPhone protocol), fp32 for the others; "
        "int8 = post-training quantization with each toolchain",
    )
    add_model_arguments(parser)
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="local weights (.pth/.pt/.safetensors)")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="load only the checkpoint keys that fit the model (how many is reported; none is an error)")
    tol = ", ".join(f"{p} {t:g}" for p, t in TOLERANCE.items())
    parser.add_argument("--keep-mismatch", action="store_true",
                        help=f"keep an artifact whose outputs exceed the parity tolerance (relative L2 vs PyTorch fp32: {tol})")
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date artifact exists")
    parser.add_argument("--no-rewrite", action="store_true", help="export the reference model unchanged")
    parser.add_argument("--passes", default=None, metavar="a,b", help="rewrite passes to apply (default pipeline)")
    parser.add_argument("--device", "-d", default=None, metavar="DEVICE",
                        help="target device the default pipeline's passes are judged on (default: the format's: iphone13 "
                             "for Core ML, pixel8 for TFLite, host for ONNX); a pass that makes it slower is skipped")
    parser.add_argument("--judge", choices=("predicted", "measured", "none"), default="predicted",
                        help="how the default pipeline's passes are judged on --device: its latency model (default, "
                             "deterministic), timed here (measured; host only), or none (keep every verified pass)")
    parser.add_argument("--verify-inputs", type=ranged(0, 64), default=4, metavar="N",
                        help="seeded random inputs for the parity check (default 4; 0 skips it)")
    parser.add_argument("--coreml-target", choices=TARGETS, default=None,
                        help="Core ML minimum deployment target (default iOS15; iOS16 for int8)")
    parser.add_argument("--coreml-image-input", action="store_true",
                        help="Core ML input as an RGB image (pixels 0..255, ImageNet normalisation built in)")
    parser.add_argument("--json", action="store_true", help="print the manifests as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from hybridexport.cliargs import writable_dir
    from hybridexport.console import console
    from hybridexport.errors import HybridExportError
    from hybridexport.export.api import convert
    from hybridexport.export.formats import parse, title
    from hybridexport.export.manifest import DEFAULT_OUT, Manifest
    from hybridexport.export.summary import artifact_line, summary_table

    formats = parse(args.to)
    out = writable_dir(args.out or DEFAULT_OUT)
    failures: list[tuple[str, str, str]] = []

    def on_result(m: Manifest) -> None:
        if not args.json:
            console.print(artifact_line(m), highlight=False, soft_wrap=True)

    def on_error(fmt: str, exc: HybridExportError) -> None:
        failures.append((args.model, fmt, str(exc)))
        if not args.json:
            console.print(f"[red]✗[/] {title(fmt)}: {exc}", highlight=False, soft_wrap=True)

    manifests = convert(
        args.model,
        to=formats,
        out=out,
        precision=args.precision,
        resolution=args.resolution,
        input_shapes=args.input_shape,
        input_names=args.input_name,
        checkpoint=args.checkpoint,
        force=args.force,
        rewrite=not args.no_rewrite,
        passes=args.passes,
        device=args.device,
        judge=False if args.judge == "none" else args.judge,
        verbose=bool(getattr(args, "verbose", False)),
        allow_mismatch=args.allow_mismatch,
        keep_mismatch=args.keep_mismatch,
        verify_inputs=args.verify_inputs,
        coreml_target=args.coreml_target,
        coreml_image_input=args.coreml_image_input,
        keep_going=len(formats) > 1,
        on_result=on_result,
        on_error=on_error,
    )
    if args.json:
        payload = [m.to_dict() for m in manifests]
        for model, fmt, why in failures:
            payload.append({"model": model, "format": fmt, "error": why})
        print(json.dumps(payload, indent=2, default=str))
    else:
        console.print(summary_table(manifests, failures))
    return 2 if failures else 0
