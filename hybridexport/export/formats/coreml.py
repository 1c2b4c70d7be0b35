"""Core ML: an ML Program ``.mlpackage`` from a ``torch.jit.trace``d model (coremltools 9.0).

Defaults follow the protocol behind the published iPhone latencies (iFormer's export_coreml.py):
``ct.convert`` of the traced model, FP16 compute precision, ``ComputeUnit.ALL``,
``minimum_deployment_target=iOS15``. fp32 uses FLOAT32 compute; int8 adds
``ct.optimize.coreml.linear_quantize_weights`` (symmetric per-channel int8 weights, fp16 compute), which
needs iOS16 (``constexpr_affine_dequantize``). ``coreml_image_input`` makes a single input an RGB
``ImageType`` that maps pixels 0..255 to ImageNet-normalised values.

The op table is read from the saved spec (nothing runs): one row per non-constant op of ``main``, with
the Neural Engine findings of :mod:`hybridexport.analyze.ane_rules` on the program read back from the
package. Module paths come from the conversion: coremltools records on each MIL op the TorchScript value it
came from (the saved file does not), and that value's node carries its module scope, so ``convert`` hands
them over as hints; a conv into which coremltools folded a BatchNorm carries the norm's value and maps to the
pair's parent, as in the other formats.

Core ML prediction needs macOS; elsewhere ``run`` interprets the package's ML Program with
:mod:`hybridexport.export.mil` (the program's declared fp16/fp32 semantics, not Core ML's kernels), and
raises :class:`NotRunnableHere` only when an op has no kernel there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport import modpath
from hybridexport.errors import ConversionError, InputFileError
from hybridexport.export.formats import BadOptionError
from hybridexport.export.formats.base import Built, Format, NotRunnableHere, TableHints
from hybridexport.opkinds import (
    conv_kind,
    elementwise_kind,
    inherit_modules,
    mark_fusable,
    numel,
    reshape_kind,
    shape_stats,
)
from hybridexport.optable import OpRow, OpTable, TensorSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
DEFAULT_TARGET = "iOS15"
#: iOS target → Core ML specification version (ML Program needs >= 6).
SPEC_VERSIONS = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9}

_KIND = {
    "linear": "linear", "matmul": "matmul", "einsum": "matmul",
    "softmax": "softmax",
    "layer_norm": "norm", "batch_norm": "norm", "instance_norm": "norm", "l2_norm": "norm",
    "local_response_norm": "norm",
    "avg_pool": "pool", "max_pool": "pool", "l2_pool": "pool",
    "transpose": "transpose", "pixel_shuffle": "relayout", "pixel_unshuffle": "relayout",
    "space_to_depth": "relayout", "depth_to_space": "relayout", "sliding_windows": "relayout",
    "concat": "concat", "split": "slice", "slice_by_index": "slice", "slice_by_size": "slice",
    "stack": "concat", "tile": "concat",
    "pad": "pad",
    "upsample_nearest_neighbor": "resize", "upsample_bilinear": "resize", "resize_bilinear": "resize",
    "resize_nearest_neighbor": "resize", "resize": "resize", "crop_resize": "resize",
    "gather": "gather", "gather_nd": "gather", "gather_along_axis": "gather", "scatter": "gather",
    "scatter_nd": "gather", "scatter_along_axis": "gather",
    "cast": "cast",
}
_BINARY = {"add", "sub", "mul", "real_div", "floor_div", "mod", "pow", "maximum", "minimum", "select",
           "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "logical_and",
           "logical_or", "logical_xor"}
_UNARY = {"relu", "relu6", "sigmoid_hard", "clip", "leaky_relu", "abs", "square", "prelu", "thresholded_relu",
          "linear_activation", "clamped_relu", "sign", "floor", "ceil", "round", "logical_not", "threshold",
          "inverse"}
_UNARY_COMPLEX = {"gelu", "sigmoid", "silu", "tanh", "elu", "softplus", "softsign", "erf", "exp", "exp2", "sqrt",
                  "rsqrt", "log", "scaled_tanh", "sin", "cos", "softplus_parametric"}
_VIEW = {"reshape", "expand_dims", "squeeze", "flatten2d", "reshape_like", "identity"}
_SKIP = {"const", "shape", "fill", "range_1d"}
_WEIGHT_ARGS = ("weight", "bias", "gamma", "beta", "mean", "variance", "alpha")
_DTYPES = {"FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "INT8": "int8", "UINT8": "uint8",
           "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def image_params() -> dict[str, Any]:
    """Scale and per-channel bias of the ImageType: ``x = pixel * scale + bias`` ≈ (pixel/255 - mean) / std."""
    std = float(np.mean(IMAGENET_STD))
    return {"scale": 1.0 / (255.0 * std), "bias": [-m / std for m in IMAGENET_MEAN], "color_layout": "RGB"}


def resolved_target(opts: ExportOptions) -> str:
    """The deployment target: the one asked for, else iOS15 (iOS16 for int8, whose weights need it)."""
    if opts.coreml_target is not None:
        return opts.coreml_target
    return "iOS16" if opts.precision == "int8" else DEFAULT_TARGET


def input_names(n: int) -> list[str]:
    """Core ML input names: ``input`` for one input, ``input_0``… for several."""
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def output_names(n: int) -> list[str]:
    """Core ML output names: ``output`` for one output, ``output_0``… for several."""
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


class CoreML(Format):
    name = "coreml"
    title = "Core ML"
    suffix = ".mlpackage"
    default_precision = "fp16"
    default_device = "iphone13"
    own_options = ("coreml_target", "coreml_image_input")
    runtime = "Core ML (MLModel.predict, compute units ALL)"

    def mismatch_hint(self, opts: ExportOptions) -> str:
        if opts.precision == "fp32":
            return ""
        return "; `hybridexport diagnose <artifact>` on a kept artifact shows the op where fp16 loses precision"

    def method(self, opts: ExportOptions) -> str:
        """Core ML itself on macOS; elsewhere the MIL reference interpreter at the program's precision."""
        if sys.platform == "darwin":
            return self.runtime
        from hybridexport.export.mil import METHODS

        return METHODS["fp32" if opts.precision == "fp32" else "fp16"]

    def check(self, opts: ExportOptions) -> None:
        if opts.coreml_target is not None and opts.coreml_target not in TARGETS:
            raise BadOptionError(
                f"unknown Core ML deployment target '{opts.coreml_target}'; use one of: {', '.join(TARGETS)}")
        if opts.precision == "int8" and opts.coreml_target == "iOS15":
            raise BadOptionError("Core ML int8 weights need iOS16 or later (constexpr_affine_dequantize); "
                                 "use --coreml-target iOS16 or leave it out")

    def key_options(self, opts: ExportOptions) -> dict[str, Any]:
        return {**super().key_options(opts), "coreml_target": resolved_target(opts),
                "coreml_image_input": opts.coreml_image_input}

    def failure_hints(self, opts: ExportOptions) -> list[str]:
        hints = super().failure_hints(opts)
        if TARGETS.index(resolved_target(opts)) < TARGETS.index("iOS17"):
            hints.append("--coreml-target iOS17")
        return [*hints, "export --to onnx"]

    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path,
                opts: ExportOptions) -> Built:
        import coremltools as ct
        import torch

        self.check(opts)
        target = resolved_target(opts)
        if opts.coreml_image_input and len(examples) != 1:
            raise BadOptionError(f"--coreml-image-input takes a model with one image input; this one has "
                                 f"{len(examples)} inputs")
        from hybridexport.export.verify import flatten_outputs

        t0 = time.perf_counter()
        with torch.no_grad():
            n_out = len(flatten_outputs(module(*examples)))
            traced = torch.jit.trace(module, examples, check_trace=False)
        names = list(opts.input_names) or input_names(len(examples))
        if opts.coreml_image_input:
            p = image_params()
            inputs = [ct.ImageType(name=names[0], shape=tuple(examples[0].shape), scale=p["scale"], bias=p["bias"],
                                   color_layout=ct.colorlayout.RGB)]
        else:
            inputs = [ct.TensorType(name=n, shape=tuple(x.shape)) for n, x in zip(names, examples, strict=True)]
        mlmodel = ct.convert(
            traced,
            inputs=inputs,
            # explicit names: TorchScript may call the last value "input", clashing with the input
            outputs=[ct.TensorType(name=n) for n in output_names(n_out)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32 if opts.precision == "fp32" else ct.precision.FLOAT16,
            compute_units=ct.ComputeUnit.ALL,
            minimum_deployment_target=getattr(ct.target, target),
            skip_model_load=True,
        )
        # the scopes exist only in the in-memory program
        op_modules = scope_modules(mlmodel._mil_program, torchscript_paths(traced))  # noqa: SLF001
        extra: dict[str, Any] = {
            "coreml_target": target,
            "compute_precision": "FLOAT32" if opts.precision == "fp32" else "FLOAT16",
            "compute_units": "ALL",
            "traced_with": "torch.jit.trace",
        }
        if opts.coreml_image_input:
            extra["image_input"] = image_params()
        if opts.precision == "int8":
            cfg = ct.optimize.coreml.OptimizationConfig(
                global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", granularity="per_channel"))
            mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=cfg)
            extra["quantization"] = "linear_quantize_weights: int8 symmetric per-channel weights, fp16 compute"
        converter_seconds = time.perf_counter() - t0
        mlmodel.save(str(path))
        table = self.op_table(path, TableHints(op_modules=op_modules))
        check_structure(table, [list(x.shape) for x in examples], target)
        return Built(converter_seconds=converter_seconds, table=table, extra=extra)

    def op_table(self, path: Path, hints: TableHints | None = None) -> OpTable:
        spec = load_spec(path)
        table = spec_table(spec)
        op_modules = (hints.op_modules if hints else None) or {}
        for row in table.ops:
            if row.name in op_modules:
                row.module, row.module_source = op_modules[row.name], "scope"
        if op_modules:
            inherit_modules(table.ops)
            table.module_mapping = ("TorchScript values coremltools records on each MIL op, and the module scopes of "
                                    "the nodes that made them (at conversion)")
        add_findings(table, path, spec)
        return table

    def run(self, path: Path, input_sets: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        spec = load_spec(path)
        if sys.platform != "darwin":
            from hybridexport.export.mil import NotInterpreted, run_package

            try:
                names = [f.name for f in spec.description.input]
                return run_package(path, [dict(zip(names, arrays, strict=True)) for arrays in input_sets])
            except NotInterpreted as exc:
                raise NotRunnableHere(f"{exc.parity_reason}; checked structurally: {structure_summary(spec)}") from exc
        import coremltools as ct

        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        ins = [f for f in spec.description.input]
        outs = [o.name for o in spec.description.output]
        results = []
        for arrays in input_sets:
            feed = {}
            for f, x in zip(ins, arrays, strict=True):
                image = f.type.WhichOneof("Type") == "imageType"
                feed[f.name] = _to_image(x) if image else np.ascontiguousarray(x, dtype=np.float32)
            pred = model.predict(feed)
            results.append([np.asarray(pred[n], dtype=np.float32) for n in outs])
        return results

    def reference_inputs(self, opts: ExportOptions, shapes: list[list[int]], n: int) -> list[list[torch.Tensor]] | None:
        """With an image input, verify on random pixel images (as the model sees them)."""
        if not opts.coreml_image_input:
            return None
        import torch

        from hybridexport.export.verify import VERIFY_SEED_BASE

        p = image_params()
        bias = torch.tensor(p["bias"]).view(1, 3, 1, 1)
        out = []
        for i in range(n):
            g = torch.Generator().manual_seed(VERIFY_SEED_BASE + i)
            pixels = torch.randint(0, 256, tuple(shapes[0]), generator=g).float()
            out.append([pixels * p["scale"] + bias])
        return out


FORMAT = CoreML()


# ----------------------------------------------------------------------------- reading a package


def load_spec(path: str | Path) -> Any:
    """The protobuf spec of a saved ``.mlpackage`` (no Core ML runtime needed)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"Core ML model '{p}' does not exist; run `hybridexport convert MODEL --to coreml`")
    import coremltools as ct

    try:
        return ct.utils.load_spec(str(p))
    except Exception as exc:  # noqa: BLE001 - coremltools raises many types for a bad package
        raise InputFileError(f"'{p}' is not a readable Core ML model ({type(exc).__name__}: {exc}); "
                             "rebuild it with `hybridexport convert --force`") from None


def load_program(path: str | Path, spec: Any | None = None) -> Any:
    """The MIL program of a saved ML Program package, typed and with its weights (coremltools' milproto reader)."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    spec = load_spec(path) if spec is None else spec
    _require_mlprogram(spec, path)
    return load_milproto(spec, spec.specificationVersion, str(Path(path) / "Data" / "com.apple.CoreML" / "weights"))


def _require_mlprogram(spec: Any, path: Any) -> None:
    if spec.WhichOneof("Type") != "mlProgram":
        raise InputFileError(f"{path}: a Core ML {spec.WhichOneof('Type')}, not an ML Program; re-convert it with "
                             "`hybridexport convert MODEL --to coreml` (ML Program)")


def torchscript_paths(traced: Any) -> dict[str, str]:
    """TorchScript value name → module path of the node that made it, in the graph coremltools converts
    (the same inlining and renumbering it applies before naming MIL values)."""
    from coremltools.converters.mil.frontend.torch.torchscript_utils import _expand_and_optimize_ir

    graph, _, _ = _expand_and_optimize_ir(traced)
    out: dict[str, str] = {}
    for node in graph.nodes():
        path = modpath.from_torchscript_scope(node.scopeName())
        if path:
            for v in node.outputs():
                out[v.debugName()] = path
    return out


def scope_modules(program: Any, ts_paths: dict[str, str]) -> dict[str, str]:
    """MIL op output name → nn.Module path for an in-memory converted program.

    coremltools records on each MIL op the TorchScript value it came from (the last entry of its
    ``TORCHSCRIPT_MODULE_NAME`` scope; the entries before it keep only the last attribute of each module, so
    they are not a path): that value's node names the module. A conv coremltools fused with a BatchNorm
    carries the norm's value and maps to the pair's parent."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    out: dict[str, str] = {}

    def walk(block: Any) -> None:
        for op in block.operations:
            if op.op_type != "const" and op.outputs:
                scopes = getattr(op, "scopes", None) or {}
                names = scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME) or []
                types = scopes.get(ScopeSource.TORCHSCRIPT_MODULE_TYPE) or []
                module = ts_paths.get(str(names[-1]), "") if names else ""
                if module and op.op_type == "conv" and len(types) >= 2 and "BatchNorm" in str(types[-2]):
                    module = modpath.parent(module)
                if module:
                    out[op.outputs[0].name] = module
            for inner in getattr(op, "blocks", []) or []:
                walk(inner)

    for fn in program.functions.values():
        walk(fn)
    return out


def _shape(value_type: Any) -> tuple[int, ...] | None:
    if value_type.WhichOneof("type") != "tensorType":
        return None
    dims = []
    for d in value_type.tensorType.dimensions:
        if d.WhichOneof("dimension") != "constant":
            return None  # a flexible shape
        dims.append(int(d.constant.size))
    return tuple(dims)


def _dtype(value_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    if value_type.WhichOneof("type") != "tensorType":
        return ""
    name = MIL_pb2.DataType.Name(value_type.tensorType.dataType)
    return _DTYPES.get(name, name.lower())


def _const_value(op: Any) -> Any:
    val = op.attributes.get("val")
    if val is None or val.WhichOneof("value") != "immediateValue":
        return None
    t = val.immediateValue.tensor
    kind = t.WhichOneof("value")
    if kind in ("ints", "longInts", "bools", "floats"):
        return list(getattr(t, kind).values)
    return None


def _ints(op: Any) -> list[int] | None:
    v = _const_value(op)
    return [int(x) for x in v] if v is not None and all(isinstance(x, int) for x in v) else None


def _bool(op: Any) -> bool:
    v = _const_value(op) if op is not None else None
    return bool(v[0]) if v and isinstance(v[0], bool) else False


def spec_table(spec: Any) -> OpTable:
    """The op table of an ML Program spec's ``main`` function (modules and findings not yet filled)."""
    _require_mlprogram(spec, "the Core ML model")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    consts: dict[str, Any] = {}
    for inp in fn.inputs:
        s = _shape(inp.type)
        if s is not None:
            shapes[inp.name] = s
        dtypes[inp.name] = _dtype(inp.type)
    ops: list[OpRow] = []
    producer: dict[str, str] = {}
    constants: dict[str, int] = {}
    for op in block.operations:
        out_shapes = [_shape(o.type) for o in op.outputs]
        for o, s in zip(op.outputs, out_shapes, strict=True):
            if s is not None:
                shapes[o.name] = s
            dtypes[o.name] = _dtype(o.type)
        if op.type in _SKIP or op.type.startswith("constexpr_"):
            for o in op.outputs:
                consts[o.name] = op
            constants[op.type] = constants.get(op.type, 0) + 1
            continue
        args = {k: [a.name for a in v.arguments if a.WhichOneof("binding") == "name"] for k, v in sorted(op.inputs.items())}
        act_in: list[str] = []
        w_elems = 0
        for k, names in args.items():
            for n in names:
                if n in consts:
                    if k in _WEIGHT_ARGS or k in ("x", "y"):
                        w_elems += numel(shapes.get(n, ()))
                elif n in shapes:
                    act_in.append(n)
        outs = [s for s in out_shapes if s is not None]
        in_elems = sum(numel(shapes[n]) for n in act_in)
        out_elems = sum(numel(s) for s in outs)
        kind, macs = _kind_and_macs(op, args, shapes, consts, outs)
        name = op.outputs[0].name if op.outputs else op.type
        for o in op.outputs:
            producer[o.name] = name
        out_dtypes = [dtypes.get(o.name, "") for o in op.outputs]
        bpe = _BYTES.get(out_dtypes[0], 4) if out_dtypes else 4
        w_bpe = max((_BYTES.get(dtypes.get(n, ""), 2) for names in args.values() for n in names if n in consts),
                    default=bpe)
        ops.append(OpRow(
            name=name, op_type=op.type, kind=kind, macs=macs, w_elems=w_elems, in_elems=in_elems,
            out_elems=out_elems, inputs=act_in, input_shapes=[list(shapes[n]) for n in act_in],
            output_shapes=[list(s) for s in outs], dtypes=out_dtypes,
            bytes=(in_elems + out_elems) * bpe + w_elems * w_bpe,
            **shape_stats([shapes[n] for n in act_in] + outs, outs[0] if outs else ()),
        ))
    for o in ops:  # tensor names → names of the producing ops (ops are named by their first output)
        o.inputs = [producer.get(n, n) for n in o.inputs]
    mark_fusable(ops)
    return OpTable(
        format="coreml", ops=ops,
        inputs=[TensorSpec(f.name, list(_feature_shape(f)), _feature_kind(f)) for f in spec.description.input],
        outputs=[TensorSpec(f.name, list(_feature_shape(f)), _feature_kind(f)) for f in spec.description.output],
        extra={"spec_version": int(spec.specificationVersion), "opset": fn.opset, "constants": constants},
    )


_BYTES = {"fp16": 2, "fp32": 4, "fp64": 8, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1}


def _kind_and_macs(op: Any, args: dict[str, list[str]], shapes: dict[str, tuple[int, ...]],
                   consts: dict[str, Any], outs: list[tuple[int, ...]]) -> tuple[str, int]:
    t = op.type
    out = outs[0] if outs else ()
    if t in ("conv", "conv_transpose"):
        w = shapes.get(args.get("weight", [""])[0], ())
        x = shapes.get(args.get("x", [""])[0], ())
        if len(w) < 3 or len(x) < 3:
            return "conv_kxk", 0
        if t == "conv":
            cin, cout = x[1], w[0]
            groups = max(cin // max(w[1], 1), 1)
            macs = numel(out) * w[1] * numel(w[2:])
        else:  # weight (Cin, Cout/groups, k...)
            cin, groups, cout = x[1], 1, w[1]
            macs = numel(x) * w[1] * numel(w[2:])
        return conv_kind(cin, cout, groups, tuple(w[2:])), macs
    if t == "linear":
        w = shapes.get(args.get("weight", [""])[0], ())
        return "linear", numel(out) * (w[-1] if w else 1)
    if t == "matmul":
        x = shapes.get(args.get("x", [""])[0], ())
        tx = _bool(consts.get(args.get("transpose_x", [""])[0]))
        k = (x[-2] if tx else x[-1]) if len(x) >= 2 else 1
        return "matmul", numel(out) * k
    if t == "einsum":
        ins = [shapes[n] for v in args.values() for n in v if n in shapes]
        k = max((s[-1] for s in ins if s), default=1)
        return "matmul", numel(out) * k
    if t == "concat" and _bool(consts.get(args.get("interleave", [""])[0])):
        # a channel shuffle: in the Neural Engine's channel-major layout it moves whole (H, W) planes, the
        # traffic of a plain concat, not a relayout across the innermost axis
        return "concat", 0
    if t in _KIND:
        kind = _KIND[t]
        if kind == "transpose":
            perm = _ints(consts[args["perm"][0]]) if args.get("perm") and args["perm"][0] in consts else None
            x = shapes.get(args.get("x", [""])[0], ())
            if perm is not None and x and _is_view_perm(x, perm):
                return "view", 0
        return kind, 0
    if t.startswith("reduce_"):
        return "reduce", 0
    if t in _VIEW:
        return reshape_kind(shapes.get(args.get("x", [""])[0], ()), out), 0
    return elementwise_kind(t, _BINARY, _UNARY, _UNARY_COMPLEX), 0


def _is_view_perm(shape: tuple[int, ...], perm: list[int]) -> bool:
    """A transpose that only moves size-1 axes does not move memory."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


def add_findings(table: OpTable, path: Path, spec: Any) -> None:
    """Attach the static Neural Engine findings (``"<severity>:<rule>"``) to each row, by op output name."""
    from hybridexport.analyze.ane_rules import findings_by_output

    try:
        program = load_program(path, spec)
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - a program coremltools cannot read back: no findings, say why
        table.extra["findings"] = f"not checked: the program could not be read back ({type(exc).__name__})"
        return
    by_output = findings_by_output(program)
    for row in table.ops:
        row.findings = [f"{f.severity}:{f.rule}" for f in by_output.get(row.name, [])]
    table.extra["findings"] = "Neural Engine rules of hybridexport.analyze.ane_rules"


def _feature_shape(f: Any) -> list[int]:
    kind = f.type.WhichOneof("Type")
    if kind == "multiArrayType":
        return [int(s) for s in f.type.multiArrayType.shape]
    if kind == "imageType":
        im = f.type.imageType
        return [1, 3, int(im.height), int(im.width)]
    return []


def _feature_kind(f: Any) -> str:
    return "image" if f.type.WhichOneof("Type") == "imageType" else "tensor"


def check_structure(table: OpTable, input_shapes: list[list[int]], target: str) -> None:
    """Raise ConversionError when the saved program does not have the interface PyTorch has."""
    problems = []
    version = int(table.extra.get("spec_version", 0))
    if version < SPEC_VERSIONS[target]:
        problems.append(f"spec version {version} < {SPEC_VERSIONS[target]} for {target}")
    got = [t.shape for t in table.inputs]
    if got != [list(s) for s in input_shapes]:
        problems.append(f"inputs {got} != PyTorch {input_shapes}")
    if not table.ops:
        problems.append("the program has no ops")
    if problems:
        raise ConversionError("Core ML structural check failed: " + "; ".join(problems))


def structure_summary(spec: Any) -> str:
    """One line describing what the structural check sees in a spec."""
    table = spec_table(spec)
    ins = ", ".join(f"'{t.name}' {t.dtype} {tuple(t.shape)}" for t in table.inputs)
    outs = ", ".join(f"'{t.name}' {tuple(t.shape)}" for t in table.outputs)
    return (f"ML Program spec v{table.extra['spec_version']}, input {ins}, output {outs}, {len(table.ops)} MIL ops "
            f"in {len(table.histogram())} types, {table.rank5_tensors()} rank-5 tensors")


def _to_image(x: np.ndarray) -> Any:
    """Invert :meth:`CoreML.reference_inputs`: normalised (1, 3, H, W) → the RGB PIL image Core ML expects."""
    from PIL import Image

    p = image_params()
    bias = np.asarray(p["bias"], dtype=np.float64).reshape(1, 3, 1, 1)
    pixels = np.clip(np.rint((x.astype(np.float64) - bias) / p["scale"]), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[0].transpose(1, 2, 0), mode="RGB")
