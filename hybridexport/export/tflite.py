"""TFLite (LiteRT): ``litert_torch.convert`` → ``.tflite``, checked with ai-edge-litert's interpreter.

litert-torch 0.10.0's NCHW→NHWC layout optimisation breaks some graphs in its final MLIR passes (timm
``mobilevitv2_050``: "'tfl.mul' op operands don't have broadcast-compatible shapes", from an
``expand_as`` feeding a ``mul``). When the converter's passes fail, the conversion is retried with the
known workarounds below, in order, and the one that worked is recorded in the manifest
(``extra.workarounds``).

fp16 and int8 are applied to the fp32 flatbuffer with ai-edge-quantizer: fp16 = float16 weights
(weight-only float casting, dequantized at load), int8 = dynamic-range quantization (int8 weights,
activations quantized at run time).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport.export.base import Built, histogram

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions


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


def convert_flatbuffer(module: nn.Module, example: torch.Tensor) -> tuple[bytes, list[dict[str, str]]]:
    """fp32 flatbuffer bytes and the workarounds that were needed (empty when none)."""
    import litert_torch

    litert_torch.config.show_progress = False

    def once() -> bytes:
        return litert_torch.convert(module, (example,)).model_content()

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


def build(module: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions) -> Built:
    """Convert ``module`` to ``path`` (.tflite) at ``opts.precision``."""
    t0 = time.perf_counter()
    content, workarounds = convert_flatbuffer(module, example)
    converter_seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {"workarounds": workarounds}
    if opts.precision != "fp32":
        content = _quantize(content, opts.precision)
        extra["quantization"] = (
            "ai-edge-quantizer dynamic range: int8 weights (per-channel), float32 activations quantized at run time"
            if opts.precision == "int8"
            else "ai-edge-quantizer float casting: float16 weights, float32 compute"
        )
    path.write_bytes(content)
    ops, rank5, io = inspect(path)
    extra.update(io)
    return Built(ops=ops, rank5_tensors=rank5, converter_seconds=converter_seconds, extra=extra)


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
        qt.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            granularity=qtyping.QuantGranularity.TENSORWISE,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
    result = qt.quantize(enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise RuntimeError(f"ai-edge-quantizer produced no {precision} model")
    return bytes(result.quantized_model)


def _interpreter(path: Path, *, delegates: bool) -> Any:
    import torch
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(
        model_path=str(path), num_threads=max(1, torch.get_num_threads()), experimental_op_resolver_type=kind
    )
    it.allocate_tensors()
    return it


def inspect(path: Path) -> tuple[dict[str, int], int, dict[str, Any]]:
    """(builtin-op histogram, rank>=5 tensor count, input/output details) of a .tflite file.

    Read without the default XNNPACK delegate, so the histogram lists the model's own ops rather than
    one DELEGATE node.
    """
    it = _interpreter(path, delegates=False)
    ops = histogram(Counter(str(op["op_name"]) for op in it._get_ops_details()))
    rank5 = sum(1 for t in it.get_tensor_details() if len(t["shape"]) >= 5)
    io = {
        "inputs": [{"name": d["name"], "shape": [int(s) for s in d["shape"]]} for d in it.get_input_details()],
        "outputs": [{"name": d["name"], "shape": [int(s) for s in d["shape"]]} for d in it.get_output_details()],
    }
    return ops, rank5, io


def run(path: Path, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs of the LiteRT interpreter (default XNNPACK delegate, as on device CPUs) for each input."""
    it = _interpreter(path, delegates=True)
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    results = []
    for x in inputs:
        it.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        it.invoke()
        results.append([np.array(it.get_tensor(o["index"])) for o in outs])
    return results


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
