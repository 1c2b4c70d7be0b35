"""Attention candidates found by running the model once, and small submodules traced on their own.

:func:`capture` runs the model on the example input with forward hooks on every submodule: it records
each module's first call (inputs and output, cloned), how many calls had other shapes, and which
module issued each ``softmax`` / ``scaled_dot_product_attention`` call (the innermost module on the
hook stack, seen through a ``TorchFunctionMode``) with the rank of its input.

:func:`trace_module` traces one submodule alone with ``torch.fx``: ``symbolic_trace`` first, then
``MetaTracer`` (the same tracer with meta-tensor shapes, for code that needs concrete sizes). Children
that issue no softmax are leaves, so the traced graph calls the original projection modules by name.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from hybridexport.rewrite.verify import as_args

_ATTENTION_FUNCS = {"softmax", "_softmax", "scaled_dot_product_attention"}


@dataclass
class Call:
    """One module's first call on the example input."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any
    #: later calls whose input shapes differ from the first's
    other_shapes: int = 0


@dataclass
class Capture:
    """What one run of the whole model showed."""

    calls: dict[str, Call] = field(default_factory=dict)
    #: module path → ranks of the softmax inputs / SDPA queries it issued itself
    owners: dict[str, list[int]] = field(default_factory=dict)


def _clone(value: Any) -> Any:
    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, value)


def _shapes(value: Any) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    tree_map(lambda v: out.append(tuple(v.shape)) if isinstance(v, torch.Tensor) else None, value)
    return out


class _OwnerMode(TorchFunctionMode):
    """Records which module (top of ``stack``) issued each softmax/SDPA call."""

    def __init__(self, stack: list[str], owners: dict[str, list[int]]) -> None:
        super().__init__()
        self.stack, self.owners = stack, owners

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _ATTENTION_FUNCS and self.stack:
            first = args[0] if args else next(iter(kwargs.values()), None)
            rank = first.dim() if isinstance(first, torch.Tensor) else 0
            self.owners.setdefault(self.stack[-1], []).append(rank)
        return func(*args, **kwargs)


@torch.no_grad()
def capture(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], levels_up: int = 2) -> Capture:
    """Run ``model`` on ``example`` twice: first to find the softmax/SDPA owners, then to record the
    first calls of the owners and of their ancestors up to ``levels_up`` levels (see module doc)."""
    cap = Capture()
    stack: list[str] = []

    def push(path: str):
        def hook(_m: nn.Module, _args: tuple[Any, ...]) -> None:
            stack.append(path)
        return hook

    def pop(_m: nn.Module, _args: tuple[Any, ...], _out: Any) -> None:
        stack.pop()

    handles = []
    for path, mod in model.named_modules():
        if path:
            handles += [mod.register_forward_pre_hook(push(path)), mod.register_forward_hook(pop, always_call=True)]
    try:
        with _OwnerMode(stack, cap.owners):
            model.eval()
            model(*as_args(example))
    finally:
        for h in handles:
            h.remove()

    wanted = set()
    for owner in cap.owners:
        parts = owner.split(".") if owner else []
        wanted |= {".".join(parts[:i]) for i in range(max(len(parts) - levels_up, 1), len(parts) + 1)}

    def pre(path: str):
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            call = cap.calls.get(path)
            if call is None:
                cap.calls[path] = Call(_clone(args), _clone(kwargs), None)
            elif _shapes((args, kwargs)) != _shapes((call.args, call.kwargs)):
                call.other_shapes += 1
        return hook

    def post(path: str):
        def hook(_m: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: Any) -> None:
            call = cap.calls[path]
            if call.output is None:
                call.output = _clone(output)
        return hook

    handles = []
    for path, mod in model.named_modules():
        if path in wanted and path:
            handles.append(mod.register_forward_pre_hook(pre(path), with_kwargs=True))
            handles.append(mod.register_forward_hook(post(path), with_kwargs=True))
    try:
        if handles:
            model(*as_args(example))
    finally:
        for h in handles:
            h.remove()
    return cap


class _LeafTracer(fx.Tracer):
    """torch.nn modules and children outside ``keep_open`` paths are leaves (called by name)."""

    def __init__(self, keep_open: set[str]) -> None:
        super().__init__()
        self.keep_open = keep_open

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.keep_open:
            return False
        return bool(module_qualified_name) or super().is_leaf_module(m, module_qualified_name)


def _meta_tracer(keep_open: set[str]) -> fx.Tracer:
    from torch.fx.experimental.meta_tracer import MetaTracer

    class _MetaLeafTracer(MetaTracer):
        def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
            if module_qualified_name in keep_open:
                return False
            return bool(module_qualified_name) or super().is_leaf_module(m, module_qualified_name)

    return _MetaLeafTracer()


def bound_inputs(module: nn.Module, call: Call) -> dict[str, Any] | None:
    """The forward's parameters bound to the captured call (defaults filled); None for ``*args`` forwards."""
    sig = inspect.signature(module.forward)
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        return None
    try:
        bound = sig.bind(*call.args, **call.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def trace_module(module: nn.Module, call: Call, keep_open: set[str]) -> tuple[fx.GraphModule, nn.Module, str]:
    """Trace a private copy of ``module`` for ``call``; returns the graph module, the copy (whose
    children the graph calls) and the tracer's name.

    Tensor inputs become placeholders; other inputs (None, flags, ints) are baked in as constants.
    ``keep_open``: child paths (relative) that issue a softmax, traced through instead of kept as leaves.
    """
    inputs = bound_inputs(module, call)
    if inputs is None:
        raise TypeError("forward takes *args/**kwargs")
    concrete = {k: v for k, v in inputs.items() if not isinstance(v, torch.Tensor)}
    errors = []
    for name in ("symbolic_trace", "MetaTracer"):
        mod = copy.deepcopy(module)
        mod.eval()  # not chained: some train() overrides (timm LeViT) return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "symbolic_trace":
                    graph = _LeafTracer(keep_open).trace(mod, concrete_args=concrete or None)
                else:
                    metas = {k: v.to("meta") for k, v in inputs.items() if isinstance(v, torch.Tensor)}
                    graph = _meta_tracer(keep_open).trace(mod, meta_args=metas, concrete_args=concrete or None)
            placeholders = [n for n in graph.nodes if n.op == "placeholder"]
            if len(placeholders) == len(inputs):  # fx renames specialised ones (x_1): give back the names
                for node, param in zip(placeholders, inputs, strict=True):
                    node.target = param
            return fx.GraphModule(mod, graph, type(module).__name__), mod, name
        except Exception as exc:  # noqa: BLE001 - a tracer's failure is a reason, not an error
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise RuntimeError("; ".join(errors))


def placeholder_values(gm: fx.GraphModule, inputs: dict[str, Any]) -> list[Any]:
    """Positional values for the graph's placeholders, taken by name from the bound inputs."""
    values = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            name = node.target.lstrip("*")
            values.append(inputs.get(name, node.args[0] if node.args else None))
    return values


@torch.no_grad()
def node_values(gm: fx.GraphModule, inputs: dict[str, Any]) -> tuple[dict[fx.Node, Any], Any]:
    """Every node's value when ``gm`` runs on ``inputs`` (by parameter name), and the output."""
    values: dict[fx.Node, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            values[n] = out
            return out

    out = _Recorder(gm).run(*placeholder_values(gm, inputs))
    return values, out
