"""ONNX on the host CPU with onnxruntime: per-node kernel times from ORT's built-in profiler.

Method: one session without profiling gives the end-to-end times (perf_counter around
``session.run``); a second, identical session with ``SessionOptions.enable_profiling`` gives each
node's kernel time per run (Chrome-trace JSON, ``Node`` events). Both use ``intra_op_num_threads =
threads``, sequential execution and all graph optimizations. ORT fuses and renames nodes (e.g.
``getitem_3_nchwc``); the optimized graph (``optimized_model_filepath``) is matched back to the
exported graph through node names, output tensors and neighbours, and each exported node carries
its nn.Module path in the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import (
    artifact,
    elevated_priority,
    host_environment,
    host_only,
    layer_summary,
    random_input,
    ticker,
    time_interleaved,
)

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}
_RENAMED = re.compile(r"(_nchwc|_new_reshape|_new_shape|_token_\d+|_fusion|_fused)$")


def map_optimized_nodes(optimized: Any, original: Any, modules: dict[str, str]) -> dict[str, str]:
    """Module of every node of ORT's optimized graph, via the exported graph's metadata.

    Tried in order: same node name; name with ORT's suffixes removed (``_nchwc``, ``/FusionName/``,
    ``_token_N``) as a node or output-tensor name; an output tensor of an exported node; then the
    modules of the node's consumers, then of its producers (for inserted layout reorders).
    """
    producer = {o: n.name for n in original.graph.node for o in n.output}
    resolved: dict[str, str] = {}
    for n in optimized.graph.node:
        cands = [n.name, n.name.split("/")[0]]
        c = cands[-1]
        while _RENAMED.search(c):
            c = _RENAMED.sub("", c)
            cands.append(c)
        hit = ""
        for cand in cands:
            if cand in modules:
                hit = modules[cand]
                break
            if cand in producer:
                hit = modules.get(producer[cand], "")
                break
        if not hit:
            for o in n.output:
                if o in producer:
                    hit = modules.get(producer[o], "")
                    break
        if hit:
            resolved[n.name] = hit
    consumers: dict[str, list[str]] = {}
    producers: dict[str, str] = {}
    for n in optimized.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
        for o in n.output:
            producers[o] = n.name
    for _ in range(3):  # propagate through chains of inserted nodes
        for n in optimized.graph.node:
            if n.name in resolved:
                continue
            near = [resolved.get(c) for o in n.output for c in consumers.get(o, [])]
            near += [resolved.get(producers.get(i, "")) or modules.get(producer.get(i, ""), "") for i in n.input]
            near = [m for m in near if m]
            if near:
                resolved[n.name] = near[0]
    return resolved


def cpu_session(path: str | Path, threads: int = 1, profile_prefix: str | None = None,
                optimized: str | None = None) -> Any:
    """An ONNX Runtime CPU session with this runner's settings: ``threads`` intra-op threads, sequential
    execution, all graph optimizations; optionally profiling and saving the optimized graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def profiler_overhead_us(threads: int = 1, nodes: int = 200, runs: int = 15) -> dict[str, float]:
    """What ORT's profiler adds to each kernel's measured ``dur``, measured here and now.

    A probe graph of ``nodes`` trivial kernels (``Neg`` on one float) runs with and without
    profiling: the per-kernel overhead is the median traced ``dur`` minus the untraced time per
    node. It matters for models with many tiny ops (Mobile-Former: ~800 kernels of a few µs).
    """
    import time

    import numpy as np
    import onnx
    import onnx.helper as oh
    import onnxruntime as ort

    prev, body = "x", []
    for i in range(nodes):
        body.append(oh.make_node("Neg", [prev], [f"t{i}"], name=f"probe{i}"))
        prev = f"t{i}"
    graph = oh.make_graph(body, "probe", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, [1])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    blob = model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="hx-ort-probe-") as td:
        def session(profile: bool) -> Any:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.log_severity_level = threads, 3
            if profile:
                so.enable_profiling, so.profile_file_prefix = True, str(Path(td) / "probe")
            return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])

        plain, traced = session(False), session(True)
        feed = {"x": np.ones(1, np.float32)}
        per_node = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            plain.run(None, feed)
            per_node.append((time.perf_counter_ns() - t0) / 1e3 / nodes)
            traced.run(None, feed)
        from hybridexport.bench.parsers.ort_trace import parse_ort_trace

        trace = parse_ort_trace(traced.end_profiling())
    durs = sorted(d for r in trace.runs for d in r.values())
    plain_us = sorted(per_node)[len(per_node) // 2]
    traced_us = durs[len(durs) // 2]
    return {"per_kernel_us": max(0.0, traced_us - plain_us), "probe_dur_us": traced_us, "probe_plain_us": plain_us}


def _fill_in_execution_order(rows: list[LayerRow]) -> None:
    """Kernels of nodes ORT made after saving the optimized graph (function ops it inlined, e.g.
    HardSwish → HardSigmoid + Mul) take the module of the kernel that ran before them."""
    if not any(r.module for r in rows):
        return
    last = ""
    for r in rows:
        if r.module:
            last = r.module
        elif last:
            r.module, r.module_source = last, "inherited"
    nxt = ""
    for r in reversed(rows):
        if r.module:
            nxt = r.module
        else:
            r.module, r.module_source = nxt, "inherited"


class OnnxRuntimeRunner(Runner):
    name = "host-onnxruntime"
    formats = ("onnx",)

    def availability(self, device: Any) -> tuple[bool, str]:
        return host_only(device, "onnxruntime", "onnxruntime")

    def _session(self, path: Path, threads: int, profile_prefix: str | None = None, optimized: str | None = None):
        return cpu_session(path, threads, profile_prefix, optimized)

    def run(self, request: BenchRequest) -> Profile:
        import onnx
        import onnxruntime as ort

        self.require(request.device)
        path = artifact(request, "onnx")
        threads, runs, warmup = request.threads, request.runs, request.warmup
        tick = ticker(request)

        sess = self._session(path, threads)
        feeds: dict[str, Any] = {}
        for i, inp in enumerate(sess.get_inputs()):
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            feeds[inp.name] = random_input(shape, _DTYPES.get(inp.type, "float32"), seed=i)
        with tempfile.TemporaryDirectory(prefix="hx-ort-") as td:
            opt_path = str(Path(td) / "optimized.onnx")
            psess = self._session(path, threads, profile_prefix=str(Path(td) / "ort"), optimized=opt_path)
            cpu: list[float] = []
            with elevated_priority() as priority:
                total = time_interleaved(lambda: sess.run(None, feeds), lambda: psess.run(None, feeds), runs, warmup,
                                         tick, cpu)
            trace_path = psess.end_profiling()
            from hybridexport.bench.parsers.ort_trace import parse_ort_trace

            trace = parse_ort_trace(trace_path)
            optimized = onnx.load(opt_path, load_external_data=False)
        original = onnx.load(str(path), load_external_data=False)
        table = request.op_table()
        modules = {o.name: o.module for o in table.ops} if table is not None else {}
        opt_modules = map_optimized_nodes(optimized, original, modules)

        measured = trace.runs[warmup:] if len(trace.runs) > warmup else trace.runs
        overhead = profiler_overhead_us(threads)
        c = overhead["per_kernel_us"]
        rows = []
        for node in trace.nodes.values():
            samples = [max(0.0, r[node.name] - c) / 1000.0 if node.name in r else 0.0 for r in measured]
            module = opt_modules.get(node.name, modules.get(node.name, ""))
            rows.append(LayerRow(
                name=node.name,
                op_type=node.op_type,
                module=module,
                compute_unit="cpu" if node.provider.startswith("CPU") else node.provider,
                ms=Stats.from_samples(samples),
                module_source="op_table" if module else "",
            ))
        _fill_in_execution_order(rows)
        unmapped = [r.name for r in rows if not r.module]
        notes = []
        if unmapped and not (table and table.module_mapping):
            notes.append(f"{path.name} carries no nn.Module metadata (not exported by the dynamo exporter): "
                         "rows keep the runtime's node names")
        elif unmapped:
            notes.append(f"{len(unmapped)} node(s) could not be mapped to a module: {', '.join(unmapped[:5])}")
        profile = Profile(
            model=request.label,
            format="onnx",
            device=request.device.name,
            runner=self.name,
            obtained="measured",
            total_ms=Stats.from_samples(total),
            layers=rows,
            artifact_sha256=request.manifest.sha256 if request.manifest else "",
            input_shapes=[t.shape for t in table.inputs] if table else [],
            environment=host_environment(
                threads, runtime="onnxruntime", onnxruntime=ort.__version__,
                provider="CPUExecutionProvider", graph_optimization="ORT_ENABLE_ALL", execution_mode="sequential",
                runs=runs, warmup=warmup, priority=priority,
            ),
            method=("onnxruntime profiler (SessionOptions.enable_profiling): per-node kernel time of the optimized "
                    "graph per run, less the profiler's own cost per kernel (measured on a probe graph of trivial "
                    "kernels); total from an identical session without profiling, run alternately; modules from "
                    "the artifact's op table (dynamo exporter node metadata)"),
            notes=notes,
        )
        profile.fill_shares()
        run_ms = [u / 1000 for u in (trace.run_us[warmup:] if len(trace.run_us) > warmup else trace.run_us)]
        raw_runs = [sum(r.values()) / 1000.0 for r in measured]
        profile.extra.update(layer_summary(profile, run_ms, cpu, traced_rows_ms=raw_runs))
        raw = sorted(raw_runs)
        profile.extra.update({"profiler_overhead_us_per_kernel": round(c, 3),
                              "probe": {k: round(v, 3) for k, v in overhead.items()},
                              "raw_kernel_total_ms": round(raw[len(raw) // 2], 4) if raw else None})
        return profile
