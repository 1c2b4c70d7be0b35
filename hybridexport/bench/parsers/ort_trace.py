"""onnxruntime profiler output: a Chrome-trace JSON array written by ``SessionOptions.enable_profiling``.

Kernel events are ``{"cat": "Node", "name": "<node>_kernel_time", "dur": µs, "ts": µs,
"args": {"op_name": ..., "provider": ...}}``; each ``session.run`` adds a ``{"cat": "Session",
"name": "model_run"}`` event whose span contains that run's kernel events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError

_SUFFIX = "_kernel_time"


@dataclass
class OrtNode:
    name: str  # ORT's node name (of the optimized graph)
    op_type: str
    provider: str
    node_index: int | None = None


@dataclass
class OrtTrace:
    """Per-run kernel times: ``runs[i][node] = µs`` (summed when a node ran more than once in a run)."""

    nodes: dict[str, OrtNode] = field(default_factory=dict)  # in first-execution order
    runs: list[dict[str, float]] = field(default_factory=list)
    run_us: list[float] = field(default_factory=list)  # model_run durations


def _load(source: str | Path | list[Any]) -> tuple[list[Any], str]:
    if isinstance(source, list):
        return source, "<trace>"
    p = Path(source)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"onnxruntime trace '{p}' does not exist") from None
    except UnicodeDecodeError:
        raise InputFileError(f"onnxruntime trace '{p}' is not text; pass the JSON that end_profiling() wrote") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"onnxruntime trace '{p}' is not valid JSON ({exc.msg} at line {exc.lineno}); it may be truncated"
        ) from None
    return data, str(p)


def parse_ort_trace(source: str | Path | list[Any]) -> OrtTrace:
    """Parse a trace file (or the already loaded event list) into per-run node times."""
    events, where = _load(source)
    if not isinstance(events, list):
        raise InputFileError(f"onnxruntime trace {where} is not a JSON array of trace events")
    runs: list[tuple[float, float]] = []
    kernels: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise InputFileError(f"onnxruntime trace {where}: event {i} is not an object")
        cat, name = ev.get("cat"), ev.get("name")
        try:
            if cat == "Session" and name == "model_run":
                runs.append((float(ev["ts"]), float(ev["dur"])))
            elif cat == "Node" and isinstance(name, str) and name.endswith(_SUFFIX):
                float(ev["ts"]), float(ev["dur"])  # validate
                if not isinstance(ev.get("args"), dict) or "op_name" not in ev["args"]:
                    raise KeyError("args.op_name")
                kernels.append(ev)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(f"onnxruntime trace {where}: event {i} ({name}) lacks a valid {exc}") from None
    if not runs:
        raise InputFileError(f"onnxruntime trace {where} has no model_run events; was session.run called before end_profiling()?")
    if not kernels:
        raise InputFileError(f"onnxruntime trace {where} has no kernel (Node) events")
    runs.sort()
    trace = OrtTrace(runs=[{} for _ in runs], run_us=[d for _, d in runs])
    starts = [t for t, _ in runs]
    for ev in kernels:
        ts = float(ev["ts"])
        idx = _run_index(starts, runs, ts)
        if idx is None:
            continue  # a kernel outside every run (never seen in practice): ignore
        node = ev["name"][: -len(_SUFFIX)]
        args = ev["args"]
        if node not in trace.nodes:
            ni = args.get("node_index")
            trace.nodes[node] = OrtNode(node, str(args["op_name"]), str(args.get("provider", "")),
                                        int(ni) if str(ni or "").isdigit() else None)
        trace.runs[idx][node] = trace.runs[idx].get(node, 0.0) + float(ev["dur"])
    return trace


def _run_index(starts: list[float], runs: list[tuple[float, float]], ts: float) -> int | None:
    import bisect

    i = bisect.bisect_right(starts, ts) - 1
    if i >= 0 and ts <= runs[i][0] + runs[i][1]:
        return i
    return None
