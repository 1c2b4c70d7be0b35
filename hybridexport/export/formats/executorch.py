"""ExecuTorch: ``torch.export`` → ``to_edge_transform_and_lower`` with the XNNPACK partitioner → ``.pte``.

Checked with the ExecuTorch runtime (``executorch.runtime.Runtime``). fp16 runs the model in float16
behind float32 inputs/outputs (XNNPACK fp16 kernels); int8 is PT2E static quantization with
``XNNPACKQuantizer`` (symmetric, per-channel weights) calibrated on a few seeded random inputs.

``convert`` also writes the ETRecord beside the program (``<name>.pte.etrecord``, ExecuTorch's own
record of the edge program and its debug handles) so the devtools Inspector can map profiled events
back to graph nodes without lowering the model again. The op table has one row per edge-graph node
that runs (inside an XNNPACK delegate, ``XnnpackBackend:<aten op>``, or as a portable kernel), with its
``nn_module_stack`` module path; it is built from the lowered program at conversion, or from the
ETRecord beside a ``.pte`` made elsewhere (pre-lowering nodes), or, without one, from the program's
kernel and delegate calls.
"""

from __future__ import annotations

import copy
import operator
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport import modpath
from hybridexport.errors import InputFileError
from hybridexport.export.formats.base import Built, Format, TableHints
from hybridexport.opkinds import conv_kind, inherit_modules, mark_fusable, numel, shape_stats
from hybridexport.optable import OpRow, OpTable, TensorSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

CALIBRATION_INPUTS = 4
CALIBRATION_SEED_BASE = 2000
ETRECORD_SUFFIX = ".etrecord"

#: aten op base name → canonical kind (convolutions and matmuls are decided from their shapes)
_KIND = {
    "relu": "activation", "hardtanh": "activation", "clamp": "activation", "leaky_relu": "activation",
    "hardswish": "activation", "hardsigmoid": "activation", "abs": "activation", "neg": "activation",
    "gelu": "act_complex", "sigmoid": "act_complex", "silu": "act_complex", "tanh": "act_complex",
    "exp": "act_complex", "sqrt": "act_complex", "rsqrt": "act_complex", "erf": "act_complex",
    "add": "eltwise", "sub": "eltwise", "mul": "eltwise", "div": "eltwise", "maximum": "eltwise",
    "minimum": "eltwise", "pow": "eltwise", "where": "eltwise",
    "_softmax": "softmax", "softmax": "softmax", "native_layer_norm": "norm", "layer_norm": "norm",
    "_native_batch_norm_legit_no_training": "norm", "native_group_norm": "norm",
    "mean": "reduce", "sum": "reduce", "amax": "reduce", "avg_pool2d": "pool", "max_pool2d": "pool",
    "max_pool2d_with_indices": "pool", "adaptive_avg_pool2d": "pool", "permute_copy": "transpose",
    "permute": "transpose", "transpose": "transpose", "cat": "concat", "slice_copy": "slice",
    "split_with_sizes_copy": "slice", "select_copy": "slice", "constant_pad_nd": "pad",
    "upsample_bilinear2d": "resize", "upsample_nearest2d": "resize", "index": "gather",
    "embedding": "gather", "_to_copy": "cast", "expand_copy": "concat", "repeat": "concat",
}
_VIEWS = {"view_copy", "view", "_unsafe_view", "squeeze_copy", "unsqueeze_copy", "clone", "alias_copy",
          "_clone_dim_order", "_to_dim_order_copy"}


def etrecord_path(pte: str | Path) -> Path:
    """Where the ETRecord of ``pte`` lives (``<name>.pte.etrecord``)."""
    p = Path(pte)
    return p.with_name(p.name + ETRECORD_SUFFIX)


