"""Map Core ML MIL op names back to ``nn.Module`` paths.

coremltools names each MIL op after the value it came from, plus suffixes such as ``_cast_fp16``:
for a ``torch.jit.trace``d model (what ``hybridexport convert`` does) the TorchScript debug name
(``input.5`` → ``input_5``, ``126`` → ``var_126``), whose node carries the module scope; for a
``torch.export`` program the FX node name (``conv2d_3``), whose ``nn_module_stack`` names the module.
Tracing/exporting the same module again reproduces those names. Ops created by converter passes
inherit the module of the op that feeds them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from hybridexport.predict.features import OpFeature

_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_rank2_expansion|_batch_norm_1d)")


def fx_module_map(module: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """torch.export node name → innermost nn.Module path (decomposed ATen graph, as coremltools sees it)."""
    with torch.no_grad():
        ep = torch.export.export(module, (example,)).run_decompositions({})
    out: dict[str, str] = {}
    for node in ep.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            path = list(stack.values())[-1][0]
            out[node.name] = _clean(path)
    return out


def trace_module_map(module: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """MIL value name (as coremltools derives it from a TorchScript trace) → innermost module path."""
    from coremltools.converters.mil.frontend.torch.torchscript_utils import _expand_and_optimize_ir

    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    # the same inlining and canonical renumbering coremltools applies before naming MIL values
    graph, _, _ = _expand_and_optimize_ir(traced)
    out: dict[str, str] = {}
    for node in graph.nodes():
        scope = node.scopeName()
        if not scope:
            continue
        path = scope.split("/")[-1].removeprefix("__module.")
        for v in node.outputs():
            name = v.debugName()
            key = f"var_{name}" if name.isdigit() else name.replace(".", "_")
            out[key] = path
    return out


def _clean(path: str) -> str:
    """``L['self'].stages[0].blocks`` (older torch) → ``stages.0.blocks``; dotted paths pass through."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']+)'\]", r".\1", path)
    return path.lstrip(".")


def assign_modules(ops: list[OpFeature], fx_map: dict[str, str]) -> float:
    """Fill ``op.module`` in place; returns the share of ops mapped by name (the rest inherit)."""
    by_name = {o.name: o for o in ops}
    direct = 0
    for o in ops:
        base = _SUFFIX.sub("", o.name)
        if base in fx_map:
            o.module = fx_map[base]
            direct += 1
            continue
        src = [by_name[i].module for i in o.inputs if i in by_name and by_name[i].module]
        if src:
            o.module = src[0]
            continue
        stripped = base
        while re.search(r"_\d+$", stripped) and stripped not in fx_map:
            stripped = re.sub(r"_\d+$", "", stripped)
        o.module = fx_map.get(stripped, "")
    return direct / max(len(ops), 1)
