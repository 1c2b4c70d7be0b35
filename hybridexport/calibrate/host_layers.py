"""Per-layer host measurements for calibration: ONNX Runtime's per-node kernel times, mapped to features.

ONNX Runtime's profiler times every node of its *optimized* graph (convolutions fused with their
activation and residual add, layout reorders inserted); :func:`exported_node_ms` maps those nodes back
to the exported graph's nodes (the name/output/neighbour matching the host-onnxruntime runner uses for
module paths), so each feature row gets a measured time.

The host fit (``calibrate.fit`` with :class:`LayerTargets`) then matches, per model, the end-to-end time
*and* the share of kernel time spent in each cost group (a compute class such as depthwise conv, or a
memory group such as transposes). An op the runtime fuses into its producer (activation, residual add)
counts in its producer's group on both the measured and the predicted side. Shares are compared, not
absolute kernel times: the profiler's wall-clock times (noisy on a shared machine) only set proportions,
the totals come from the thread-CPU timer.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

from hybridexport.latency.costmodel import COMPUTE_CLASS, MEMORY_GROUP_NAMES, Design
from hybridexport.latency.features import FeatureTable

#: group names, indexed by :func:`op_groups` ids
GROUPS: tuple[str, ...] = (*COMPUTE_CLASS, "view", *MEMORY_GROUP_NAMES)
_VIEW_GROUP = len(COMPUTE_CLASS)
_MEM0 = _VIEW_GROUP + 1
MIN_SHARE = 0.02  # groups under 2 % of a model's kernel time carry no share residual (too noisy)


def exported_node_ms(path: str | Path, runs: int = 15, warmup: int = 5) -> dict[str, float]:
    """Median kernel ms per node of the exported ONNX graph at ``path`` (1 thread, ORT_ENABLE_ALL).

    Optimized-graph nodes are mapped back to exported nodes; the profiler's own cost per kernel
    (measured on a probe graph) is subtracted; nodes ORT removed or fused into another get nothing."""
    import onnx

    from hybridexport.bench.parsers.ort_trace import parse_ort_trace
    from hybridexport.bench.runners._common import random_input
    from hybridexport.bench.runners.host_onnxruntime import (
        cpu_session,
        map_optimized_nodes,
        profiler_overhead_us,
    )

    original = onnx.load(str(path), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="hx-layers-") as td:
        sess = cpu_session(path, 1, profile_prefix=str(Path(td) / "ort"), optimized=str(Path(td) / "optimized.onnx"))
        feeds = {}
        for i, inp in enumerate(sess.get_inputs()):
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            feeds[inp.name] = random_input(shape, "float32", seed=i)
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        trace = parse_ort_trace(sess.end_profiling())
        optimized = onnx.load(str(Path(td) / "optimized.onnx"), load_external_data=False)
    identity = {n.name: n.name for n in original.graph.node if n.name}
    to_exported = map_optimized_nodes(optimized, original, identity)
    per_kernel = profiler_overhead_us(1)["per_kernel_us"]
    measured = trace.runs[warmup:] if len(trace.runs) > warmup else trace.runs
    out: dict[str, float] = {}
    for name in trace.nodes:
        target = to_exported.get(name, identity.get(name))
        if not target:
            continue
        ms = statistics.median(max(0.0, r.get(name, 0.0) - per_kernel) for r in measured) / 1000.0
        out[target] = out.get(target, 0.0) + ms
    return out


def op_anchors(tables: list[FeatureTable], design: Design) -> np.ndarray:
    """Flat index (``Design`` order) of the op each op's time belongs to: itself, or for an activation or
    residual add the runtime fuses, its producer (ORT reports a fused kernel under either node's name)."""
    anchors = np.arange(len(design.cls))
    base = 0
    for t in tables:
        index = {o.name: i for i, o in enumerate(t.ops)}
        for i, o in enumerate(t.ops):
            j = base + i
            if not (design.fusable[j] or design.fadd[j]):
                continue
            srcs = [index[s] for s in o.inputs if s in index]
            prod = [s for s in srcs if design.cls[base + s] >= 0] or srcs
            if prod:
                anchors[j] = anchors[base + prod[0]]
        base += len(t.ops)
    return anchors


def op_groups(tables: list[FeatureTable], design: Design) -> np.ndarray:
    """Cost group of every op (flat, in ``Design`` order); fused activations/adds take their producer's."""
    own = np.where(design.cls >= 0, design.cls,
                   np.where(design.view, _VIEW_GROUP, _MEM0 + design.memg))
    return own[op_anchors(tables, design)]


class LayerTargets:
    """Per (model, cost group) measured shares of kernel time: the per-layer observations of a host fit.

    Only groups holding at least ``MIN_SHARE`` of a model's measured kernel time are compared (smaller
    ones are dominated by profiler noise); each log-share error is weighted by the square root of the
    share, so a group's weight grows with the time it accounts for."""

    def __init__(self, design: Design, tables: list[FeatureTable], node_ms: list[dict[str, float]]) -> None:
        if len(node_ms) != len(tables):
            raise ValueError(f"{len(node_ms)} per-node measurements for {len(tables)} feature tables")
        op_ms = np.array([ms.get(o.name, 0.0) for t, ms in zip(tables, node_ms, strict=True) for o in t.ops],
                         dtype=float)
        n_groups = len(GROUPS)
        self.shape = (design.n_models, n_groups)
        self.cell = design.model * n_groups + op_groups(tables, design)  # flat (model, group) of every op
        obs = np.bincount(self.cell, weights=op_ms, minlength=design.n_models * n_groups).reshape(self.shape)
        total = obs.sum(axis=1, keepdims=True)
        self.share = np.divide(obs, total, out=np.zeros_like(obs), where=total > 0)
        self.keep = self.share >= MIN_SHARE

    def restrict(self, models: np.ndarray) -> LayerTargets:
        """The same targets, comparing only the given models (the others are held out)."""
        new = object.__new__(LayerTargets)
        new.shape, new.cell, new.share = self.shape, self.cell, self.share
        observed = np.zeros(self.shape[0], dtype=bool)
        observed[np.asarray(models, dtype=np.int64)] = True
        new.keep = self.keep & observed[:, None]
        return new

    @property
    def count(self) -> int:
        return int(self.keep.sum())

    def log_ratios(self, per_op: np.ndarray) -> np.ndarray:
        """log(predicted share / measured share) for every compared (model, group)."""
        pred = np.bincount(self.cell, weights=per_op, minlength=self.shape[0] * self.shape[1]).reshape(self.shape)
        pred_share = pred / np.maximum(pred.sum(axis=1, keepdims=True), 1e-30)
        k = self.keep
        return np.log(np.maximum(pred_share[k], 1e-30)) - np.log(self.share[k])

    def residuals(self, per_op: np.ndarray) -> np.ndarray:
        """sqrt(share) × :meth:`log_ratios`: a group weighs more the more time it accounts for."""
        return np.sqrt(self.share[self.keep]) * self.log_ratios(per_op)