class ExecuTorch(Format):
    name = "executorch"
    title = "ExecuTorch"
    suffix = ".pte"
    runtime = "ExecuTorch runtime (XNNPACK delegate)"

    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path,
                opts: ExportOptions) -> Built:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        extra: dict[str, Any] = {"backend": "XnnpackBackend"}
        t0 = time.perf_counter()
        if opts.precision == "fp16":
            module = _float16_body(copy.deepcopy(module).half()).eval()
            extra["quantization"] = "float16 weights and compute (XNNPACK fp16), float32 inputs/outputs"
        with torch.no_grad():
            ep = torch.export.export(module, tuple(examples), strict=False)
        if opts.precision == "int8":
            ep = _quantize_pt2e(ep, examples)
            extra["quantization"] = (
                f"PT2E XNNPACKQuantizer: symmetric int8, per-channel weights, static activations calibrated on "
                f"{CALIBRATION_INPUTS} seeded random inputs")
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
        table = lowered_table(edge.exported_program())
        program = edge.to_executorch()
        converter_seconds = time.perf_counter() - t0
        path.write_bytes(program.buffer)
        record = etrecord_path(path)
        program.get_etrecord().save(str(record))
        extra["etrecord"] = record.name
        extra["delegate_calls"] = table.extra["delegate_calls"]
        extra["non_delegated_ops"] = sum(1 for o in table.ops if ":" not in o.op_type)
        return Built(converter_seconds=converter_seconds, table=table, extra=extra)

    def op_table(self, path: Path, hints: TableHints | None = None) -> OpTable:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"ExecuTorch program '{p}' does not exist; run `hybridexport convert MODEL --to "
                                 "executorch`")
        record = etrecord_path(p)
        if record.exists():
            from executorch.devtools.etrecord import parse_etrecord

            try:
                ep = parse_etrecord(str(record)).edge_dialect_program
            except Exception as exc:  # noqa: BLE001 - any parse failure is a bad sidecar
                raise InputFileError(f"ETRecord {record} cannot be read ({type(exc).__name__}); rebuild the artifact "
                                     "with `hybridexport convert --force`") from None
            if isinstance(ep, dict):
                ep = ep.get("forward") or next(iter(ep.values()))
            table = lowered_table(ep)
            table.extra["source"] = "ETRecord edge program (before delegation)"
            return table
        return program_table(p)

    def run(self, path: Path, input_sets: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        import torch
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(path)).load_method("forward")
        results = []
        for arrays in input_sets:
            outs = method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in arrays])
            results.append([o.detach().float().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs])
        return results


FORMAT = ExecuTorch()


