"""Canonical op kinds: the vocabulary the formats' op tables and the latency model share.

Each format maps its runtime op types onto these kinds while building an op table; the cost model
groups kinds into efficiency classes. The helpers below are the rules every format applies the same
way (what is a depthwise conv, when a reshape moves data, which elementwise ops a runtime fuses into
their producer, which module an op made by a converter pass belongs to).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridexport.optable import OpRow

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


def mark_fusable(ops: list[OpRow], producers: tuple[str, ...] = COMPUTE_KINDS + ("eltwise",),
                 runtime_fuses: Callable[[OpRow, OpRow], bool] | None = None) -> None:
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


def inherit_modules(ops: list[OpRow]) -> None:
    """Ops without a module (made by a converter pass) take the module of the op feeding them, else of
    the op they feed; ``module_source`` says ``inherited``."""
    by_name = {o.name: o for o in ops}
    consumers: dict[str, list[OpRow]] = {}
    for o in ops:
        for i in o.inputs:
            consumers.setdefault(i, []).append(o)
    for _ in range(4):
        missing = [o for o in ops if not o.module]
        if not missing:
            return
        for o in missing:
            near = [by_name[i].module for i in o.inputs if i in by_name and by_name[i].module]
            near += [c.module for c in consumers.get(o.name, []) if c.module]
            if near:
                o.module, o.module_source = near[0], "inherited"
