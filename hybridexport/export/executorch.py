"""ExecuTorch: ``torch.export`` → ``to_edge_transform_and_lower`` with the XNNPACK partitioner → ``.pte``.

Checked with the ExecuTorch runtime (``executorch.runtime.Runtime``). fp16 runs the model in float16
behind float32 inputs/outputs (XNNPACK fp16 kernels); int8 is PT2E static quantization with
``XNNPACKQuantizer`` (symmetric, per-channel weights) calibrated on a few seeded random inputs.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hybridexport.export.base import Built, histogram

if TYPE_CHECKING:
    from hybridexport.export.options import ExportOptions

CALIBRATION_INPUTS = 4
CALIBRATION_SEED_BASE = 2000


def build(module: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions) -> Built:
    """Export, lower to XNNPACK and serialise ``module`` to ``path`` (.pte) at ``opts.precision``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    extra: dict[str, Any] = {"backend": "XnnpackBackend"}
    t0 = time.perf_counter()
    if opts.precision == "fp16":
        module = _Float16Body(copy.deepcopy(module).half()).eval()
        extra["quantization"] = "float16 weights and compute (XNNPACK fp16), float32 inputs/outputs"
    with torch.no_grad():
        ep = torch.export.export(module, (example,), strict=False)
    if opts.precision == "int8":
        ep = _quantize_pt2e(ep, example)
        extra["quantization"] = (
            f"PT2E XNNPACKQuantizer: symmetric int8, per-channel weights, static activations calibrated on "
            f"{CALIBRATION_INPUTS} seeded random inputs"
        )
    rank5 = _rank5(ep)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    ops, delegates = _op_histogram(edge.exported_program())
    program = edge.to_executorch()
    converter_seconds = time.perf_counter() - t0
    path.write_bytes(program.buffer)
    extra["delegate_calls"] = delegates
    extra["non_delegated_ops"] = sum(v for k, v in ops.items() if ":" not in k and k != "executorch_call_delegate")
    return Built(ops=ops, rank5_tensors=rank5, converter_seconds=converter_seconds, extra=extra)


class _Float16Body(nn.Module):
    """Runs a float16 copy of the model behind float32 inputs and outputs."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        y = self.body(x.to(torch.float16))
        return y.float() if isinstance(y, torch.Tensor) else tuple(t.float() for t in y)


def _quantize_pt2e(ep: Any, example: torch.Tensor) -> Any:
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
            prepared(torch.randn(*example.shape, generator=g))
    converted = convert_pt2e(prepared)
    with torch.no_grad():
        return torch.export.export(converted, (example,), strict=False)


def _rank5(ep: Any) -> int:
    """Tensors of rank >= 5 in the torch.export graph (placeholders and computed values)."""

    count = 0
    for node in ep.graph.nodes:
        vals = node.meta.get("val")
        for v in vals if isinstance(vals, (list, tuple)) else [vals]:
            if isinstance(v, torch.Tensor) and v.dim() >= 5:
                count += 1
    return count


def _op_histogram(prog: Any) -> tuple[dict[str, int], int]:
    """Ops of the lowered program: ``Backend:op`` inside delegates, plain op names outside; delegate calls."""
    c: Counter = Counter()
    delegates = 0
    for node in prog.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == "getitem":
            continue
        if name == "executorch_call_delegate":
            delegates += 1
            lowered = getattr(prog.graph_module, node.args[0].target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and _op_name(inner.target) != "getitem":
                    c[f"{lowered.backend_id}:{_op_name(inner.target)}"] += 1
        c[name] += 1
    return histogram(c), delegates


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return str(name)


def run(path: Path, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """ExecuTorch runtime outputs for each input."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    results = []
    for x in inputs:
        outs = method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        results.append([o.detach().float().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs])
    return results
