"""Per-op features of an exported graph: the device-independent input of the latency model.

One ``OpFeature`` per runtime op (Core ML MIL op, TFLite op, ONNX node) with its canonical
``kind``, multiply-accumulates, tensor sizes in *elements* (the device's precision turns them into
bytes), the largest tensor rank it touches, whether it changes the memory layout, and whether the
runtime fuses it into the op that produces its input. Fallback to a slower unit is decided later,
per device, from these fields (see ``fallback.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

# Canonical kinds. The cost model groups them into efficiency classes.
COMPUTE_KINDS = ("conv_pw", "conv_kxk", "conv_dw", "conv_group", "linear", "matmul")
MEMORY_KINDS = (
    "activation",  # cheap unary: relu, clip, abs, ...
    "act_complex",  # transcendental unary: gelu, sigmoid, silu, tanh, erf, exp, ...
    "eltwise",  # binary elementwise
    "norm", "softmax", "reduce", "pool",
    "view",  # reshape that moves no data
    "relayout",  # reshape that changes the innermost axis, channel shuffle, depth/space
    "transpose",  # axis permutation that moves data
    "concat", "slice",  # concat/stack/tile; split/slice
    "pad", "resize", "gather", "cast", "other",
)
ELEMENTWISE_KINDS = ("activation", "act_complex", "eltwise")
KINDS = COMPUTE_KINDS + MEMORY_KINDS

# Column order of the compact table (data files and in-memory arrays).
# ``src``: indices of the ops producing this op's activation inputs (graph connectivity).
COLUMNS = ("kind", "op_type", "macs", "w_elems", "in_elems", "out_elems", "rank", "erank", "max_dim", "last_dim",
           "fusable", "src")


@dataclass
class OpFeature:
    """One runtime op as the cost model sees it."""

    name: str  # the runtime's op name (MIL output name, TFLite output tensor, ONNX node name)
    op_type: str  # the runtime's op type ("conv", "CONV_2D", "Conv")
    kind: str  # canonical kind (KINDS)
    macs: int = 0  # multiply-accumulates (conv, linear, matmul); 0 for memory-bound ops
    w_elems: int = 0  # constant (weight/bias) elements read
    in_elems: int = 0  # activation elements read
    out_elems: int = 0  # elements written
    rank: int = 0  # largest rank among its tensors
    erank: int = 0  # largest number of non-singleton dimensions among its tensors (rank after squeezing)
    max_dim: int = 0  # largest single dimension among its activation tensors
    last_dim: int = 0  # innermost dimension of its (first) output
    fusable: bool = False  # an activation/elementwise op the runtime can fuse into its producer
    module: str = ""  # nn.Module path ("" = unknown)
    inputs: list[str] = field(default_factory=list)  # names of the ops producing its activation inputs

    def row(self, index_of: dict[str, int]) -> list[Any]:
        # producers sorted: the graph formats do not fix the order of an op's named inputs
        extra = {"fusable": int(self.fusable), "src": sorted(index_of[i] for i in self.inputs if i in index_of)}
        return [extra[c] if c in extra else getattr(self, c) for c in COLUMNS]


@dataclass
class FeatureTable:
    """All ops of one exported model (one format, one resolution)."""

    model: str  # builder id, e.g. "timm:repvit_m1_5" or "iformer-m"
    format: str  # "coreml" | "tflite" | "onnx"
    resolution: int
    ops: list[OpFeature]
    backbone: bool = False  # classifier head removed

    @property
    def key(self) -> str:
        return feature_key(self.model, self.format, self.resolution, self.backbone)

    def totals(self) -> dict[str, int]:
        return {
            "ops": len(self.ops),
            "macs": sum(o.macs for o in self.ops),
            "w_elems": sum(o.w_elems for o in self.ops),
            "act_elems": sum(o.in_elems + o.out_elems for o in self.ops),
        }

    def to_compact(self) -> dict[str, Any]:
        """A small JSON-able form (no names/modules): what the committed data file stores."""
        index_of = {o.name: i for i, o in enumerate(self.ops)}
        return {
            "model": self.model,
            "format": self.format,
            "resolution": self.resolution,
            "backbone": self.backbone,
            "rows": [o.row(index_of) for o in self.ops],
        }

    @classmethod
    def from_compact(cls, d: dict[str, Any]) -> FeatureTable:
        ops = []
        for i, r in enumerate(d["rows"]):
            kw = dict(zip(COLUMNS, r, strict=True))
            kw["fusable"] = bool(kw["fusable"])
            kw["inputs"] = [f"op{j}" for j in kw.pop("src")]
            ops.append(OpFeature(name=f"op{i}", **kw))
        return cls(model=d["model"], format=d["format"], resolution=int(d["resolution"]), ops=ops,
                   backbone=bool(d.get("backbone", False)))


def feature_key(model: str, fmt: str, resolution: int, backbone: bool = False) -> str:
    return f"{fmt}|{model}|{resolution}" + ("|backbone" if backbone else "")


def numel(shape: tuple[int, ...] | list[int]) -> int:
    n = 1
    for s in shape:
        n *= max(int(s), 1)
    return n


def shape_stats(shapes: list[tuple[int, ...]], out: tuple[int, ...]) -> dict[str, int]:
    """rank, erank, max_dim and last_dim of an op's activation tensors (``out``: its first output)."""
    return {
        "rank": max((len(s) for s in shapes), default=0),
        "erank": max((sum(1 for d in s if d != 1) for s in shapes), default=0),
        "max_dim": max((max(s) for s in shapes if s), default=0),
        "last_dim": int(out[-1]) if out else 0,
    }


