"""Features from a ``.tflite`` file: op list and tensor shapes from the LiteRT interpreter.

litert-torch names every tensor after the ``nn.Module`` stack that produced it
(``pkg.Model/pkg.Stage_stages/pkg.Block_0/...``), so rows map back to module paths directly.
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
    "FULLY_CONNECTED": "linear", "BATCH_MATMUL": "matmul",
    "SOFTMAX": "softmax", "LOG_SOFTMAX": "softmax", "L2_NORMALIZATION": "norm",
    "MEAN": "reduce", "SUM": "reduce", "REDUCE_MAX": "reduce", "REDUCE_MIN": "reduce", "REDUCE_PROD": "reduce",
    "AVERAGE_POOL_2D": "pool", "MAX_POOL_2D": "pool", "L2_POOL_2D": "pool",
    "CONCATENATION": "concat", "SLICE": "slice", "STRIDED_SLICE": "slice", "SPLIT": "slice",
    "SPLIT_V": "slice", "PACK": "concat", "UNPACK": "slice", "TILE": "concat", "BROADCAST_TO": "concat",
    "PAD": "pad", "PADV2": "pad", "MIRROR_PAD": "pad",
    "RESIZE_BILINEAR": "resize", "RESIZE_NEAREST_NEIGHBOR": "resize",
    "GATHER": "gather", "GATHER_ND": "gather", "SCATTER_ND": "gather", "EMBEDDING_LOOKUP": "gather",
    "CAST": "cast", "QUANTIZE": "cast", "DEQUANTIZE": "cast",
    "SPACE_TO_DEPTH": "relayout", "DEPTH_TO_SPACE": "relayout",
}
_BINARY = {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "FLOOR_DIV",
           "SELECT", "SELECT_V2", "EQUAL", "LESS", "GREATER", "ADD_N"}
_UNARY = {"HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1", "SQUARE", "ABS", "LEAKY_RELU", "PRELU", "NEG", "FLOOR",
          "CEIL", "SIGN"}
_UNARY_COMPLEX = {"LOGISTIC", "GELU", "TANH", "EXP", "RSQRT", "SQRT", "ELU", "LOG", "SIN", "COS"}
_VIEW = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def module_from_tensor_name(name: str) -> str:
    """``pkg.Net/pkg.Stage_stages/pkg.Block_0/torch...Conv2d_c;1`` → ``stages.0.c`` (best effort)."""
    last = name.split(";")
    # fused ops join several locations with ';'; the last named location is the op itself
    locs = [p for p in last if "/" in p or "." in p]
    if not locs:
        return ""
    segs = locs[-1].split("/")[1:]
    parts = []
    for seg in segs:
        cls_attr = seg.rsplit(".", 1)[-1]
        if "_" not in cls_attr:
            continue
        parts.append(cls_attr.split("_", 1)[1])
    return ".".join(parts)


def load_ops(path: str | Path) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], set[int]]:
    """(ops, tensors by index, model input indices) of a .tflite file, via the LiteRT interpreter (no inference runs)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"TFLite model '{p}' does not exist; run `hybridexport convert MODEL --to tflite`")
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(p))
        ops = it._get_ops_details()  # noqa: SLF001 (the only public-ish view of the op list)
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        inputs = {int(d["index"]) for d in it.get_input_details()}
    except (ValueError, RuntimeError) as exc:
        raise InputFileError(f"'{p}' is not a readable TFLite model ({exc})") from None
    return ops, tensors, inputs


def tflite_features(path: str | Path) -> list[OpFeature]:
    """One OpFeature per op of the first subgraph."""
    ops, tensors, graph_inputs = load_ops(path)
    produced = {int(i) for op in ops for i in op["outputs"]}
    producer: dict[int, str] = {}
    feats: list[OpFeature] = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        outs = [int(i) for i in op["outputs"]]
        shape = {i: tuple(int(s) for s in tensors[i]["shape"]) for i in ins + outs if i in tensors}
        # constants: tensors no op produces and that are not model inputs (non-float scalars too)
        act = [i for i in ins if i in produced or i in graph_inputs]
        const = [i for i in ins if i not in act]
        t = op["op_name"]
        out = shape.get(outs[0], ()) if outs else ()
        kind, macs = _kind_and_macs(t, [shape.get(i, ()) for i in ins], out)
        w_elems = sum(numel(shape[i]) for i in const if shape.get(i) and t not in _VIEW | {"TRANSPOSE"})
        stats = shape_stats([shape[i] for i in act + outs if i in shape], out)
        name = tensors[outs[0]]["name"] if outs else t
        feats.append(OpFeature(
            name=f"{op['index']}:{name}", op_type=t, kind=kind, macs=macs, w_elems=w_elems,
            in_elems=sum(numel(shape[i]) for i in act if i in shape),
            out_elems=sum(numel(shape[i]) for i in outs if i in shape),
            module=module_from_tensor_name(name), **stats,
            inputs=[producer[i] for i in act if i in producer],
        ))
        for i in outs:
            producer[i] = feats[-1].name
    mark_fusable(feats)
    return feats


def _kind_and_macs(t: str, ins: list[tuple[int, ...]], out: tuple[int, ...]) -> tuple[str, int]:
    if t == "CONV_2D" and len(ins) >= 2 and len(ins[1]) == 4:
        x, w = ins[0], ins[1]  # x NHWC, w OHWI
        cin = x[-1] if x else w[-1]
        groups = max(cin // max(w[-1], 1), 1)
        return conv_kind(cin, w[0], groups, (w[1], w[2])), numel(out) * w[1] * w[2] * w[3]
    if t == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and len(ins[1]) == 4:
        w = ins[1]  # 1HWO
        return "conv_dw", numel(out) * w[1] * w[2]
    if t == "TRANSPOSE_CONV" and len(ins) >= 3:
        w, x = ins[1], ins[2]
        return "conv_kxk", numel(x) * (w[0] if w else 1) * (w[1] * w[2] if len(w) == 4 else 1)
    if t == "CONV_3D":
        return "conv_kxk", 0
    if t == "FULLY_CONNECTED" and len(ins) >= 2 and ins[1]:
        return "linear", numel(out) * ins[1][-1]
    if t == "BATCH_MATMUL" and len(ins) >= 2 and len(ins[0]) >= 2 and out:
        x = ins[0]
        k = x[-1] if x[-2] == out[-2] else x[-2]
        return "matmul", numel(out) * k
    if t in _KIND:
        return _KIND[t], 0
    if t == "TRANSPOSE":
        return "transpose", 0
    if t in _VIEW:
        return reshape_kind(ins[0] if ins else (), out), 0
    return elementwise_kind(t, _BINARY, _UNARY, _UNARY_COMPLEX), 0
