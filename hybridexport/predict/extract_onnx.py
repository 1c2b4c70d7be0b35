"""Features from an ONNX graph (the host runtime's graph).

The dynamo exporter records each node's ``nn.Module`` scope in ``pkg.torch.onnx.name_scopes``;
shapes come from the graph's value_info (ONNX shape inference fills any gaps).
"""

from __future__ import annotations

import ast
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
    "Gemm": "linear", "MatMul": "matmul", "Einsum": "matmul",
    "Softmax": "softmax", "LogSoftmax": "softmax",
    "LayerNormalization": "norm", "BatchNormalization": "norm", "InstanceNormalization": "norm",
    "GroupNormalization": "norm", "RMSNormalization": "norm", "LpNormalization": "norm",
    "GlobalAveragePool": "pool", "AveragePool": "pool", "MaxPool": "pool", "GlobalMaxPool": "pool",
    "Transpose": "transpose", "DepthToSpace": "relayout", "SpaceToDepth": "relayout",
    "Concat": "concat", "Split": "slice", "Slice": "slice", "Tile": "concat", "Expand": "concat",
    "Pad": "pad", "Resize": "resize", "Upsample": "resize",
    "Gather": "gather", "GatherElements": "gather", "GatherND": "gather", "ScatterND": "gather",
    "Cast": "cast",
}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Less", "Greater", "Mod", "And",
           "Or", "PRelu", "Sum"}
_UNARY = {"Relu", "HardSigmoid", "HardSwish", "Clip", "LeakyRelu", "Reciprocal", "Abs", "Neg", "Floor", "Ceil",
          "Sign", "Not", "Identity", "Dropout"}
_UNARY_COMPLEX = {"Gelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "Erf", "Exp", "Sqrt", "Log", "Mish", "Sin",
                  "Cos"}
_VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_SKIP = {"Constant", "Shape", "ConstantOfShape", "Range", "Size"}
#: activations ONNX Runtime (1.31, CPU, all optimizations) fuses into the Conv before them, as observed in
#: its optimized graphs; GELU, ELU, Softplus, Mish run as kernels of their own, and so does any activation
#: after a MatMul/Gemm on 3-D tokens
ORT_CONV_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish"})


