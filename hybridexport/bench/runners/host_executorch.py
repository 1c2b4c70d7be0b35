"""ExecuTorch ``.pte`` on the host CPU: per-op times from ETDump, mapped to modules through the ETRecord.

Method: the program is loaded twice with ``executorch.runtime.Runtime``: plainly (end-to-end times,
perf_counter around ``Method.execute``) and with ``enable_etdump=True`` (the pip runtime is built
with the event tracer); the two are called alternately. ``executorch.devtools.Inspector`` reads the
ETDump: XNNPACK reports each of its operators (``Convolution (NHWC, F32) IGEMM #2``), portable
kernels appear as ``OPERATOR_CALL``/``native_call_*`` events with debug handles, and every
``DELEGATE_CALL`` names the debug handles of the edge-graph nodes it lowered.

Module paths come from the ETRecord's edge program (each node's ``debug_handle`` and
``nn_module_stack``): portable ops directly; XNNPACK operators by aligning them, in execution
order, with their delegate's source nodes in graph order (see :mod:`hybridexport.bench.mapping`).
The time a delegate call spends outside its operators becomes one ``delegate_overhead`` row.

The ETRecord is the one ``convert`` writes beside the artifact (``<name>.pte.etrecord``); a ``.pte`` made
elsewhere without one is still profiled, its rows keeping the runtime's op names.
"""

from __future__ import annotations

import contextlib
import operator
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridexport import modpath
from hybridexport.bench.mapping import align, aligned_modules, aten_kind, xnn_kinds
from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import (
    artifact,
    elevated_priority,
    host_environment,
    host_only,
    layer_summary,
    ticker,
    time_interleaved,
    version_of,
)
from hybridexport.errors import InputFileError
from hybridexport.export.formats.executorch import etrecord_path
from hybridexport.modpath import ROOT

_FRAMEWORK = {"Method::init", "Program::load_method", "Method::execute"}
_SCALAR_TYPES = {6: "float32", 5: "float16", 15: "bfloat16", 4: "int64", 3: "int32", 1: "int8", 0: "uint8", 11: "bool"}


@dataclass
class SourceOp:
    handle: int
    kind: str
    module: str
    target: str


def source_ops(etrecord: Any) -> dict[int, list[SourceOp]]:
    """Debug handle → the edge-graph nodes that carry it (kind, module path, target)."""
    ep = etrecord.edge_dialect_program
    if isinstance(ep, dict):
        ep = ep.get("forward") or next(iter(ep.values()))
    out: dict[int, list[SourceOp]] = {}
    for node in ep.graph_module.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        handle = node.meta.get("debug_handle")
        handles = handle if isinstance(handle, (tuple, list)) else [handle]
        target = str(getattr(node.target, "__name__", node.target))
        for h in handles:
            if isinstance(h, int):
                out.setdefault(h, []).append(
                    SourceOp(h, aten_kind(target), modpath.from_module_stack(node.meta.get("nn_module_stack")), target)
                )
    return out


