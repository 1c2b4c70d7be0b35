"""The per-device cost model: a roofline per op, per-kind efficiencies, dispatch, fusion and fallback.

For op *i* on the accelerator (peak ``P`` MAC/s, DRAM bandwidth ``B`` bytes/s):

    t_i = smoothmax(macs_i / (P · eff[class_i] · macs_i / (macs_i + half_macs)),
                    ((act_bytes_i − (1 − chain) · chained_bytes_i) / (B · mem[group_i])
                     + weight_bytes_i / (B · mem_weights)) · (1 + spill · share_over_onchip_i))  +  dispatch

* ``eff``: per compute class (pointwise, k×k, depthwise conv, linear, matmul); small ops reach only
  part of it (``half_macs``); ``mem``: per memory group (streaming passes: elementwise, reductions,
  concat, slice, pad, casts, pooling; normalization; relayout/transpose; per-element transcendental
  work: softmax and activations not fused into their producer); on an accelerator weights stream at
  their own rate (``mem_weights``: read once per inference from DRAM or the system cache, while
  activations can stay in on-chip buffers); on a CPU both go through one cache hierarchy, so weights
  count with the op's activation traffic;
* a tensor handed from its producer straight to its only consumer, small enough for on-chip memory, is
  chained (the compiler tiles the pair, so it need not round-trip through DRAM): its bytes cost
  ``chain`` × theirs, on the producer's side and on the consumer's;
* activations the runtime fuses into their producer cost ``fused`` × their roofline time and no
  dispatch; residual adds fed by a single-consumer compute op cost ``fused_add`` × theirs;
* views (reshapes that move no data) cost ``view`` × dispatch; so does any reshape on a CPU or one that
  falls back to the CPU/GPU, whose contiguous layout makes it a view (the innermost axis only moves data
  in an accelerator's tiled layout);
* ops the accelerator cannot run use the fallback unit's peak, divided by ``fallback_eff``, and each
  switch between units costs ``switch`` plus moving the op's input over DRAM;
* on a CPU running ONNX, ONNX Runtime keeps convolutions, pools and resizes in a channel-blocked layout
  (NCHWc) and reorders a tensor whenever it crosses to an op outside that set: ``reorder`` plus moving
  the tensor at its own rate (``mem_reorder``);
* also under ONNX Runtime on a CPU: concat/slice/split/pad copy at their own rate (``mem_copy``), a slice
  or gather reads only what it writes, and a copy (transpose, concat, slice) pays ``row`` per contiguous
  output row of ``last_dim`` elements (short rows — head dims — copy slower per byte than long ones);
* and at rank ≥ 5 (ONNX Runtime's generic N-d copy path): a transpose that moves the innermost axis (its
  input's innermost dimension differs from its output's) copies element by element, one ``row`` each; a
  transpose feeding only slices/splits/gathers runs no kernel of its own (the optimizer pushes it past
  them), so it costs a view plus those per-element rows, and the slices copy at the relayout rate;
* the model total adds a fixed per-inference ``overhead``.

The parameters are fitted per device (``calibrate.py``) in log space; ``eff``/``mem`` are fractions
of the device profile's peaks, so the fit says how far a unit is from its roofline per op kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridexport.latency.fallback import rule_for
from hybridexport.latency.features import FeatureTable
from hybridexport.optable import OpRow

COMPUTE_CLASS = {"conv_pw": 0, "conv_kxk": 1, "conv_dw": 2, "linear": 3, "matmul": 4, "conv_group": 5}
MEMORY_GROUP = {  # everything else: 0 ("stream": elementwise, casts, pooling, resize, ...)
    "norm": 1, "softmax": 4, "reduce": 0,
    "relayout": 2, "transpose": 2,
    "concat": 3, "slice": 3, "pad": 3,
    "act_complex": 4,
}
MEMORY_GROUP_NAMES = ("stream", "norm", "relayout", "concat", "complex")  # indexed by MEMORY_GROUP ids
_COPY_GROUPS = frozenset({MEMORY_GROUP["relayout"], MEMORY_GROUP["concat"]})  # data-moving copies (``row``)
_GENERIC_COPY_RANK = 5  # ONNX Runtime copies tensors of this rank and above on its generic N-d path
_PUSHED_PAST = frozenset({"Slice", "Split", "Gather"})  # ops its transpose optimizer moves a transpose past
_READS_WHAT_IT_WRITES = frozenset({"slice", "gather"})
BYTES_PER_ELEM = {"fp32": 4, "fp16": 2, "int8": 1}

# name, prior (linear units), lower, upper. Dispatch/switch/overhead in seconds.
PARAMS: tuple[tuple[str, float, float, float], ...] = (
    ("eff_conv_pw", 0.3, 1e-4, 4.0),
    ("eff_conv_kxk", 0.3, 1e-4, 4.0),
    ("eff_conv_dw", 0.05, 1e-5, 4.0),
    ("eff_linear", 0.3, 1e-4, 4.0),
    ("eff_matmul", 0.15, 1e-4, 4.0),
    ("eff_conv_group", 0.1, 1e-5, 4.0),
    ("mem_stream", 0.5, 1e-3, 16.0),
    ("mem_norm", 0.2, 1e-4, 16.0),
    ("mem_relayout", 0.2, 1e-4, 16.0),
    ("mem_copy", 0.5, 1e-3, 16.0),
    ("mem_complex", 0.3, 1e-4, 16.0),
    ("spill", 1.0, 1e-3, 100.0),
    ("chain", 1.0, 1e-3, 1.0),  # cost of chained traffic (producer → its sole consumer, on chip); 1: no saving
    ("mem_weights", 1.0, 1e-3, 16.0),  # weight streaming, as a fraction of the profile's DRAM bandwidth
    ("half_macs", 1e5, 1e2, 1e9),
    ("dispatch", 5e-6, 1e-8, 1e-3),
    ("view", 0.1, 1e-4, 1.0),
    ("fused", 0.1, 1e-4, 1.0),
    ("fused_add", 0.3, 1e-4, 1.0),
    ("fused_complex", 0.1, 1e-4, 1.0),
    ("fallback_eff", 0.3, 1e-3, 1.0),
    ("switch", 5e-5, 1e-7, 1e-2),
    ("reorder", 2e-6, 1e-8, 1e-3),
    ("row", 1e-9, 1e-12, 1e-6),  # ONNX Runtime copies: seconds per contiguous output row (of ``last_dim`` elements)
    ("mem_reorder", 0.2, 1e-4, 16.0),  # ONNX Runtime's NCHWc reorders, as a fraction of the DRAM bandwidth
    ("overhead", 1e-4, 1e-7, 5e-2),
)
PARAM_NAMES = tuple(p[0] for p in PARAMS)
#: parameters in seconds of the runtime's own work (per op, per row, per switch, per inference): on a core of
#: another speed they scale with it (``calibrate.machine.adapt_to_this_machine``)
SECONDS_PARAMS = frozenset({"dispatch", "switch", "reorder", "row", "overhead"})
# Parameters few calibration models exercise (only models with rank-5 tensors fall back) get a tighter
# prior (log-scale sigma), so one inconsistent published figure cannot send them to extremes.
PRIOR_SIGMA_OF = {"fallback_eff": 0.5, "switch": 0.5}
# Shrinkage: each kind's efficiency is pulled towards a related kind's (a linear layer is a 1x1 conv,
# concat/relayout/norm traffic is memory traffic), so a kind that few models exercise borrows strength.
TIES: tuple[tuple[str, str], ...] = (
    ("eff_conv_kxk", "eff_conv_pw"), ("eff_linear", "eff_conv_pw"), ("eff_matmul", "eff_linear"),
    ("eff_conv_group", "eff_conv_kxk"),
    ("mem_norm", "mem_stream"), ("mem_relayout", "mem_stream"), ("mem_complex", "mem_stream"),
)
_I = {n: i for i, n in enumerate(PARAM_NAMES)}
_EFF = slice(_I["eff_conv_pw"], _I["eff_conv_group"] + 1)
_MEM = slice(_I["mem_stream"], _I["mem_complex"] + 1)
# Memory group → its bandwidth parameter (offset in ``_MEM``). Softmax and transcendental activations the
# runtime does not fuse (group 4) cost per-element compute at a rate of their own, tied to the stream's. Under
# ONNX Runtime on a CPU, concat/slice/split/pad (group 3) are memcpy-like copies with a rate of their own
# (``mem_copy``; the host's per-node times put them ~2× faster per byte than the stream's rate); elsewhere they
# share the elementwise stream's rate, as fitted on the published figures.
_MEM_PARAM_OF_GROUP_ORT_CPU = np.array([0, 1, 2, 3, 4], dtype=np.int64)
_MEM_PARAM_OF_GROUP = np.array([0, 1, 2, 0, 4], dtype=np.int64)
DISPATCH_PRIOR = {"ane": 5e-6, "gpu": 1e-5, "npu": 5e-6, "cpu": 2e-6}
# Upper bound on the per-inference ``overhead`` (s) where a free one flattens differences: on the Neural Engine
# and the TFLite GPU a fixed cost of ~0.1-0.3 ms absorbed the floor of small models' published latencies, and
# the same-family ratios came out too close to 1 (iphone13 published pairs, family held out: median ratio error
# 6.5 % free, 2.3 % capped; held-out MAPE 29.9 → 29.7 %; pixel7 21.1 → 16.9 %). The Pixel 8 NPU's data want a
# large fixed cost (capped, its pairs get worse: 6.4 → 14.5 %), CPUs fit one below the cap anyway. The prior
# sits just below the cap.
OVERHEAD_MAX = {"ane": 5e-5, "gpu": 5e-5}
# On-chip memory per unit: an op whose activations exceed it streams them from DRAM (``spill`` × slower).
ONCHIP_BYTES = {"ane": 4 * 2**20, "gpu": 2 * 2**20, "npu": 4 * 2**20, "cpu": 1 * 2**20}
_SMOOTH_P = 4.0
# ONNX Runtime's NCHWc transformer (x86 CPU): ops that run in the blocked layout (observed in its optimized
# graphs: anything else gets ReorderInput/ReorderOutput around it). Unary activations keep their input's
# layout; Add/Sum stay blocked when all their inputs are.
NCHWC_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Upsample", "Resize",
                       "BatchNormalization"})


def _blocked_layout(ops: list[OpRow], srcs: list[list[int]]) -> list[bool]:
    """Which ops ONNX Runtime runs in its blocked (NCHWc) layout, in graph order."""
    out: list[bool] = []
    for o, src in zip(ops, srcs, strict=True):
        ins = [out[j] for j in src if j < len(out)]
        if o.op_type in NCHWC_OPS:
            out.append(True)
        elif o.kind in ("activation", "act_complex") and len(ins) == 1:
            out.append(ins[0])
        elif o.op_type in ("Add", "Sum") and ins:
            out.append(all(ins) and len(ins) == len(src))
        else:
            out.append(False)
    return out


def _pushed_past_slices(ops: list[OpRow], srcs: list[list[int]]) -> list[bool]:
    """Rank ≥ 5 transposes whose every consumer is a slice, split or gather: ONNX Runtime's transpose
    optimizer moves them past those ops, so they run no kernel of their own (per-node times: 129 of 129)."""
    consumers: list[list[int]] = [[] for _ in ops]
    for i, src in enumerate(srcs):
        for j in src:
            consumers[j].append(i)
    return [o.op_type == "Transpose" and o.rank >= _GENERIC_COPY_RANK and bool(consumers[i])
            and all(ops[c].op_type in _PUSHED_PAST for c in consumers[i]) for i, o in enumerate(ops)]


@dataclass(frozen=True)
class DeviceSpec:
    """What the cost model needs to know about a device and the protocol it runs."""

    name: str
    format: str
    unit: str  # "ane" | "gpu" | "npu" | "cpu"
    precision: str
    peak_macs: float
    fallback_macs: float
    bandwidth: float

    @property
    def ort_cpu(self) -> bool:
        """ONNX Runtime on a CPU (the host): the rules observed in its optimized graphs and per-node times apply."""
        return self.unit == "cpu" and self.format == "onnx"

    @property
    def bytes_per_elem(self) -> int:
        return BYTES_PER_ELEM.get(self.precision, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "unit": self.unit, "precision": self.precision,
                "peak_macs": self.peak_macs, "fallback_macs": self.fallback_macs, "bandwidth": self.bandwidth}

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> DeviceSpec:
        return cls(name=name, format=d["format"], unit=d["unit"], precision=d["precision"],
                   peak_macs=float(d["peak_macs"]), fallback_macs=float(d["fallback_macs"]),
                   bandwidth=float(d["bandwidth"]))


def prior_theta(spec: DeviceSpec) -> np.ndarray:
    cap = OVERHEAD_MAX.get(spec.unit)
    vals = [DISPATCH_PRIOR.get(spec.unit, 5e-6) if n == "dispatch" else
            min(v, 0.9 * cap) if n == "overhead" and cap is not None else v for n, v, _, _ in PARAMS]
    return np.log(np.array(vals, dtype=float))


def bounds(unit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Log bounds of every parameter (the overhead capped on the units of :data:`OVERHEAD_MAX`)."""
    cap = OVERHEAD_MAX.get(unit or "")
    his = [min(hi, cap) if n == "overhead" and cap is not None else hi for n, _, _, hi in PARAMS]
    return np.log([p[2] for p in PARAMS]), np.log(his)


