"""TFLite (LiteRT): ``litert_torch.convert`` → ``.tflite``, checked with ai-edge-litert's interpreter.

litert-torch 0.10.0's NCHW→NHWC layout optimisation breaks some graphs in its final MLIR passes (timm
``mobilevitv2_050``: "'tfl.mul' op operands don't have broadcast-compatible shapes", from an
``expand_as`` feeding a ``mul``). When the converter's passes fail, the conversion is retried with the
known workarounds below, in order, and the one that worked is recorded in the manifest
(``extra.workarounds``).

fp16 and int8 are applied to the fp32 flatbuffer with ai-edge-quantizer: fp16 = float16 weights
(weight-only float casting, dequantized at load), int8 = dynamic-range quantization (int8 weights,
activations quantized at run time).

The op table is read from the flatbuffer through the interpreter (without delegates, so it lists the
model's own ops): litert-torch names every tensor after the module hierarchy of the torch op that made
it (:func:`hybridexport.modpath.from_litert_name`); an op whose outputs carry no location takes the
module of its input's producer, else of its consumer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

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
_DTYPES = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "uint8", "int32": "int32",
           "int64": "int64", "int16": "int16", "bool": "bool"}
_BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "int16": 2, "bool": 1}

@dataclass(frozen=True)
class Workaround:
    name: str
    description: str
    apply: Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _without_layout_pass() -> Iterator[None]:
    """Replace litert-torch's OptimizeLayoutTransposesPass by a no-op for one conversion."""
    from litert_torch import fx_infra
    from litert_torch._convert import fx_passes

    original = fx_passes.OptimizeLayoutTransposesPass

    class _Skip(original):  # type: ignore[misc, valid-type]
        def call(self, exported_program: Any) -> Any:
            return fx_infra.ExportedProgramPassResult(exported_program, False)

    fx_passes.OptimizeLayoutTransposesPass = _Skip
    try:
        yield
    finally:
        fx_passes.OptimizeLayoutTransposesPass = original


WORKAROUNDS = (
    Workaround(
        "LITERT_TORCH_FULL_TFL_DECOMPS=1",
        "litert-torch config env var: lower covered aten ops through its torch_tfl decompositions "
        "(expand → BROADCAST_TO), which avoids the layout pass's non-broadcastable tfl.mul",
        lambda: _env("LITERT_TORCH_FULL_TFL_DECOMPS", "1"),
    ),
    Workaround(
        "skip OptimizeLayoutTransposesPass",
        "litert-torch's NCHW→NHWC layout-transpose optimisation disabled (more TRANSPOSE ops remain)",
        _without_layout_pass,
    ),
)


def needs_workaround(exc: BaseException) -> bool:
    """Whether ``exc`` is litert-torch's converter-pass failure that the workarounds address."""
    msg = str(exc)
    return "Failed to run converter passes" in msg or "broadcast-compatible" in msg


def convert_flatbuffer(module: nn.Module, examples: tuple[torch.Tensor, ...]) -> tuple[bytes, list[dict[str, str]]]:
    """fp32 flatbuffer bytes and the workarounds that were needed (empty when none)."""
    import litert_torch
    import torch

    litert_torch.config.show_progress = False

    def once() -> bytes:
        with torch.no_grad():
            return litert_torch.convert(module, tuple(examples)).model_content()

    try:
        return once(), []
    except Exception as first:
        if not needs_workaround(first):
            raise
        last: BaseException = first
        for w in WORKAROUNDS:
            try:
                with w.apply():
                    content = once()
            except Exception as exc:
                last = exc
                continue
            return content, [{"name": w.name, "why": _first_line(first), "what": w.description}]
        raise last from first