class ExecuTorchRunner(Runner):
    name = "host-executorch"
    formats = ("executorch",)

    def availability(self, device: Any) -> tuple[bool, str]:
        return host_only(device, "executorch.runtime", "executorch")

    def run(self, request: BenchRequest) -> Profile:
        self.require(request.device)
        pte = artifact(request, "executorch")
        notes: list[str] = []
        rec_path = etrecord_path(pte)
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            from executorch.devtools import Inspector
            from executorch.devtools.etrecord import parse_etrecord

            etrecord, handles = None, {}
            if rec_path.exists():
                try:
                    etrecord = parse_etrecord(str(rec_path))
                except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
                    raise InputFileError(f"ETRecord {rec_path} cannot be read ({type(exc).__name__}: {exc}); "
                                         "rebuild the artifact with `hybridexport convert --force`") from None
                handles = source_ops(etrecord)
            else:
                notes.append(f"no ETRecord beside {pte.name} (convert writes one): rows keep the runtime's op names")
            total, etdump, threads_used = self._measure(pte, request)
            with tempfile.TemporaryDirectory(prefix="hx-et-") as td:
                dump, dbg = Path(td) / "run.etdp", Path(td) / "debug.bin"
                etdump.write_etdump_result_to_file(str(dump), str(dbg))
                inspector = Inspector(etdump_path=str(dump), etrecord=etrecord)
        block = next((b for b in inspector.event_blocks if any(e.name == "Method::execute" for e in b.events)), None)
        if block is None:
            raise InputFileError("the ETDump has no Method::execute events; is the runtime built with the event tracer?")
        rows = build_rows(block.events, handles, request.warmup, request.runs)
        execute = next((e for e in block.events if e.name == "Method::execute"), None)
        run_ms = _samples(execute, request.warmup, request.runs) if execute is not None else []
        rows_ms = [sum(v) for v in zip(*(r.ms.samples for r in rows))] if rows else []
        import executorch

        table = request.op_table()
        profile = Profile(
            model=request.label,
            format="executorch",
            device=request.device.name,
            runner=self.name,
            obtained="measured",
            total_ms=Stats.from_samples(total),
            layers=rows,
            artifact_sha256=request.manifest.sha256 if request.manifest else "",
            input_shapes=[t.shape for t in table.inputs] if table else [],
            environment=host_environment(
                request.threads, runtime="executorch", executorch=getattr(executorch, "__version__", None)
                or version_of("executorch"), backend="XnnpackBackend + portable kernels",
                threadpool_threads=threads_used, runs=request.runs, warmup=request.warmup,
                priority=getattr(self, "_priority", ""),
            ),
            method=("ExecuTorch ETDump (Runtime.load_program(enable_etdump=True)) read with devtools.Inspector: "
                    "XNNPACK per-operator and portable per-kernel times per run; modules from the ETRecord's "
                    "debug handles and nn_module_stack (XNNPACK ops aligned in order with their delegate's nodes)"),
            notes=notes,
        )
        profile.fill_shares()
        profile.extra.update(layer_summary(profile, run_ms or None, cpu_ms=getattr(self, "_cpu", None),
                                           traced_rows_ms=rows_ms or None))
        return profile

    def _measure(self, pte: Path, request: BenchRequest) -> tuple[list[float], Any, int]:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(request.threads)
        threads_used = portable_lib._threadpool_get_thread_count()
        rt = Runtime.get()
        plain = rt.load_program(pte)
        traced = rt.load_program(pte, enable_etdump=True, debug_buffer_size=0)
        meta = plain.metadata("forward")
        inputs = []
        g = torch.Generator().manual_seed(0)
        for i in range(meta.num_inputs()):
            tm = meta.input_tensor_meta(i)
            dtype = getattr(torch, _SCALAR_TYPES.get(int(tm.dtype()), "float32"))
            inputs.append(torch.randn(tuple(tm.sizes()), generator=g).to(dtype))
        m_plain, m_traced = plain.load_method("forward"), traced.load_method("forward")
        cpu: list[float] = []
        with elevated_priority() as priority:
            total = time_interleaved(lambda: m_plain.execute(inputs), lambda: m_traced.execute(inputs),
                                     request.runs, request.warmup, ticker(request), cpu)
        self._cpu, self._priority = cpu, priority
        return total, traced, threads_used


@contextlib.contextmanager
def _quiet():
    import logging

    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(level)


def _samples(event: Any, warmup: int, runs: int) -> list[float]:
    raw = list(event.perf_data.raw) if event.perf_data is not None else []
    return [float(x) for x in (raw[warmup:] if len(raw) >= warmup + runs else raw[-runs:])]


def _handles(event: Any) -> list[int]:
    h = event.debug_handles
    if h is None:
        return []
    return [h] if isinstance(h, int) else [x for x in h if isinstance(x, int)]


def _first_start(event: Any, idx: int) -> float:
    st = event.start_time or []
    return float(st[idx]) if len(st) > idx else 0.0


