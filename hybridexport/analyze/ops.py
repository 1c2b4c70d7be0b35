"""Op histogram of a ``torch.export`` graph: raw ATen op counts, mobile-relevant categories, rank≥5 tensors.

The graph is the default ``torch.export.export`` program (ATen level, no core-ATen decomposition),
so ``linear``, ``conv2d``, ``layer_norm`` and ``scaled_dot_product_attention`` stay single nodes, as
the model author wrote them. The categories group the ops that decide how a network maps onto
mobile accelerators: data-layout ops (reshape-like views, transposes), high-rank tensors (the
Neural Engine handles at most rank 5 and is slow on non-4D layouts), softmax, matmuls, convs, norms.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

# Op base names (``aten.<name>``, overload ignored) per category.
CATEGORIES: dict[str, frozenset[str]] = {
    "reshape": frozenset(
        {"view", "_unsafe_view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "view_as", "reshape_as"}
    ),
    "expand": frozenset({"expand", "expand_as", "repeat", "tile", "repeat_interleave"}),
    "transpose": frozenset({"permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "numpy_T", "mT"}),
    "softmax": frozenset({"softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax"}),
    "matmul": frozenset({"matmul", "bmm", "mm", "einsum", "linear", "baddbmm", "addmm", "addbmm"}),
    "attention": frozenset(
        {
            "scaled_dot_product_attention",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_flash_attention",
        }
    ),
    "conv": frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
                       "conv_transpose2d", "conv_transpose3d"}),
    "norm": frozenset(
        {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
         "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "rms_norm"}
    ),
    "concat": frozenset({"cat", "concat", "stack"}),
    "split": frozenset({"split", "split_with_sizes", "chunk", "unbind", "slice", "select", "narrow"}),
}
HIGH_RANK = 5


def op_name(target: Any) -> str:
    """``aten.conv2d`` for ``torch.ops.aten.conv2d.default``; ``getitem`` for ``operator.getitem``."""
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}"
    if isinstance(target, torch._ops.OpOverloadPacket):
        return f"{target._qualified_op_name.replace('::', '.')}"
    return getattr(target, "__name__", str(target))


def category(name: str) -> str | None:
    """The category of an op name from :func:`op_name`, or None."""
    base = name.split(".", 1)[-1]
    return next((cat for cat, names in CATEGORIES.items() if base in names), None)


def _vals(val: Any) -> list[Any]:
    if isinstance(val, (list, tuple)):
        return [v for item in val for v in _vals(item)]
    return [val] if hasattr(val, "shape") else []


def max_rank(node: torch.fx.Node) -> int:
    """The largest rank among the tensors a node produces (0 when unknown)."""
    return max((len(v.shape) for v in _vals(node.meta.get("val"))), default=0)


def count_ops(graph: torch.fx.Graph) -> dict[str, Any]:
    """Category counts, ``rank5_tensors``, ``total`` and the raw per-op counts (under ``aten``)."""
    raw: Counter[str] = Counter()
    rank5 = 0
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        raw[op_name(node.target)] += 1
        if max_rank(node) >= HIGH_RANK:
            rank5 += 1
    result: dict[str, Any] = {cat: 0 for cat in CATEGORIES}
    for name, n in raw.items():
        cat = category(name)
        if cat is not None:
            result[cat] += n
    result["rank5_tensors"] = rank5
    result["total"] = sum(n for name, n in raw.items() if name != "getitem")
    result["aten"] = dict(sorted(raw.items(), key=lambda kv: (-kv[1], kv[0])))
    return result


def export_program(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]
                   ) -> torch.export.ExportedProgram:
    """``torch.export.export(module, (x,))`` (non-strict; a tuple is the inputs) without autograd state."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    with torch.no_grad():
        return torch.export.export(module, args, strict=False)


def graph_ops(module: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor | None = None) -> dict:
    """Op histogram of ``module`` traced on ``example_input`` (see :func:`count_ops` for the keys).

    An already exported program is counted as is (``example_input`` is then ignored).
    """
    if isinstance(module, torch.export.ExportedProgram):
        return count_ops(module.graph)
    if example_input is None:
        raise ValueError("graph_ops needs an example input to trace the module")
    return count_ops(export_program(module, example_input).graph)
