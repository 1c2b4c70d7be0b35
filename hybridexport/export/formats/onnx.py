"""ONNX: ``torch.onnx.export(..., dynamo=True)``, one self-contained file, checked with onnxruntime.

fp16 converts weights and compute to float16 with float32 inputs/outputs
(``onnxruntime.transformers.float16``); int8 is onnxruntime's ``quantize_dynamic`` (int8 weights,
activations quantized at run time).

The op table has one row per compute node (``Constant``/``Shape`` plumbing left out), shapes from the
graph's value_info (ONNX shape inference fills gaps). The dynamo exporter records every node's
``nn.Module`` scope in ``pkg.torch.onnx.name_scopes`` metadata (:func:`hybridexport.modpath.from_onnx_metadata`);
a Conv that ONNX-Script fused with its BatchNorm carries the norm's scope and maps to the pair's parent,
and nodes an optimizer pass made without metadata take a neighbour's module. ``fusable`` follows what
ONNX Runtime's CPU provider fuses (observed in its optimized graphs).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport import modpath
from hybridexport.errors import InputFileError
from hybridexport.export.formats.base import Built, Format, TableHints
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
    import onnx
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

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
#: ONNX elem_type → dtype name
_DTYPES = {1: "fp32", 10: "fp16", 11: "fp64", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 9: "bool", 16: "bf16"}
_BYTES = {"fp32": 4, "fp16": 2, "fp64": 8, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1, "bf16": 2}


def input_names(n: int) -> list[str]:
    """ONNX input names: ``input`` for one input, ``input_0``… for several."""
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


class ONNX(Format):
    name = "onnx"
    title = "ONNX"
    suffix = ".onnx"
    runtime = "onnxruntime (CPUExecutionProvider)"

    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path,
                opts: ExportOptions) -> Built:
        import onnx
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            program = torch.onnx.export(module, tuple(examples), dynamo=True, optimize=True, verbose=False,
                                        input_names=list(opts.input_names) or input_names(len(examples)))
        proto = program.model_proto
        converter_seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        if opts.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(proto, keep_io_types=True)
            extra["quantization"] = "float16 weights and compute, float32 I/O (onnxruntime.transformers.float16)"
        elif opts.precision == "int8":
            proto = _quantize_dynamic(proto)
            extra["quantization"] = "onnxruntime quantize_dynamic: int8 weights (QInt8), dynamic int8 activations"
        onnx.save_model(proto, str(path))  # < 2 GB: one self-contained file, metadata_props included
        opset = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
        extra.update(opset=opset.get("ai.onnx"), opsets=opset, ir_version=proto.ir_version, nodes=len(proto.graph.node))
        return Built(converter_seconds=converter_seconds, table=table_of(proto), extra=extra)

    def op_table(self, path: Path, hints: TableHints | None = None) -> OpTable:
        return table_of(load(path))

    def run(self, path: Path, input_sets: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        import onnxruntime as ort
        import torch

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return [[np.asarray(o) for o in sess.run(None, dict(zip(names, arrays, strict=True)))] for arrays in input_sets]

    def failure_hints(self, opts: ExportOptions) -> list[str]:
        return ["--no-rewrite"]


FORMAT = ONNX()


def load(path: str | Path) -> Any:
    """The ModelProto at ``path`` (a one-line error when it is missing or not ONNX)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"ONNX model '{p}' does not exist; run `hybridexport convert MODEL --to onnx`")
    import onnx

    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise InputFileError(f"'{p}' is not a readable ONNX model ({type(exc).__name__}: {exc}); rebuild it with "
                             "`hybridexport convert --force`") from None