def build_rows(events: list[Any], handles: dict[int, list[SourceOp]], warmup: int, runs: int) -> list[LayerRow]:
    """Turn one Execute event block into rows (delegate operators, portable kernels, delegate overhead)."""
    by_iid: dict[int, dict[str, list[Any]]] = {}
    for e in events:
        if e.name in _FRAMEWORK:
            continue
        iid = getattr(e, "_instruction_id", None)
        slot = by_iid.setdefault(iid if isinstance(iid, int) else -1, {"delegate": [], "ops": [], "call": [], "native": []})
        if e.is_delegated_op:
            slot["ops"].append(e)
        elif e.name == "DELEGATE_CALL":
            slot["delegate"].append(e)
        elif e.name == "OPERATOR_CALL":
            slot["call"].append(e)
        elif e.name.startswith("native_call_"):
            slot["native"].append(e)
    rows: list[LayerRow] = []
    ref = warmup  # the first measured run orders delegate operators
    for iid in sorted(by_iid):
        slot = by_iid[iid]
        if slot["delegate"]:
            rows.extend(_delegate_rows(slot["delegate"][0], slot["ops"], handles, warmup, runs, ref))
            continue
        for e in slot["call"] or slot["native"]:
            native = slot["native"][0] if slot["native"] else e
            name = native.name.removeprefix("native_call_")
            nodes = [n for h in _handles(e) for n in handles.get(h, [])]
            base = name.split(".")[0]
            exact = [n for n in nodes if n.target.startswith(f"aten.{base}.") or n.target.split(".")[-2:-1] == [base]]
            module = modpath.common_module([n.module for n in (exact or nodes)])
            rows.append(LayerRow(name=f"{name} [{iid}]", op_type=(exact or nodes)[0].target if nodes else name,
                                 module=module, compute_unit="cpu (portable)", ms=Stats.from_samples(_samples(e, warmup, runs)),
                                 module_source="debug_handle" if module else ""))
    return rows


def _delegate_rows(call: Any, ops: list[Any], handles: dict[int, list[SourceOp]], warmup: int, runs: int,
                   ref: int) -> list[LayerRow]:
    seen: set[int] = set()
    src: list[SourceOp] = []
    for h in sorted(set(_handles(call))):
        for n in handles.get(h, []):
            if id(n) not in seen:
                seen.add(id(n))
                src.append(n)
    ops = sorted(ops, key=lambda e: _first_start(e, ref))
    matches = align([xnn_kinds(e.name) for e in ops], [n.kind for n in src])
    modules = aligned_modules(matches, [_fold_norm(src, k) for k in range(len(src))])
    backend = (call.delegate_backend_name or "delegate").replace("Backend", "").lower()
    rows = []
    inner = None
    for e, mod in zip(ops, modules):
        s = _samples(e, warmup, runs)
        inner = s if inner is None else [a + b for a, b in zip(inner, s)]
        module = mod or modpath.common_module(n.module for n in src)
        rows.append(LayerRow(name=e.name, op_type=e.name.split(" (")[0], module=module,
                             compute_unit=f"cpu ({backend})", ms=Stats.from_samples(s),
                             module_source="alignment" if module else ""))
    call_s = _samples(call, warmup, runs)
    over = [max(0.0, c - i) for c, i in zip(call_s, inner or [0.0] * len(call_s))]
    rows.append(LayerRow(name=f"DELEGATE_CALL [{getattr(call, '_instruction_id', '?')}] outside operators",
                         op_type="delegate_overhead", module=modpath.common_module(n.module for n in src) or ROOT,
                         compute_unit=f"cpu ({backend})", ms=Stats.from_samples(over), module_source="debug_handle"))
    return rows


def _fold_norm(src: list[SourceOp], k: int) -> str:
    """A conv directly followed by its batch norm maps to their common parent (the conv+norm block)."""
    n = src[k]
    if n.kind == "conv" and k + 1 < len(src) and src[k + 1].kind == "batchnorm":
        return modpath.common_module([n.module, src[k + 1].module])
    return n.module