def theta_from_params(params: dict[str, float]) -> np.ndarray:
    return np.log(np.array([float(params[n]) for n in PARAM_NAMES], dtype=float))


def params_from_theta(theta: np.ndarray) -> dict[str, float]:
    return {n: float(np.exp(v)) for n, v in zip(PARAM_NAMES, theta, strict=True)}


class Design:
    """The features of many models for one device, as flat arrays (one entry per op)."""

    # one array per op each (``model``: the op's model index); integer and boolean ones named below
    PER_OP = ("macs", "bytes", "wbytes", "in_bytes", "near", "over", "cls", "memg", "fusable", "fadd", "fcx", "fb",
              "trans", "view", "reorder", "rows")
    _INT = frozenset({"model", "cls", "memg"})
    _BOOL = frozenset({"fusable", "fadd", "fcx", "fb", "trans", "view", "reorder"})

    def __init__(self, tables: list[FeatureTable], spec: DeviceSpec) -> None:
        self.spec = spec
        self.n_models = len(tables)
        falls_back = rule_for(spec.unit)
        cols: dict[str, list[Any]] = {k: [] for k in ("model", *self.PER_OP)}
        onchip = float(ONCHIP_BYTES.get(spec.unit, 2**20))
        bpe = spec.bytes_per_elem
        weights_apart = spec.unit != "cpu"  # a CPU reads weights through the same caches as activations
        for m, t in enumerate(tables):
            index = {o.name: i for i, o in enumerate(t.ops)}
            srcs = [[index[s] for s in o.inputs if s in index] for o in t.ops]
            n_cons = np.bincount([j for src in srcs for j in src], minlength=len(t.ops))
            blocked = _blocked_layout(t.ops, srcs) if spec.ort_cpu else None
            pushed = _pushed_past_slices(t.ops, srcs) if spec.ort_cpu else [False] * len(t.ops)
            fb: list[bool] = []
            for o, src in zip(t.ops, srcs, strict=True):
                # a view moves no data: it stays on whichever unit produced its input (no switch)
                fb.append(fb[src[0]] if o.kind == "view" and src and src[0] < len(fb) else falls_back(o))
            for i, o in enumerate(t.ops):
                src = srcs[i]
                cols["model"].append(m)
                cols["macs"].append(float(o.macs))
                # under ONNX Runtime a slice or gather reads only the part of its input it writes out
                reads_out = spec.ort_cpu and o.kind in _READS_WHAT_IT_WRITES
                read = min(o.in_elems, o.out_elems) if reads_out else o.in_elems
                in_b = float(read) * bpe
                act = in_b + float(o.out_elems) * bpe
                weights = float(o.w_elems) * bpe
                cols["bytes"].append(act if weights_apart else act + weights)
                cols["wbytes"].append(weights if weights_apart else 0.0)
                # traffic of tensors handed straight to a single consumer and small enough to stay on chip
                chained = [float(t.ops[j].out_elems) for j in src if n_cons[j] == 1]
                chained += [float(o.out_elems)] if n_cons[i] == 1 else []
                cols["near"].append(min(sum(e * bpe for e in chained if e * bpe <= onchip), act))
                cols["in_bytes"].append(in_b)
                cols["over"].append(max(act - onchip, 0.0) / act if act > 0 else 0.0)
                cols["cls"].append(COMPUTE_CLASS.get(o.kind, -1))
                cols["fcx"].append(o.fusable and o.kind == "act_complex")
                generic = spec.ort_cpu and o.rank >= _GENERIC_COPY_RANK
                strided_slice = generic and o.kind == "slice"
                cols["memg"].append(MEMORY_GROUP["relayout"] if strided_slice else MEMORY_GROUP.get(o.kind, 0))
                cols["fusable"].append(o.fusable)
                cols["fadd"].append(not o.fusable and o.kind == "eltwise" and len(src) == 2 and any(
                    t.ops[j].kind in COMPUTE_CLASS and n_cons[j] == 1 for j in src))
                cols["fb"].append(fb[i])
                cols["trans"].append(any(fb[j] != fb[i] for j in src))
                cols["reorder"].append(blocked is not None and any(blocked[j] != blocked[i] for j in src))
                # in a contiguous (row-major) layout, as on a CPU or after falling back to one, any reshape
                # is a view; only accelerators with tiled layouts move data when the innermost axis changes
                contiguous = fb[i] or spec.unit == "cpu"
                view = o.kind == "view" or pushed[i] or (contiguous and o.kind == "relayout"
                                            and o.op_type.lower() in ("reshape", "flatten"))
                cols["view"].append(view)
                copies = spec.ort_cpu and not view and MEMORY_GROUP.get(o.kind) in _COPY_GROUPS
                # moving the innermost axis at rank ≥ 5 copies element by element, also when pushed past slices
                per_elem = (generic and o.op_type == "Transpose" and bool(src)
                            and t.ops[src[0]].last_dim != o.last_dim)
                cols["rows"].append(float(o.out_elems) if per_elem else
                                    float(o.out_elems) / max(o.last_dim, 1) if copies else 0.0)
        for k, v in cols.items():
            setattr(self, k, np.array(v, dtype=np.int64 if k in self._INT else bool if k in self._BOOL else float))

    def subset(self, keep_models: np.ndarray) -> Design:
        """The same design restricted to some models (renumbered in order)."""
        new = object.__new__(Design)
        new.spec = self.spec
        keep_models = np.asarray(keep_models, dtype=np.int64)
        mask = np.isin(self.model, keep_models)
        renum = -np.ones(self.n_models, dtype=np.int64)
        renum[keep_models] = np.arange(len(keep_models))
        for k in self.PER_OP:
            setattr(new, k, getattr(self, k)[mask])
        new.model = renum[self.model[mask]]
        new.n_models = len(keep_models)
        return new

    def op_times(self, theta: np.ndarray) -> np.ndarray:
        """Seconds per op for log-parameters ``theta``."""
        p = np.exp(theta)
        eff, mem = p[_EFF], p[_MEM]
        dispatch, view_f, fused_f = p[_I["dispatch"]], p[_I["view"]], p[_I["fused"]]
        fb_eff, switch = p[_I["fallback_eff"]], p[_I["switch"]]
        spec = self.spec
        peak = np.where(self.fb, spec.fallback_macs, spec.peak_macs)
        ceff = np.where(self.cls >= 0, eff[np.clip(self.cls, 0, len(eff) - 1)], 1.0)
        # small ops cannot fill the unit: efficiency ramps up with size, half of it at ``half_macs``
        ceff = ceff * self.macs / (self.macs + p[_I["half_macs"]])
        t_c = np.where(self.cls >= 0, self.macs / (peak * np.maximum(ceff, 1e-30)), 0.0)
        traffic = self.bytes - (1.0 - p[_I["chain"]]) * self.near
        mem_of_group = _MEM_PARAM_OF_GROUP_ORT_CPU if spec.ort_cpu else _MEM_PARAM_OF_GROUP
        t_m = (traffic / (spec.bandwidth * mem[mem_of_group[self.memg]])
               + self.wbytes / (spec.bandwidth * p[_I["mem_weights"]])) * (1.0 + p[_I["spill"]] * self.over)
        hi = np.maximum(t_c, t_m)
        lo = np.minimum(t_c, t_m)
        roof = hi * np.power(1.0 + np.power(lo / np.maximum(hi, 1e-30), _SMOOTH_P), 1.0 / _SMOOTH_P)
        roof = np.where(self.fb, roof / fb_eff, roof)
        t = np.where(self.fusable, roof * fused_f, roof + dispatch)
        t = np.where(self.fadd, roof * p[_I["fused_add"]], t)
        t = np.where(self.fcx, roof * p[_I["fused_complex"]], t)
        t = np.where(self.view, dispatch * view_f, t)
        t = t + self.rows * p[_I["row"]]
        t = t + np.where(self.trans, switch + self.in_bytes / spec.bandwidth, 0.0)
        t = t + np.where(self.reorder, p[_I["reorder"]] + self.in_bytes / (spec.bandwidth * p[_I["mem_reorder"]]), 0.0)
        return t

    def totals(self, theta: np.ndarray, per_op: np.ndarray | None = None) -> np.ndarray:
        """Seconds per model (sum of op times plus the per-inference overhead)."""
        per_op = self.op_times(theta) if per_op is None else per_op
        return np.bincount(self.model, weights=per_op, minlength=self.n_models) + np.exp(theta[_I["overhead"]])
