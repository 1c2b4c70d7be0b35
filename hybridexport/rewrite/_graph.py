"""Graph helpers shared by passes: export a model once and ask which module produced which op."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx, nn


@dataclass
class TracedModel:
    """A ``torch.export`` graph of a model plus the module path that called each op node."""

    graph: fx.Graph
    #: node → path of the innermost module whose forward issued it ("" for the root)
    owner: dict[fx.Node, str]
    #: module path → number of op nodes of a given kind it issued (for "called once" checks)
    calls: Counter[tuple[str, str]]


def export_graph(model: nn.Module, example: torch.Tensor) -> TracedModel:
    """Export ``model`` (non-strict, eval, without autograd) and index every call_function node by its owning
    module."""
    from hybridexport.rewrite.verify import as_args

    with torch.no_grad():
        ep = torch.export.export(model, as_args(example), strict=False)
    owner: dict[fx.Node, str] = {}
    calls: Counter[tuple[str, str]] = Counter()
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        owner[node] = path
        calls[(path, op_kind(node))] += 1
    return TracedModel(ep.graph, owner, calls)


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
    """Rank of a node's (first) output from its fake-tensor metadata."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0] if val else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def real_users(node: fx.Node) -> list[fx.Node]:
    """Users of a node, looking through ``getitem`` (batch-norm variants return tuples)."""
    users: list[fx.Node] = []
    for u in node.users:
        if u.op == "call_function" and getattr(u.target, "__name__", "") == "getitem":
            users.extend(u.users)
        else:
            users.append(u)
    return users


def tensor_input(node: fx.Node) -> fx.Node | None:
    """The first positional argument of an op node, when it is another node."""
    arg = node.args[0] if node.args else None
    return arg if isinstance(arg, fx.Node) else None


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (works for Sequential/ModuleList indices too)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)