class TFLite(Format):
    name = "tflite"
    title = "TFLite"
    suffix = ".tflite"
    default_device = "pixel8"
    runtime = "ai-edge-litert Interpreter (default XNNPACK delegate)"

    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path,
                opts: ExportOptions) -> Built:
        t0 = time.perf_counter()
        content, workarounds = convert_flatbuffer(module, examples)
        converter_seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {"workarounds": workarounds}
        if opts.precision != "fp32":
            content = _quantize(content, opts.precision)
            extra["quantization"] = (
                "ai-edge-quantizer dynamic range: int8 weights (per-channel), float32 activations quantized at run time"
                if opts.precision == "int8" else "ai-edge-quantizer float casting: float16 weights, float32 compute")
        path.write_bytes(content)
        known = {n or modpath.ROOT for n, _ in module.named_modules()}
        return Built(converter_seconds=converter_seconds, table=self.op_table(path, TableHints(known_modules=known)),
                     extra=extra)

    def op_table(self, path: Path, hints: TableHints | None = None) -> OpTable:
        it = _interpreter(path, delegates=False)
        known = hints.known_modules if hints else None
        ops = it._get_ops_details()  # noqa: SLF001 - the interpreter's one view of the op list
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        graph_inputs = {int(d["index"]) for d in it.get_input_details()}
        table = OpTable(
            format="tflite", ops=_rows(ops, tensors, graph_inputs, known),
            inputs=[_spec(d) for d in it.get_input_details()], outputs=[_spec(d) for d in it.get_output_details()])
        if any(o.module_source == "metadata" for o in table.ops):
            table.module_mapping = "litert-torch tensor names (module hierarchy of the torch op that made each tensor)"
        return table

    def run(self, path: Path, input_sets: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        it = _interpreter(path, delegates=True)
        ins, outs = it.get_input_details(), it.get_output_details()
        results = []
        for arrays in input_sets:
            for d, x in zip(ins, arrays, strict=True):
                it.set_tensor(d["index"], np.ascontiguousarray(x, dtype=d["dtype"]))
            it.invoke()
            results.append([np.array(it.get_tensor(o["index"])) for o in outs])
        return results

    def failure_hints(self, opts: ExportOptions) -> list[str]:
        return ["--no-rewrite", "export --to onnx"]


FORMAT = TFLite()


def _quantize(content: bytes, precision: str) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = quantizer.Quantizer(bytearray(content))
    if precision == "int8":
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        # LiteRT's hybrid BATCH_MATMUL takes an int8 constant only on the right; a quantized constant on
        # the left (Mobile-Former's learned tokens) fails at load ("lhs_data->type == kTfLiteFloat32 &&
        # rhs_data->type == kTfLiteInt8"), so batch matmuls keep float weights
        qt.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.BATCH_MATMUL,
                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
    else:
        qt.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  granularity=qtyping.QuantGranularity.TENSORWISE,
                                  algorithm_key=AlgorithmName.FLOAT_CASTING)
    result = qt.quantize(enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise RuntimeError(f"ai-edge-quantizer produced no {precision} model")
    return bytes(result.quantized_model)


def _interpreter(path: Path, *, delegates: bool) -> Any:
    import torch
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"TFLite model '{p}' does not exist; run `hybridexport convert MODEL --to tflite`")
    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = Interpreter(model_path=str(p), num_threads=max(1, torch.get_num_threads()),
                         experimental_op_resolver_type=kind)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InputFileError(f"'{p}' is not a readable TFLite model ({str(exc).splitlines()[0][:160]}); "
                             "rebuild it with `hybridexport convert --force`") from None
    return it


def _spec(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(d["name"]), [int(s) for s in d["shape"]], _DTYPES.get(np.dtype(d["dtype"]).name, ""))


def _rows(ops: list[dict[str, Any]], tensors: dict[int, dict[str, Any]], graph_inputs: set[int],
          known: set[str] | None) -> list[OpRow]:
    produced = {int(i) for op in ops for i in op["outputs"]}
    producer: dict[int, str] = {}
    rows: list[OpRow] = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        outs = [int(i) for i in op["outputs"]]
        shape = {i: tuple(int(s) for s in tensors[i]["shape"]) for i in ins + outs if i in tensors}
        # constants: tensors no op produces and that are not model inputs
        act = [i for i in ins if i in produced or i in graph_inputs]
        const = [i for i in ins if i not in act]
        t = str(op["op_name"])
        out = shape.get(outs[0], ()) if outs else ()
        kind, macs = _kind_and_macs(t, [shape.get(i, ()) for i in ins], out)
        w_elems = sum(numel(shape[i]) for i in const if shape.get(i) and t not in _VIEW | {"TRANSPOSE"})
        name = str(tensors[outs[0]]["name"]) if outs else t
        dts = [_DTYPES.get(np.dtype(tensors[i]["dtype"]).name, "") for i in outs if i in tensors]
        w_bytes = sum(numel(shape[i]) * _BYTES.get(_DTYPES.get(np.dtype(tensors[i]["dtype"]).name, ""), 4)
                      for i in const if shape.get(i) and t not in _VIEW | {"TRANSPOSE"})
        in_elems = sum(numel(shape[i]) for i in act if i in shape)
        out_elems = sum(numel(shape[i]) for i in outs if i in shape)
        bpe = _BYTES.get(dts[0], 4) if dts else 4
        module = modpath.common_module(m for m in (modpath.from_litert_name(str(tensors[i]["name"]), known)
                                                   for i in outs if i in tensors) if m)
        rows.append(OpRow(
            name=f"{op['index']}:{name}", op_type=t, kind=kind, macs=macs, w_elems=w_elems, in_elems=in_elems,
            out_elems=out_elems, module=module, module_source="metadata" if module else "",
            inputs=[producer[i] for i in act if i in producer],
            input_shapes=[list(shape[i]) for i in act if i in shape],
            output_shapes=[list(shape[i]) for i in outs if i in shape], dtypes=dts,
            bytes=(in_elems + out_elems) * bpe + w_bytes,
            **shape_stats([shape[i] for i in act + outs if i in shape], out),
        ))
        for i in outs:
            producer[i] = rows[-1].name
    mark_fusable(rows)
    inherit_modules(rows)
    return rows


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


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