def reshape_kind(x: tuple[int, ...], out: tuple[int, ...]) -> str:
    """``view`` when a reshape keeps the innermost dimension or only adds/drops size-1 axes, else ``relayout``
    (runtimes with tiled/innermost-padded layouts, such as the ANE, must move data then)."""
    if not x or not out:
        return "view"
    if x[-1] == out[-1] or [d for d in x if d != 1] == [d for d in out if d != 1]:
        return "view"
    return "relayout"


def conv_kind(cin: int, cout: int, groups: int, kernel: tuple[int, ...]) -> str:
    """Dense pointwise, dense k×k, depthwise, or grouped convolution."""
    if groups <= 1:
        return "conv_pw" if all(k == 1 for k in kernel) else "conv_kxk"
    if groups == cin and cout % cin == 0:
        return "conv_dw"
    return "conv_group"


def mark_fusable(ops: list[OpFeature], producers: tuple[str, ...] = COMPUTE_KINDS + ("eltwise",),
                 runtime_fuses: Callable[[OpFeature, OpFeature], bool] | None = None) -> None:
    """Flag activations/eltwise-with-constant whose single activation input comes from a compute op
    that has no other consumer: the pattern runtimes fuse (conv+bias+act, linear+act, ...).
    ``runtime_fuses(op, producer)``: a runtime's own narrower rule for the pairs it really fuses."""
    by_name = {o.name: o for o in ops}
    consumers: dict[str, int] = {}
    for o in ops:
        for i in o.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    for o in ops:
        if o.kind not in ELEMENTWISE_KINDS or len(o.inputs) != 1:
            continue
        p = by_name.get(o.inputs[0])
        if p is not None and p.kind in producers and consumers.get(p.name, 0) == 1 and not p.fusable:
            o.fusable = runtime_fuses is None or runtime_fuses(o, p)


def elementwise_kind(op_type: str, binary: Collection[str], unary: Collection[str],
                     unary_complex: Collection[str]) -> str:
    """The canonical kind of an op by a format's elementwise op-type sets (``other`` if in none)."""
    if op_type in binary:
        return "eltwise"
    if op_type in unary:
        return "activation"
    if op_type in unary_complex:
        return "act_complex"
    return "other"