def node_modules(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX node name → nn.Module path from the dynamo exporter's metadata ("" where a node has none)."""
    out: dict[str, str] = {}
    for node in _all_nodes(model.graph):
        props = {p.key: p.value for p in node.metadata_props}
        module = modpath.from_onnx_metadata(props)
        classes = modpath.onnx_class_hierarchy(props)
        fused_bn = "FuseBatchNormIntoConv" in props.get("pkg.onnxscript.rewriter.rule_name", "")
        if node.op_type == "Conv" and fused_bn and len(classes) >= 2 and "BatchNorm" in classes[-2]:
            module = modpath.parent(module)
        out[node.name] = module
    return out


def _dims(t: Any) -> tuple[int, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in t.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def table_of(model: onnx.ModelProto) -> OpTable:
    """The op table of an ONNX ModelProto."""
    import onnx

    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _dims(vi.type)
        if s is not None:
            shapes[vi.name] = s
        dtypes[vi.name] = _DTYPES.get(vi.type.tensor_type.elem_type, "")
    produced = {o for n in g.node for o in n.output}
    if any(o not in shapes for n in g.node if n.op_type not in _SKIP for o in n.output if o):
        with contextlib.suppress(Exception):  # best effort: a graph it rejects keeps the shapes it has
            inferred = onnx.shape_inference.infer_shapes(model)
            for vi in inferred.graph.value_info:
                s = _dims(vi.type)
                if s is not None:
                    shapes.setdefault(vi.name, s)
                dtypes.setdefault(vi.name, _DTYPES.get(vi.type.tensor_type.elem_type, ""))
    consts = {i.name for i in g.initializer}
    for i in g.initializer:
        shapes[i.name] = tuple(int(d) for d in i.dims)
        dtypes[i.name] = _DTYPES.get(i.data_type, "")
    consts |= {o for n in g.node if n.op_type in _SKIP for o in n.output}
    modules = node_modules(model)
    producer: dict[str, str] = {}
    rows: list[OpRow] = []
    for n in g.node:
        if n.op_type in _SKIP:
            continue
        ins = [i for i in n.input if i]
        act = [i for i in ins if i not in consts and (i in produced or i in shapes)]
        const = [i for i in ins if i in consts]
        outs = [shapes[o] for o in n.output if o in shapes]
        out = outs[0] if outs else ()
        kind, macs = _kind_and_macs(n, [shapes.get(i, ()) for i in ins], out)
        w_elems = 0 if n.op_type in _VIEW else sum(numel(shapes[i]) for i in const if shapes.get(i))
        w_bytes = 0 if n.op_type in _VIEW else sum(numel(shapes[i]) * _BYTES.get(dtypes.get(i, ""), 4)
                                                   for i in const if shapes.get(i))
        out_dtypes = [dtypes.get(o, "") for o in n.output]
        bpe = _BYTES.get(out_dtypes[0], 4) if out_dtypes else 4
        in_elems = sum(numel(shapes[i]) for i in act if i in shapes)
        out_elems = sum(numel(s) for s in outs)
        module = modules.get(n.name, "")
        rows.append(OpRow(
            name=n.name or n.output[0], op_type=n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}",
            kind=kind, macs=macs, w_elems=w_elems, in_elems=in_elems, out_elems=out_elems,
            module=module, module_source="metadata" if module else "",
            inputs=[producer[i] for i in act if i in producer],
            input_shapes=[list(shapes[i]) for i in act if i in shapes], output_shapes=[list(s) for s in outs],
            dtypes=out_dtypes, bytes=(in_elems + out_elems) * bpe + w_bytes,
            **shape_stats([shapes[i] for i in act if i in shapes] + outs, out),
        ))
        for o in n.output:
            producer[o] = rows[-1].name
    mark_fusable(rows, runtime_fuses=ort_fuses)
    mark_gated_activations(rows)
    inherit_modules(rows)
    opset = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    return OpTable(
        format="onnx", ops=rows,
        inputs=[TensorSpec(i.name, list(_dims(i.type) or ()), dtypes.get(i.name, "")) for i in g.input
                if i.name not in consts],
        outputs=[TensorSpec(o.name, list(_dims(o.type) or ()), dtypes.get(o.name, "")) for o in g.output],
        module_mapping=("dynamo exporter node metadata (pkg.torch.onnx.name_scopes)"
                        if any(r.module_source == "metadata" for r in rows) else ""),
        extra={"opset": opset.get("ai.onnx"), "nodes": len(g.node)},
    )


def ort_fuses(op: OpRow, producer: OpRow) -> bool:
    """ONNX Runtime fuses an activation only into a Conv, and only one of ``ORT_CONV_ACTIVATIONS``;
    constant eltwise ops (bias, scale) fold into any compute producer."""
    if op.kind not in ("activation", "act_complex"):
        return True
    return op.op_type in ORT_CONV_ACTIVATIONS and producer.op_type == "Conv"


def mark_gated_activations(ops: list[OpRow]) -> None:
    """Make a gated activation ``x * f(x)`` one op: the dynamo exporter writes SiLU/Swish as Sigmoid + Mul,
    and ONNX Runtime's QuickGelu fusion runs the pair as one transcendental elementwise kernel (its
    profile shows no Sigmoid node). ``f`` is flagged fused; the Mul becomes the activation, reading ``x``
    only (``f(x)`` is never written to memory)."""
    consumers: dict[str, list[OpRow]] = {}
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


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                nodes.extend(_all_nodes(attr.g))
            for sub in attr.graphs:
                nodes.extend(_all_nodes(sub))
    return nodes


def _quantize_dynamic(proto: onnx.ModelProto) -> onnx.ModelProto:
    """int8 dynamic quantization, keeping each node's module-path metadata."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = onnx.ModelProto()
    src.CopyFrom(proto)
    # The exporter's value_info records initializer shapes; onnxruntime transposes Gemm weights into
    # MatMul weights and its shape inference then conflicts with those stale entries. Drop them
    # (shape inference recomputes them).
    del src.graph.value_info[:]
    with tempfile.TemporaryDirectory(prefix="hybridexport-onnx-q") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        quantize_dynamic(src, str(out), weight_type=QuantType.QInt8, per_channel=False)
        q = onnx.load(str(out))
    _carry_metadata(proto, q)
    return q


def _carry_metadata(original: onnx.ModelProto, quantized: onnx.ModelProto) -> None:
    """Give nodes the quantizer created the metadata of the node they replace (by name, else by consumer)."""
    meta = {n.name: list(n.metadata_props) for n in original.graph.node if n.metadata_props}
    names = sorted(meta, key=len, reverse=True)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in quantized.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    missing = [n for n in quantized.graph.node if not n.metadata_props]
    for n in missing:
        src = next((k for k in names if n.name.startswith(k)), None)
        if src is not None:
            n.metadata_props.extend(meta[src])
    for n in reversed(missing):
        if n.metadata_props:
            continue
        for out in n.output:
            donor = next((c for c in consumers.get(out, []) if c.metadata_props), None)
            if donor is not None:
                n.metadata_props.extend(donor.metadata_props)
                break
