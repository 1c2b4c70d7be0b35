"""Graph helpers shared by passes: trace a model once and ask which module produced which op.

Two graphs of a model: :func:`export_graph` (``torch.export``, every op as aten) and :func:`fx_graph`
(``torch.fx.symbolic_trace`` + ``ShapeProp``: torch.nn leaf modules as ``call_module`` nodes, several times
faster). :class:`GraphCache` makes each at most once per unchanged model and shares it between passes.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

#: attributes whose reads only look at a tensor's metadata (fx records them; torch.export does not)
_META_ATTRS = frozenset({"ndim", "shape", "dtype", "device", "is_cuda"})
_META_METHODS = frozenset({"size", "dim"})


@dataclass
class TracedModel:
    """A graph of a model (torch.export or fx) plus the module path that called each op node."""

    graph: fx.Graph
    #: node → path of the innermost module whose forward issued it ("" for the root)
    owner: dict[fx.Node, str]
    #: module path → number of op nodes of a given kind it issued (for "called once" checks)
    calls: Counter[tuple[str, str]]
    #: node → its kind (:func:`op_kind`; for an fx ``call_module`` node, the kind of the module)
    kinds: dict[fx.Node, str] = field(default_factory=dict)

    def kind(self, node: fx.Node) -> str:
        """The kind of an op node ("conv", "linear", "batch_norm", …)."""
        return self.kinds.get(node) or op_kind(node)


def export_graph(model: nn.Module, example: torch.Tensor) -> TracedModel:
    """Export ``model`` (non-strict, eval, without autograd) and index every call_function node by its owning
    module."""
    from hybridexport.rewrite.verify import as_args

    with torch.no_grad():
        ep = torch.export.export(model, as_args(example), strict=False)
    return index_exported(ep)


def index_exported(ep: torch.export.ExportedProgram) -> TracedModel:
    """:class:`TracedModel` of an exported program: every call_function node indexed by its owning module."""
    traced = TracedModel(ep.graph, {}, Counter())
    for node in ep.graph.nodes:
        if node.op == "call_function":
            _index(traced, node, _stack_owner(node), op_kind(node))
    return traced


def fx_graph(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> TracedModel:
    """``torch.fx.symbolic_trace`` of ``model`` with shapes from one run (``ShapeProp``) on ``example``.

    A torch.nn leaf module is one ``call_module`` node owned by its path, of kind "conv" (Conv1/2/3d),
    "linear" (Linear) or "batch_norm" (any BatchNorm); ``nn.Identity`` calls are dropped (torch.export shows
    none). Raises what fx raises on code it cannot trace (data-dependent control flow); models with forward
    hooks raise too (symbolic tracing does not run them).
    """
    from torch.fx.passes.shape_prop import ShapeProp

    from hybridexport.rewrite.verify import as_args

    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        raise RuntimeError("the model has forward hooks, which symbolic tracing does not run")
    gm = fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(*as_args(example))
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Identity) and node.args:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    traced = TracedModel(graph, {}, Counter())
    for node in graph.nodes:
        if node.op == "call_module":
            _index(traced, node, str(node.target), _module_kind(gm.get_submodule(node.target)))
        elif node.op == "call_function":
            _index(traced, node, _stack_owner(node), op_kind(node))
    return traced


def _index(traced: TracedModel, node: fx.Node, path: str, kind: str) -> None:
    traced.owner[node] = path
    traced.kinds[node] = kind
    traced.calls[(path, kind)] += 1


def _stack_owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _BatchNorm):
        return "batch_norm"
    return type(module).__name__


@dataclass
class GraphCache:
    """Graphs of one model, each made on first request and shared until :meth:`invalidate` says the model
    changed. A graph that could not be made keeps its error: asked again, it raises again, untraced.
    ``made`` counts the graphs made of each kind."""

    model: nn.Module
    example: torch.Tensor | tuple[torch.Tensor, ...]
    made: Counter[str] = field(default_factory=Counter)
    _graphs: dict[str, Any] = field(default_factory=dict)

    def exported(self) -> torch.export.ExportedProgram:
        """The ``torch.export`` program of the model (non-strict, without autograd)."""
        from hybridexport.analyze.ops import export_program

        return self._get("export", lambda: export_program(self.model, self.example))

    def export_traced(self) -> TracedModel:
        """:func:`export_graph` of the model, from :meth:`exported`."""
        return self._get("export-index", lambda: index_exported(self.exported()))

    def fx_traced(self) -> TracedModel:
        """:func:`fx_graph` of the model."""
        return self._get("fx", lambda: fx_graph(self.model, self.example))

    def invalidate(self, model: nn.Module) -> None:
        """``model`` is now the model these graphs describe (none made of it yet)."""
        self.model = model
        self._graphs.clear()

    def _get(self, kind: str, make: Callable[[], Any]) -> Any:
        if kind not in self._graphs:
            self.made[kind] += 1
            try:
                self._graphs[kind] = make()
            except Exception as exc:  # kept: the next request fails the same way without tracing again
                self._graphs[kind] = exc
        got = self._graphs[kind]
        if isinstance(got, Exception):
            raise got
        return got


def op_kind(node: fx.Node) -> str:
    """A short kind name for an aten node: "conv", "linear", "batch_norm", or the op's base name."""
    name = getattr(node.target, "__name__", str(node.target))
    base = name.split(".")[0]
    if base in {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}:
        return "conv"
    if base in {"linear", "addmm"}:
        return "linear"
    if "batch_norm" in base:
        return "batch_norm"
    return base


def tensor_rank(node: fx.Node) -> int | None:
    """Rank of a node's (first) output from its fake-tensor (torch.export) or ShapeProp (fx) metadata."""
    val = node.meta.get("val", node.meta.get("tensor_meta"))
    if isinstance(val, (tuple, list)) and not hasattr(val, "shape"):  # (a ShapeProp TensorMetadata is a tuple)
        val = val[0] if val else None
    if isinstance(val, torch.Tensor):
        return val.dim()
    shape = getattr(val, "shape", None)
    return len(shape) if isinstance(shape, (tuple, list)) else None


def real_users(node: fx.Node) -> list[fx.Node]:
    """Users of a node, looking through ``getitem`` (batch-norm variants return tuples) and leaving out reads
    of its metadata only (``x.ndim``, ``x.shape``, ``x.size()``: fx graphs record them)."""
    users: list[fx.Node] = []
    for u in node.users:
        if _reads_metadata(u):
            continue
        if u.op == "call_function" and getattr(u.target, "__name__", "") == "getitem":
            users.extend(u.users)
        else:
            users.append(u)
    return users


def _reads_metadata(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _META_METHODS
    return (node.op == "call_function" and node.target is builtins.getattr and len(node.args) > 1
            and node.args[1] in _META_ATTRS)


def tensor_input(node: fx.Node) -> fx.Node | None:
    """The first positional argument of an op node, when it is another node."""
    arg = node.args[0] if node.args else None
    return arg if isinstance(arg, fx.Node) else None


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (works for Sequential/ModuleList indices too)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)
