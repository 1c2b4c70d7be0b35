"""Features from a Core ML ML Program (the MIL program inside the model spec).

Works on Linux: it reads the protobuf spec of a converted model (``mlmodel.get_spec()``) or of a
saved ``.mlpackage`` (``coremltools.models.MLModel(path, skip_model_load=True)``); nothing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.predict.features import (
    OpFeature,
    conv_kind,
    elementwise_kind,
    mark_fusable,
    numel,
    reshape_kind,
    shape_stats,
)

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
_SKIP = {"const", "constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense",
         "constexpr_blockwise_shift_scale", "constexpr_cast", "shape", "fill", "range_1d"}
_WEIGHT_ARGS = ("weight", "bias", "gamma", "beta", "mean", "variance", "alpha")


def _shape(value_type: Any) -> tuple[int, ...] | None:
    if value_type.WhichOneof("type") != "tensorType":
        return None
    dims = []
    for d in value_type.tensorType.dimensions:
        if d.WhichOneof("dimension") != "constant":
            return None  # flexible shape: not supported for prediction
        dims.append(int(d.constant.size))
    return tuple(dims)


def _ints(op: Any) -> list[int] | None:
    """Integer values of a const op with an immediate value (perm, axes, ...)."""
    val = op.attributes.get("val")
    if val is None or val.WhichOneof("value") != "immediateValue":
        return None
    t = val.immediateValue.tensor
    if t.WhichOneof("value") == "ints":
        return list(t.ints.values)
    if t.WhichOneof("value") == "longInts":
        return [int(v) for v in t.longInts.values]
    return None


def load_spec(path: str | Path) -> Any:
    """The protobuf spec of a saved ``.mlpackage``/``.mlmodel`` (no Core ML runtime needed)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"Core ML model '{p}' does not exist; run `hybridexport convert MODEL --to coreml`")
    import coremltools as ct

    try:
        return ct.models.MLModel(str(p), skip_model_load=True).get_spec()
    except Exception as exc:  # noqa: BLE001 (coremltools raises many types for a bad package)
        raise InputFileError(f"'{p}' is not a readable Core ML model ({type(exc).__name__}: {exc})") from None


def mil_features(spec: Any) -> list[OpFeature]:
    """One OpFeature per non-constant op of the ``main`` function of an ML Program spec."""
    if spec.WhichOneof("Type") != "mlProgram":
        raise InputFileError("the Core ML model is a neuralnetwork, not an ML Program; re-convert it with "
                             "`hybridexport convert MODEL --to coreml` (ML Program)")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    shapes: dict[str, tuple[int, ...]] = {}
    consts: dict[str, Any] = {}
    for inp in fn.inputs:
        s = _shape(inp.type)
        if s is not None:
            shapes[inp.name] = s
    ops: list[OpFeature] = []
    producer: dict[str, str] = {}
    for op in block.operations:
        out_shapes = [_shape(o.type) for o in op.outputs]
        for o, s in zip(op.outputs, out_shapes, strict=True):
            if s is not None:
                shapes[o.name] = s
        if op.type in _SKIP or op.type.startswith("constexpr_"):
            for o in op.outputs:
                consts[o.name] = op
            continue
        args: dict[str, list[str]] = {
            k: [a.name for a in v.arguments if a.WhichOneof("binding") == "name"] for k, v in sorted(op.inputs.items())
        }
        act_in: list[str] = []
        w_elems = 0
        for k, names in args.items():
            for n in names:
                if n in consts:
                    if k in _WEIGHT_ARGS or k in ("x", "y"):
                        w_elems += numel(shapes.get(n, ()))
                elif n in shapes:
                    act_in.append(n)
        in_elems = sum(numel(shapes[n]) for n in act_in)
        outs = [s for s in out_shapes if s is not None]
        out_elems = sum(numel(s) for s in outs)
        stats = shape_stats([shapes[n] for n in act_in] + outs, outs[0] if outs else ())
        kind, macs = _kind_and_macs(op, args, shapes, consts, outs)
        name = op.outputs[0].name if op.outputs else op.type
        for o in op.outputs:
            producer[o.name] = name
        ops.append(OpFeature(
            name=name,
            op_type=op.type, kind=kind, macs=macs, w_elems=w_elems, in_elems=in_elems, out_elems=out_elems,
            inputs=act_in, **stats,
        ))
    for o in ops:  # tensor names → names of the producing ops (ops are named by their first output)
        o.inputs = [producer.get(n, n) for n in o.inputs]
    mark_fusable(ops)
    return ops


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
            cin = x[1]
            groups = 1
            cout = w[1]
            macs = numel(x) * w[1] * numel(w[2:])
        return conv_kind(cin, cout, groups, tuple(w[2:])), macs
    if t == "linear":
        w = shapes.get(args.get("weight", [""])[0], ())
        return "linear", numel(out) * (w[-1] if w else 1)
    if t == "matmul":
        x = shapes.get(args.get("x", [""])[0], ())
        tx = consts.get(args.get("transpose_x", [""])[0])
        tx_val = _bool_const(tx)
        k = (x[-2] if tx_val else x[-1]) if len(x) >= 2 else 1
        return "matmul", numel(out) * k
    if t == "einsum":
        ins = [shapes[n] for v in args.values() for n in v if n in shapes]
        k = max((s[-1] for s in ins if s), default=1)
        return "matmul", numel(out) * k
    if t == "concat" and _bool_const(consts.get(args.get("interleave", [""])[0])):
        # a channel shuffle: in the Neural Engine's channel-major layout it moves whole (H, W) planes, the
        # traffic of a plain concat, not a relayout across the innermost axis (counted as a relayout,
        # ShuffleNetV2 alone pulled the relayout rate down, and PVTv2's transposes with it)
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


def _bool_const(op: Any) -> bool:
    if op is None:
        return False
    val = op.attributes.get("val")
    if val is None or val.WhichOneof("value") != "immediateValue":
        return False
    t = val.immediateValue.tensor
    return bool(t.bools.values[0]) if t.WhichOneof("value") == "bools" and t.bools.values else False


def _is_view_perm(shape: tuple[int, ...], perm: list[int]) -> bool:
    """A transpose that only moves size-1 axes does not move memory."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)