def _float16_body(body: nn.Module) -> nn.Module:
    """``body`` run in float16 behind float32 inputs and outputs."""
    import torch
    from torch import nn

    class Float16Body(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.body = inner

        def forward(self, *xs: torch.Tensor) -> Any:
            y = self.body(*(x.to(torch.float16) for x in xs))
            return y.float() if isinstance(y, torch.Tensor) else tuple(t.float() for t in y)

    return Float16Body(body)


def _quantize_pt2e(ep: Any, examples: tuple[torch.Tensor, ...]) -> Any:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(ep.module(), quantizer)
    with torch.no_grad():
        for i in range(CALIBRATION_INPUTS):
            g = torch.Generator().manual_seed(CALIBRATION_SEED_BASE + i)
            prepared(*(torch.randn(*x.shape, generator=g) for x in examples))
    converted = convert_pt2e(prepared)
    with torch.no_grad():
        return torch.export.export(converted, tuple(examples), strict=False)


def _op_name(target: Any) -> str:
    return str(getattr(target, "__name__", None) or target)


def _vals(val: Any) -> list[Any]:
    if isinstance(val, (list, tuple)):
        return [v for item in val for v in _vals(item)]
    return [val] if hasattr(val, "shape") else []


def _dtype(v: Any) -> str:
    return str(getattr(v, "dtype", "")).replace("torch.", "").replace("float32", "fp32").replace("float16", "fp16")


def _base(name: str) -> str:
    """``aten.convolution.default`` → ``convolution``; ``executorch_call_delegate`` as is."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] in ("aten", "quantized_decomposed", "dim_order_ops") else parts[0]


def _arg_shape(node: Any, i: int) -> tuple[int, ...]:
    """The shape of positional argument ``i`` (a quantized conv's weight is arg 1, not the first param)."""
    arg = node.args[i] if len(node.args) > i else None
    vals = _vals(arg.meta.get("val")) if hasattr(arg, "meta") else []
    return tuple(int(d) for d in vals[0].shape) if vals else ()


def _row(node: Any, op_type: str, params: set[str]) -> OpRow:
    base = _base(_op_name(node.target))
    outs = [tuple(int(d) for d in v.shape) for v in _vals(node.meta.get("val"))]
    args = [a for a in node.all_input_nodes]
    act = [a for a in args if a.name not in params and a.op != "get_attr"]
    weights = [a for a in args if a.name in params or a.op == "get_attr"]
    act_shapes = [tuple(int(d) for d in v.shape) for a in act for v in _vals(a.meta.get("val"))]
    w_shapes = [tuple(int(d) for d in v.shape) for a in weights for v in _vals(a.meta.get("val"))]
    out = outs[0] if outs else ()
    kind, macs = "other", 0
    x, w = _arg_shape(node, 0), _arg_shape(node, 1)
    if base in ("convolution", "conv2d") and len(w) >= 3 and x:
        groups = int(node.args[8]) if base == "convolution" and len(node.args) > 8 else 1
        kind, macs = conv_kind(x[1] if len(x) > 1 else w[1], w[0], groups, w[2:]), numel(out) * w[1] * numel(w[2:])
    elif base in ("addmm", "mm", "linear", "bmm", "matmul"):
        kind = "linear" if weights else "matmul"
        k = act_shapes[0][-1] if act_shapes and act_shapes[0] else 1
        macs = numel(out) * k
    elif base in _VIEWS:
        kind = "view"
    else:
        kind = _KIND.get(base, "other")
    module = modpath.of_node(node)
    in_elems, out_elems = sum(numel(s) for s in act_shapes), sum(numel(s) for s in outs)
    dts = [_dtype(v) for v in _vals(node.meta.get("val"))]
    bpe = 2 if dts and dts[0] == "fp16" else 1 if dts and dts[0] == "int8" else 4
    w_elems = sum(numel(s) for s in w_shapes)
    return OpRow(name=node.name, op_type=op_type, kind=kind, macs=macs, w_elems=w_elems, in_elems=in_elems,
                 out_elems=out_elems, module=module, module_source="metadata" if module else "",
                 inputs=[a.name for a in act], input_shapes=[list(s) for s in act_shapes],
                 output_shapes=[list(s) for s in outs], dtypes=dts, bytes=(in_elems + out_elems + w_elems) * bpe,
                 **shape_stats(act_shapes + outs, out))


def _params(prog: Any) -> set[str]:
    sig = getattr(prog, "graph_signature", None)
    out: set[str] = set()
    for key in ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants"):
        out |= set(getattr(sig, key, {}) or {})
    return out


def lowered_table(prog: Any) -> OpTable:
    """The op table of an edge program: delegate members as ``<Backend>:<op>``, the rest as themselves.

    Rows are linked across delegate boundaries: a delegate's inputs are the outer nodes feeding its call,
    and the outer ``getitem`` of its outputs are the inner nodes that made them."""
    params = _params(prog)
    rows: list[OpRow] = []
    alias: dict[str, str] = {}  # node name → name of the row that produced it
    delegates = 0

    def resolve(names: list[str]) -> list[str]:
        return [alias[n] for n in names if n in alias]

    for node in prog.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is operator.getitem:
            src = node.args[0]
            outs = alias.get(f"{src.name}[]")
            if outs is not None:
                idx = int(node.args[1])
                if idx < len(outs) and outs[idx]:
                    alias[node.name] = outs[idx]
            elif src.name in alias:
                alias[node.name] = alias[src.name]
            continue
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            delegates += 1
            lowered = getattr(prog.graph_module, node.args[0].target)
            inner = lowered.original_module
            inner_params = _params(inner)
            phs = [n for n in inner.graph.nodes if n.op == "placeholder" and n.name not in inner_params]
            for ph, outer in zip(phs, node.args[1:], strict=False):
                if getattr(outer, "name", None) in alias:
                    alias[ph.name] = alias[outer.name]
            for n in inner.graph.nodes:
                if n.op == "call_function" and n.target is not operator.getitem:
                    row = _row(n, f"{lowered.backend_id}:{_op_name(n.target)}", inner_params)
                    row.inputs = resolve(row.inputs)
                    rows.append(row)
                    alias[n.name] = row.name
                elif n.op == "call_function" and n.args[0].name in alias:
                    alias[n.name] = alias[n.args[0].name]
                elif n.op == "output":
                    outs = n.args[0] if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
                    alias[f"{node.name}[]"] = [alias.get(getattr(o, "name", ""), "") for o in outs]  # type: ignore[assignment]
            continue
        row = _row(node, name, params)
        row.inputs = resolve(row.inputs)
        rows.append(row)
        alias[node.name] = row.name
    mark_fusable(rows)
    inherit_modules(rows)
    inputs = [TensorSpec(n.name, [int(d) for d in n.meta["val"].shape], _dtype(n.meta["val"]))
              for n in prog.graph.nodes if n.op == "placeholder" and n.name not in params
              and hasattr(n.meta.get("val"), "shape")]
    return OpTable(format="executorch", ops=rows, inputs=inputs,
                   module_mapping="nn_module_stack of the edge-graph nodes" if any(r.module for r in rows) else "",
                   extra={"delegate_calls": delegates})


def program_table(path: Path) -> OpTable:
    """A ``.pte`` without its ETRecord: one row per kernel or delegate call of the program (no shapes)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte = deserialize_pte_binary(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - any flatbuffer failure means a bad file
        raise InputFileError(f"'{path}' is not a readable ExecuTorch program ({type(exc).__name__}); rebuild it "
                             "with `hybridexport convert --force`") from None
    program = getattr(pte, "program", pte)
    plan = program.execution_plan[0]
    rows: list[OpRow] = []
    for chain in plan.chains:
        for i, ins in enumerate(chain.instructions):
            arg = ins.instr_args
            if hasattr(arg, "op_index"):
                op = plan.operators[arg.op_index]
                rows.append(OpRow(name=f"kernel_{i}", op_type=f"{op.name}.{op.overload}" if op.overload else op.name,
                                  kind="other"))
            elif hasattr(arg, "delegate_index"):
                d = plan.delegates[arg.delegate_index]
                rows.append(OpRow(name=f"delegate_{i}", op_type=f"{d.id}:call", kind="other"))
    return OpTable(format="executorch", ops=rows, extra={"source": "program instructions (no ETRecord beside it)"})
