"""Turn a converter's exception into one line a user can act on.

An op the format cannot express becomes :class:`UnsupportedOpError` naming the op and the ``nn.Module``
path it came from (found in the ``torch.export`` graph's ``nn_module_stack``); anything else becomes
:class:`ConversionError` with a one-line summary and a hint. The original exception stays chained
(``raise ... from exc``), so ``--verbose`` shows the converter's full trace.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from hybridexport.errors import ConversionError, HybridExportError, UnsupportedOpError

if TYPE_CHECKING:
    import torch
    from torch import nn

# Messages that mean "this op has no translation in this format", one pattern per converter; group 1 = op.
_UNSUPPORTED_PATTERNS = (
    r"No ONNX function found for <OpOverload\(op='([\w.]+)'",  # torch.onnx dynamo exporter
    r"Unsupported FX nodes: \{'call_function': \['([\w.]+)'",  # torch.onnx dynamo exporter (older)
    r"PyTorch convert function for op '(\w+)' not implemented",  # coremltools torch frontend
    r"the lowering for Torch `(\w+)` op is not supported",  # coremltools torch frontend
    r"Lowering not found: ([\w.]+)",  # litert-torch
    r"Operator torch\._ops\.([\w.]+) is not in Core ATen opset",  # executorch to_edge
    r"Missing operator: \[\d+\] ([\w:.]+)",  # executorch runtime (no kernel)
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first (cycles cut)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not s for s in seen):
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def unsupported_op_name(exc: BaseException) -> str | None:
    """The op a converter said it cannot express, from any message in the exception chain."""
    for e in exception_chain(exc):
        msg = _ANSI.sub("", str(e))
        for pat in _UNSUPPORTED_PATTERNS:
            m = re.search(pat, msg)
            if m:
                return m.group(1)
    return None


def op_base_name(op: str) -> str:
    """``aten.lgamma.default`` / ``prims.lgamma`` / ``aten::lgamma.out`` / ``lgamma`` → ``lgamma``."""
    op = op.replace("::", ".")
    parts = [p for p in op.split(".") if p]
    if len(parts) >= 2 and parts[0] in ("aten", "prims", "torch", "_ops", "quantized_decomposed"):
        parts = parts[1:]
    while parts and parts[0] in ("aten", "prims", "_ops"):
        parts = parts[1:]
    return parts[0] if parts else op


def locate_op(module: nn.Module, examples: tuple[torch.Tensor, ...], op: str) -> tuple[str, str] | None:
    """(module path, class name) of the first node computing ``op`` in the ``torch.export`` graph, or None."""
    import torch

    from hybridexport import modpath

    wanted = {op_base_name(op)}
    wanted |= {w.removeprefix("special_").removeprefix("linalg_") for w in wanted}
    try:
        with torch.no_grad():
            ep = torch.export.export(module, tuple(examples), strict=False)
    except Exception:
        return None
    programs = [ep]
    with contextlib.suppress(Exception):
        programs.append(ep.run_decompositions())
    for prog in programs:
        for node in prog.graph.nodes:
            if node.op != "call_function":
                continue
            base = op_base_name(str(node.target))
            if base in wanted or base.removeprefix("_") in wanted or base.removesuffix("_ex") in wanted:
                stack = node.meta.get("nn_module_stack")
                return modpath.from_module_stack(stack) or modpath.ROOT, modpath.class_of_stack(stack)
    return None


def one_line(exc: BaseException, limit: int = 220) -> str:
    """The most telling single line of an exception chain (innermost non-empty message)."""
    for e in reversed(exception_chain(exc)):
        text = _ANSI.sub("", str(e)).strip()
        if not text:
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        line = next((ln for ln in lines if "error" in ln.lower() and len(ln) > 20), lines[0])
        line = re.sub(r"\s+", " ", line)
        return f"{type(e).__name__}: {line}"[:limit]
    return type(exc).__name__


def converter_failure(
    fmt: str, model_name: str, exc: BaseException, module: nn.Module | None,
    examples: tuple[torch.Tensor, ...] | None, hints: list[str] | None = None,
) -> HybridExportError:
    """The user-facing error for a converter exception (raise it ``from exc``); ``hints`` are the options
    that may help (the format's, leaving out what was already given)."""
    from hybridexport.export.formats import title as format_title

    if isinstance(exc, HybridExportError):
        return exc
    title = format_title(fmt)
    op = unsupported_op_name(exc)
    if op is not None:
        where = locate_op(module, examples, op) if module is not None and examples is not None else None
        if where is not None:
            path, cls = where
            origin = f"module '{path}' ({cls})" if cls else f"module '{path}'"
        else:
            origin = "an unknown module"
        return UnsupportedOpError(
            f"{title} cannot express op '{op_base_name(op)}' ({op}) used by {origin} of {model_name}; "
            f"replace that module with supported ops, or export to another format"
        )
    hint = f"try {' or '.join(hints)}; " if hints else ""
    return ConversionError(
        f"{title} conversion of {model_name} failed: {one_line(exc)}; {hint}re-run with --verbose for the "
        "converter's full trace"
    )
