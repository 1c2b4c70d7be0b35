"""Google Model Explorer node-data overlays: per-layer latency as a heat map on the model graph.

Writes the JSON that Model Explorer's "node data" loader reads (the format of
``model_explorer.node_data_builder``: ``GraphNodeData`` = ``{"results": {node_id: {"value": v}},
"gradient" | "thresholds": [...]}``; ``ModelNodeData`` = ``{graph_id: GraphNodeData}``), without
depending on the model-explorer package. Results are keyed by the runtime's node name (``LayerRow.name``;
for ONNX with onnxruntime's rename suffixes such as ``_nchwc`` removed), which for ONNX is the node id
Model Explorer shows. A file without a graph id applies to whichever
graph is open; pass ``graph_id`` (ONNX: ``main_graph``) to write the keyed form.

Two overlays: ``latency`` (new per-node ms, green → yellow → red gradient between the fastest and
the slowest node) and ``delta`` (per-layer change vs base in %, matched by nn.Module path, coloured
with thresholds: faster beyond the threshold green, within it grey, slower beyond it red).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.errors import InputFileError
from hybridexport.report.comparison import Comparison, Entry
from hybridexport.report.layers import layer_key

# onnxruntime renames nodes it rewrites (NCHWc layout, fusions); the exported graph Model Explorer shows
# keeps the original names
_ORT_SUFFIX = re.compile(r"(_nchwc|_new_reshape|_new_shape|_token_\d+|_fusion|_fused|/\w*Fusion/?)+$")

LATENCY_GRADIENT = [
    {"stop": 0, "bgColor": "#e8f5e9"},
    {"stop": 0.5, "bgColor": "#ffeb3b"},
    {"stop": 1, "bgColor": "#d32f2f"},
]
OVERLAYS = ("latency", "delta")


def _round(x: float) -> float:
    return float(f"{x:.6g}")


@dataclass
class GraphIndex:
    """Node names of the graph the overlay is for, and which node produces each output tensor."""

    nodes: set[str] = field(default_factory=set)
    producer: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_onnx(cls, path: str | Path) -> GraphIndex:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except FileNotFoundError:
            raise InputFileError(f"graph '{path}' does not exist; pass the exported .onnx file") from None
        except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends for a non-ONNX file
            raise InputFileError(f"graph '{path}' is not an ONNX model ({type(exc).__name__}); pass the exported "
                                 ".onnx file") from None
        index = cls()
        for node in model.graph.node:
            index.nodes.add(node.name)
            for out in node.output:
                index.producer.setdefault(out, node.name)
        return index


def node_id(profile: Profile, name: str, graph: GraphIndex | None = None) -> str:
    """The graph node id a runtime row belongs to.

    ONNX: onnxruntime's rename suffixes are removed; what remains is the original node name or, for
    nodes ORT re-laid out, the name of its output tensor (Model Explorer matches either); with the
    exported graph at hand, an output tensor name is resolved to the node that produces it.
    """
    if profile.format != "onnx":
        return name
    if graph is not None and name in graph.nodes:
        return name
    base = _ORT_SUFFIX.sub("", name)
    if graph is not None and base not in graph.nodes and base in graph.producer:
        return graph.producer[base]
    return base


def profile_node_data(profile: Profile, graph: GraphIndex | None = None) -> dict[str, Any]:
    """GraphNodeData: each graph node's median ms (rows of one node summed), as a gradient heat map."""
    results: dict[str, dict[str, Any]] = {}
    for row in profile.layers:
        if not row.name:
            continue
        key = node_id(profile, row.name, graph)
        prev = results.get(key, {}).get("value", 0.0)
        results[key] = {"value": _round(prev + row.ms.median)}
    return {"results": results, "gradient": LATENCY_GRADIENT}


def delta_node_data(entry: Entry, graph: GraphIndex | None = None) -> dict[str, Any]:
    """GraphNodeData: each new runtime node gets its layer's change vs base in %."""
    by_module = {layer.module: layer for layer in entry.layers}
    pct = 100.0 * entry.threshold
    results: dict[str, dict[str, Any]] = {}
    for row in entry.new.layers:
        layer = by_module.get(layer_key(row))
        if not row.name or layer is None:
            continue
        key = node_id(entry.new, row.name, graph)
        if layer.status == "added":
            results[key] = {"value": "added", "bgColor": "#b71c1c", "textColor": "#ffffff"}
        elif layer.delta_pct is not None:
            results[key] = {"value": _round(layer.delta_pct)}
    thresholds = [
        {"value": _round(-pct), "bgColor": "#66bb6a"},
        {"value": _round(pct), "bgColor": "#eceff1"},
        {"value": 1e12, "bgColor": "#ef5350"},
    ]
    return {"results": results, "thresholds": thresholds}


def entry_node_data(entry: Entry, overlay: str = "latency", graph_id: str | None = None,
                    graph: GraphIndex | None = None) -> dict[str, Any]:
    if overlay not in OVERLAYS:
        raise InputFileError(f"unknown overlay '{overlay}'; choose from {', '.join(OVERLAYS)}")
    data = profile_node_data(entry.new, graph) if overlay == "latency" else delta_node_data(entry, graph)
    return {graph_id: data} if graph_id else data


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def overlay_filename(entry: Entry, overlay: str = "latency") -> str:
    return f"{_safe(entry.model)}__{_safe(entry.device)}__{_safe(entry.format)}.{overlay}.node_data.json"


def render_model_explorer(cmp: Comparison, overlay: str = "latency", graph_id: str | None = None,
                          graph: str | Path | None = None) -> dict[str, str]:
    """File name → JSON text, one overlay per compared entry that has per-layer rows.

    ``graph``: the exported .onnx the overlay is for (resolves ORT's node names to its node ids).
    """
    index = GraphIndex.from_onnx(graph) if graph else None
    files: dict[str, str] = {}
    for e in cmp.entries:
        if e.new.layers:
            name, n = overlay_filename(e, overlay), 1
            while name in files:  # keys that differ only in characters a file name cannot keep, or input shapes
                n += 1
                name = overlay_filename(e, overlay).replace(f".{overlay}.", f"__{n}.{overlay}.")
            files[name] = json.dumps(entry_node_data(e, overlay, graph_id, index), indent=2) + "\n"
    if not files:
        raise InputFileError("no compared profile has per-layer rows; a Model Explorer overlay needs per-layer data "
                             "(bench with a runner that profiles layers)")
    return files
