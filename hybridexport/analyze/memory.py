"""Peak activation memory by static liveness analysis of a ``torch.export`` graph.

Nodes run in the graph's topological order. Each node that allocates creates a storage the size of
its outputs (``node.meta['val']``); views, in-place ops (the schema marks the output as an alias of
an input) and ``getitem`` share the storage they read. A storage is freed after the last use of any
tensor aliasing it. A node's footprint is everything live while it runs (its inputs, its new output,
and the B·H·Lq·Lk score matrix of a ``scaled_dot_product_attention``); the peak is the largest
footprint. The user input counts as an activation; parameters, buffers and constants do not. This is
what a runtime that frees eagerly and never fuses needs: an upper bound for real runtimes (which fuse
and reuse buffers) that scales correctly across resolutions and models.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch.export.graph_signature import InputKind

from hybridexport import modpath
from hybridexport.analyze.ops import _vals, op_name


@dataclass(frozen=True)
class PeakMemory:
    bytes: int  # at the given dtype size (fp32 = 4 bytes per element)
    node: str  # name of the node running at the peak
    module: str  # nn.Module path of that node ('' if unknown)
    op: str
    elements: int


def _numel(val: Any) -> int:
    return sum(int(torch.Size(v.shape).numel()) for v in _vals(val))


def _is_view(node: torch.fx.Node) -> bool:
    if node.target is operator.getitem:
        return True
    schema = getattr(node.target, "_schema", None)
    if schema is None or not schema.returns:
        return False
    return schema.returns[0].alias_info is not None  # a view, or an in-place op writing into its input


def _transient(node: torch.fx.Node) -> int:
    """Scratch a node needs beyond its output: SDPA's B·H·Lq·Lk score matrix (what a runtime without a
    fused attention kernel materialises)."""
    if op_name(node.target) != "aten.scaled_dot_product_attention" or len(node.args) < 2:
        return 0
    q, k = (a.meta.get("val") if isinstance(a, torch.fx.Node) else None for a in node.args[:2])
    if q is None or k is None:
        return 0
    return int(torch.Size(q.shape[:-1]).numel()) * int(k.shape[-2])


def peak_activation(ep: torch.export.ExportedProgram, bytes_per_element: int = 4) -> PeakMemory:
    """Peak of live activation memory over ``ep.graph`` (see the module docstring)."""
    user_inputs = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    nodes = list(ep.graph.nodes)
    storage: dict[torch.fx.Node, torch.fx.Node] = {}  # tensor node → node owning its storage
    size: dict[torch.fx.Node, int] = {}  # storage owner → elements
    last_use: dict[torch.fx.Node, int] = {}  # storage owner → index of the last node reading it

    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            if node.name in user_inputs:
                storage[node] = node
                size[node] = _numel(node.meta.get("val"))
                last_use[node] = i
            continue
        if node.op != "call_function":
            continue
        tensor_args = [a for a in node.all_input_nodes if a in storage]
        for a in tensor_args:
            last_use[storage[a]] = i
        if _is_view(node) and tensor_args:
            storage[node] = storage[tensor_args[0]]
        else:
            storage[node] = node
            size[node] = _numel(node.meta.get("val"))
            last_use[node] = i
    outputs = [n for n in nodes if n.op == "output"]
    for out in outputs:
        for a in out.all_input_nodes:
            if a in storage:
                last_use[storage[a]] = len(nodes)

    live = 0
    best = (0, nodes[0] if nodes else None)
    frees: dict[int, list[torch.fx.Node]] = {}
    for owner, idx in last_use.items():
        frees.setdefault(idx, []).append(owner)
    for i, node in enumerate(nodes):
        if storage.get(node) is node:
            live += size[node]
        if live + _transient(node) > best[0]:
            best = (live + _transient(node), node)
        for owner in frees.get(i, []):
            live -= size[owner]
    elements, node = best
    if node is None:
        return PeakMemory(0, "", "", "", 0)
    module = modpath.of_node(node)
    return PeakMemory(elements * bytes_per_element, node.name, module, op_name(node.target), elements)
