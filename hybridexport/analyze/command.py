"""``hybridexport info MODEL``: params, BN-folded params, MACs, peak activations, stages, op histogram;
``hybridexport info path/to/artifact``: what an exported file holds (:mod:`hybridexport.analyze.artifact`)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "analyse a model: params (as built and BN-folded), MACs, peak activation memory, per-stage costs, op histogram"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridexport.cliargs import MODEL_HELP, add_model_arguments

    parser.add_argument("model", metavar="MODEL",
                        help=MODEL_HELP + "; or an artifact (.mlpackage, .onnx, .tflite, .pte, made anywhere): its "
                        "inputs, op histogram, module paths and, for Core ML, Neural Engine findings")
    add_model_arguments(parser, names=False)
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="local .pth/.pt/.safetensors weights to load")
    parser.add_argument("--allow-mismatch", action="store_true", help="load the checkpoint's matching keys only")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON on stdout")
    parser.add_argument("--coreml", action="store_true",
                        help="also list the ops of the Core ML artifact (what `convert MODEL --to coreml` writes, "
                             "converted now if missing) that the Neural Engine is known not to run or to run slowly "
                             "(static rules, works on Linux)")
    parser.add_argument("--no-rewrite", action="store_true", help="with --coreml: the model as given, not rewritten")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="with --coreml: where artifacts are found or converted to (default: hybridexport-out)")


def _load(args: argparse.Namespace, meta: bool):  # -> LoadedModel
    import torch

    from hybridexport.zoo.refs import load_model

    shapes = getattr(args, "input_shape", None)
    if meta:
        with torch.device("meta"):
            return load_model(args.model, resolution=args.resolution, input_shapes=shapes)
    return load_model(args.model, checkpoint=args.checkpoint, resolution=args.resolution, input_shapes=shapes,
                      strict=not args.allow_mismatch)


def analyze_from_args(args: argparse.Namespace, on_step=None):  # -> ModelAnalysis
    """Build and analyse. A zoo or timm model without a checkpoint is built on the ``meta`` device (no
    weights are materialised: nothing of the analysis depends on their values); a model that cannot run
    there, and the user's own model files and programs, are built on the CPU."""
    from hybridexport.analyze.model import analyze
    from hybridexport.errors import ConversionError, HybridExportError
    from hybridexport.zoo.refs import check_reference, is_reference

    check_reference(args.model, args.resolution, getattr(args, "input_shape", None))  # fails before building
    step = on_step or (lambda _m: None)
    if args.checkpoint is None and not is_reference(args.model):
        try:
            step("building on the meta device")
            return analyze(_load(args, meta=True), on_step=step)
        except HybridExportError:
            raise
        except Exception:  # noqa: BLE001 - meta tensors are unsupported by some models: build for real
            pass
    step("building the model")
    loaded = _load(args, meta=False)
    try:
        return analyze(loaded, on_step=step)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        native = loaded.spec.resolution
        shapes = " + ".join("×".join(map(str, s)) for s in loaded.input_shapes)
        if getattr(args, "input_shape", None):
            fix = "pass the --input-shape the network takes (one per forward() argument)"
        elif native and native != loaded.resolution:
            fix = f"pass --resolution {native} (the size its definition is built for)"
        else:
            fix = "pass a --resolution the network supports (a multiple of 32 is safe) or its --input-shape"
        raise ConversionError(f"{loaded.name} does not run on a {shapes} input ({first}); {fix}") from None


def ane_findings(args: argparse.Namespace, on_step=None) -> list:  # -> list[ane_rules.Finding]
    """The Neural Engine findings of the model's Core ML artifact (the one ``convert`` writes; converted now
    if missing), module paths from its op table."""
    from hybridexport.analyze.ane_rules import artifact_findings
    from hybridexport.export import convert
    from hybridexport.export.manifest import DEFAULT_OUT
    from hybridexport.optable import OpTable

    step = on_step or (lambda _m: None)
    step("finding or converting the Core ML artifact")
    [man] = convert(args.model, to="coreml", out=args.out or DEFAULT_OUT, resolution=args.resolution,
                    input_shapes=getattr(args, "input_shape", None), checkpoint=args.checkpoint,
                    allow_mismatch=args.allow_mismatch, rewrite=not args.no_rewrite)
    table = OpTable.load(man.op_table_path())
    step("checking the Neural Engine rules")
    return artifact_findings(man.path, table.module_of)


def run_artifact(args: argparse.Namespace) -> int:
    from hybridexport.analyze.artifact import artifact_info, render_artifact
    from hybridexport.console import console, err_console
    from hybridexport.export.formats import BadOptionError

    given = [f for f, v in (("--checkpoint", args.checkpoint), ("--resolution", args.resolution),
                            ("--input-shape", args.input_shape), ("--coreml", args.coreml),
                            ("--no-rewrite", args.no_rewrite), ("--out", args.out)) if v]
    if given:
        raise BadOptionError(f"{', '.join(given)} only apply to a model, and '{args.model}' is an artifact already "
                             "made; leave them out")
    with err_console.status(f"reading {args.model}…"):
        info = artifact_info(args.model)
    if args.json:
        sys.stdout.write(json.dumps(info.to_dict(), indent=2) + "\n")
    else:
        render_artifact(info, console)
    return 0


def run(args: argparse.Namespace) -> int:
    from hybridexport.bench import is_artifact_path
    from hybridexport.console import console, err_console, plain
    from hybridexport.errors import InputFileError

    if is_artifact_path(args.model):
        return run_artifact(args)
    if not args.coreml and (args.out or args.no_rewrite):
        raise InputFileError(f"{'--out' if args.out else '--no-rewrite'} only applies with --coreml (the Core ML "
                             "artifact's Neural Engine findings); add --coreml or leave it out")
    if args.coreml:
        from hybridexport.cliargs import writable_dir
        from hybridexport.export.manifest import DEFAULT_OUT

        writable_dir(args.out or DEFAULT_OUT, "--out")
    findings = None
    with err_console.status(f"analysing {plain(args.model)}…") as status:
        def on_step(msg: str) -> None:
            status.update(f"{plain(args.model)}: {plain(msg)}…")

        analysis = analyze_from_args(args, on_step=on_step)
        if args.coreml:
            findings = ane_findings(args, on_step=on_step)
    if args.json:
        data = analysis.to_dict()
        if findings is not None:
            from hybridexport.analyze.ane_rules import summarize

            data["coreml"] = {"summary": summarize(findings), "findings": [f.to_dict() for f in findings]}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    from hybridexport.analyze.render import render

    render(analysis, console)
    if findings is not None:
        from hybridexport.analyze.ane_rules import render_ane_report

        how = "as given, no rewrite" if args.no_rewrite else "the artifact `convert` writes"
        render_ane_report(findings, console, title=f"Neural Engine ({analysis.name}, {how})")
    return 0