def load_onnx(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"ONNX model '{p}' does not exist; run `hybridexport convert MODEL --to onnx`")
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (protobuf decode errors have many types)
        raise InputFileError(f"'{p}' is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    return model


def _dims(t: Any) -> tuple[int, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in t.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def module_from_node(node: Any) -> str:
    """The innermost nn.Module scope the dynamo exporter recorded for ``node``."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return ""
            mods = [s for s in scopes[:-1] if s]
            return mods[-1] if mods else ""
    return ""


def onnx_features(model: Any) -> list[OpFeature]:
    """One OpFeature per compute node of an ONNX ModelProto (Constant/Shape plumbing skipped)."""
    import onnx

    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _dims(vi.type)
        if s is not None:
            shapes[vi.name] = s
    produced = {o for n in g.node for o in n.output}
    if any(o not in shapes for n in g.node if n.op_type not in _SKIP for o in n.output if o):
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in inferred.graph.value_info:
            s = _dims(vi.type)
            if s is not None:
                shapes.setdefault(vi.name, s)
    consts = {i.name for i in g.initializer}
    for i in g.initializer:
        shapes[i.name] = tuple(int(d) for d in i.dims)
    consts |= {o for n in g.node if n.op_type in _SKIP for o in n.output}
    producer: dict[str, str] = {}
    feats: list[OpFeature] = []
    for n in g.node:
        if n.op_type in _SKIP:
            continue
        ins = [i for i in n.input if i]
        act = [i for i in ins if i not in consts and (i in produced or i in shapes)]
        const = [i for i in ins if i in consts]
        outs = [shapes[o] for o in n.output if o in shapes]
        out = outs[0] if outs else ()
        kind, macs = _kind_and_macs(n, [shapes.get(i, ()) for i in ins], out)
        stats = shape_stats([shapes[i] for i in act if i in shapes] + outs, out)
        w_elems = 0 if n.op_type in _VIEW else sum(numel(shapes[i]) for i in const if shapes.get(i))
        feats.append(OpFeature(
            name=n.name or n.output[0], op_type=n.op_type, kind=kind, macs=macs, w_elems=w_elems,
            in_elems=sum(numel(shapes[i]) for i in act if i in shapes), out_elems=sum(numel(s) for s in outs),
            module=module_from_node(n), inputs=[producer[i] for i in act if i in producer], **stats,
        ))
        for o in n.output:
            producer[o] = feats[-1].name
    mark_fusable(feats, runtime_fuses=ort_fuses)
    mark_gated_activations(feats)
    return feats


def ort_fuses(op: OpFeature, producer: OpFeature) -> bool:
    """ONNX Runtime fuses an activation only into a Conv, and only one of ``ORT_CONV_ACTIVATIONS``;
    constant eltwise ops (bias, scale) fold into any compute producer."""
    if op.kind not in ("activation", "act_complex"):
        return True
    return op.op_type in ORT_CONV_ACTIVATIONS and producer.op_type == "Conv"


def mark_gated_activations(ops: list[OpFeature]) -> None:
    """Make a gated activation ``x * f(x)`` one op: the dynamo exporter writes SiLU/Swish as Sigmoid + Mul,
    and ONNX Runtime's QuickGelu fusion runs the pair as one transcendental elementwise kernel (its
    profile shows no Sigmoid node). ``f`` is flagged fused; the Mul becomes the activation, reading ``x``
    only (``f(x)`` is never written to memory)."""
    consumers: dict[str, list[OpFeature]] = {}
    for o in ops:
        for i in o.inputs:
            consumers.setdefault(i, []).append(o)
    for o in ops:
        if o.kind not in ("act_complex", "activation") or len(o.inputs) != 1 or o.fusable:
            continue
        users = consumers.get(o.name, [])
        if len(users) == 1 and users[0].op_type == "Mul" and o.inputs[0] in users[0].inputs:
            o.fusable = True
            gate = users[0]
            gate.kind = o.kind
            gate.in_elems = max(gate.in_elems - o.out_elems, 0)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _kind_and_macs(node: Any, ins: list[tuple[int, ...]], out: tuple[int, ...]) -> tuple[str, int]:
    t = node.op_type
    if t in ("Conv", "ConvTranspose") and len(ins) >= 2 and len(ins[1]) >= 3:
        x, w = ins[0], ins[1]
        groups = int(_attr(node, "group", 1))
        cin = x[1] if len(x) > 1 else w[1] * groups
        if t == "Conv":
            kind = conv_kind(cin, w[0], groups, tuple(w[2:]))
            if kind == "conv_dw" and w[0] != cin:
                # a depthwise conv with a channel multiplier: ONNX Runtime's depthwise kernels (NCHWc)
                # take multiplier 1 only; the rest run the generic grouped path (measured 2-4x slower)
                kind = "conv_group"
            return kind, numel(out) * w[1] * numel(w[2:])
        return "conv_kxk", numel(x) * w[1] * numel(w[2:])
    if t == "Gemm" and len(ins) >= 2 and ins[1]:
        k = ins[0][-1] if ins[0] else ins[1][-1]
        return "linear", numel(out) * k
    if t == "MatMul" and len(ins) >= 2 and ins[0]:
        return ("matmul" if len(ins[1]) != 2 else "linear"), numel(out) * ins[0][-1]
    if t in _KIND:
        kind = _KIND[t]
        if kind == "transpose" and ins and ins[0]:
            perm = list(_attr(node, "perm", range(len(ins[0]))[::-1]))
            moved = [p for p in perm if ins[0][p] != 1]
            if moved == sorted(moved):
                return "view", 0
        return kind, 0
    if t.startswith("Reduce"):
        return "reduce", 0
    if t in _VIEW:
        return reshape_kind(ins[0] if ins else (), out), 0
    return elementwise_kind(t, _BINARY, _UNARY, _UNARY_COMPLEX), 0
