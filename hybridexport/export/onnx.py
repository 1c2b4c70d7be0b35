"""ONNX: ``torch.onnx.export(..., dynamo=True)``, one self-contained file, checked with onnxruntime.

The dynamo exporter records, on every node, the ``nn.Module`` path it came from
(``pkg.torch.onnx.name_scopes`` and ``namespace`` metadata); the saved model keeps it, and
:func:`onnx_node_modules` reads it back (the bench stage maps profiler rows to modules with it).
fp16 converts weights and compute to float16 with float32 inputs/outputs
(``onnxruntime.transformers.float16``); int8 is onnxruntime's ``quantize_dynamic`` (int8 weights,
activations quantized at run time).
"""

from __future__ import annotations

import ast
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport.export.base import Built, histogram

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

INPUT_NAME = "input"
MODULE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace")


def build(module: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions) -> Built:
    """Export ``module`` to ``path`` (.onnx) at ``opts.precision``."""
    import onnx
    import torch

    t0 = time.perf_counter()
    program = torch.onnx.export(
        module, (example,), dynamo=True, optimize=True, verbose=False, input_names=[INPUT_NAME]
    )
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
    mapping = onnx_node_modules(proto)
    extra.update(
        opset=opset.get("ai.onnx"),
        opsets=opset,
        ir_version=proto.ir_version,
        nodes=len(proto.graph.node),
        nodes_with_module_path=sum(1 for v in mapping.values() if v is not None),
        input_name=proto.graph.input[0].name if proto.graph.input else None,
        output_names=[o.name for o in proto.graph.output],
    )
    return Built(ops=op_histogram(proto), rank5_tensors=count_rank5(proto), converter_seconds=converter_seconds,
                 extra=extra)


def run(path: Path, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """onnxruntime (CPU) outputs for each input."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [[np.asarray(o) for o in sess.run(None, {name: x})] for x in inputs]


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """ONNX op_type counts (``domain::op`` for non-default domains), including nested subgraphs."""
    c: Counter = Counter()
    for node in _all_nodes(proto.graph):
        c[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
    return histogram(c)


def count_rank5(proto: onnx.ModelProto) -> int:
    """Number of tensors of rank >= 5 (graph inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        inferred = proto
    g = inferred.graph
    ranks: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    for init in g.initializer:
        ranks[init.name] = len(init.dims)
    return sum(1 for r in ranks.values() if r >= 5)


def onnx_node_modules(model_proto: onnx.ModelProto) -> dict[str, str | None]:
    """Node name → ``nn.Module`` path it came from (``""`` = the root module; None = unknown).

    Reads the dynamo exporter's node metadata: ``pkg.torch.onnx.name_scopes`` (a list of scopes whose last
    element is the FX node itself) or, failing that, ``namespace`` (``": Cls/path: Cls/.../node: op"``).
    """
    out: dict[str, str | None] = {}
    for node in _all_nodes(model_proto.graph):
        props = {p.key: p.value for p in node.metadata_props}
        out[node.name] = _module_path(props)
    return out


def _module_path(props: dict[str, str]) -> str | None:
    scopes = props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            items = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            items = None
        if isinstance(items, list) and items:
            modules = [s for s in items[:-1] if isinstance(s, str)]
            return modules[-1] if modules else ""
    ns = props.get("namespace")
    if ns:
        parts = ns.split("/")[:-1]  # the last part is the node ("silu_1: aten.silu.default")
        paths = [p.split(":", 1)[0].strip() for p in parts]
        return paths[-1] if paths else ""
    return None


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
