"""onnxruntime profiler output: a Chrome-trace JSON array written by ``SessionOptions.enable_profiling``.

Kernel events are ``{"cat": "Node", "name": "<node>_kernel_time", "dur": µs, "ts": µs,
"args": {"op_name": ..., "provider": ...}}``; each ``session.run`` adds a ``{"cat": "Session",
"name": "model_run"}`` event whose span contains that run's kernel events.
"""

from __future__ import annotations

import math
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
    from hybridexport.jsonfile import read_json

    p = Path(source)
    return read_json(p, "onnxruntime trace", "pass the JSON that end_profiling() wrote (it may be truncated)"), str(p)


def _us(value: Any) -> float:
    """A trace time (µs): a finite number ≥ 0 (numbers written as strings are accepted, as ORT never does)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("a number")
    x = float(value)
    if not 0 <= x < math.inf:
        raise ValueError("finite time ≥ 0")
    return x


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
        field_ = "ts"
        try:
            if cat == "Session" and name == "model_run":
                ts = _us(ev["ts"])
                field_ = "dur"
                runs.append((ts, _us(ev["dur"])))
            elif cat == "Node" and isinstance(name, str) and name.endswith(_SUFFIX):
                ts = _us(ev["ts"])
                field_ = "dur"
                dur = _us(ev["dur"])
                field_ = "args.op_name"
                if not isinstance(ev.get("args"), dict) or not isinstance(ev["args"].get("op_name"), str):
                    raise KeyError(field_)
                field_ = "args.provider"
                if not isinstance(ev["args"].get("provider", ""), str):
                    raise TypeError(field_)
                kernels.append({**ev, "ts": ts, "dur": dur})
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InputFileError(f"onnxruntime trace {where}: event {i} ({str(name)[:60]!r}) lacks a valid "
                                 f"{field_!r} (a time ≥ 0 in µs, or the node's op_name and provider as text)") from None
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
            index = ni if isinstance(ni, int) and not isinstance(ni, bool) and ni >= 0 else (
                int(ni) if isinstance(ni, str) and ni.isascii() and ni.isdigit() and len(ni) <= 18 else None)
            trace.nodes[node] = OrtNode(node, args["op_name"], args.get("provider", ""), index)
        trace.runs[idx][node] = trace.runs[idx].get(node, 0.0) + float(ev["dur"])
    return trace


def _run_index(starts: list[float], runs: list[tuple[float, float]], ts: float) -> int | None:
    import bisect

    i = bisect.bisect_right(starts, ts) - 1
    if i >= 0 and ts <= runs[i][0] + runs[i][1]:
        return i
    return None
