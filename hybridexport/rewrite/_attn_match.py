"""Multi-head attention recognised in a traced (torch.fx) graph by its dataflow.

An attention core is ``softmax(q·kᵀ ∘ terms) · v`` (or ``F.scaled_dot_product_attention(q, k, v)``)
whose operands are rank-4 with the head on axis 1 (matmul), or whose einsum letters say so. For each of
q, kᵀ and v the matcher walks back through rearrangements (view/reshape/permute/transpose/unbind/
chunk/split/getitem/…), scalar scalings and per-head normalisations to a *source* tensor of rank ≤ 4
without a head axis; on the output side it walks forward through rearrangements to the first tensor
without one (the *merge*). Where a head lives in the source or merge is not derived from the op
arguments but measured: the rearrangement chain is replayed on an index tensor (``arange``), and
head h must be one contiguous slice of ``d`` channels, on the last axis (channel-last) or axis 1
(channel-first). Anything else — a softmax over channels with no head split, heads interleaved across
channels, an op between q·kᵀ and the softmax that is not an elementwise term — is no match, with the
reason.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

_VIEW_METHODS = {"view", "reshape", "permute", "transpose", "contiguous", "flatten", "unflatten", "unbind",
                 "chunk", "split", "squeeze", "unsqueeze", "narrow", "swapaxes", "movedim", "view_as",
                 "reshape_as", "split_with_sizes", "tensor_split"}
_VIEW_FUNCS = {torch.reshape, torch.permute, torch.transpose, torch.flatten, torch.unflatten, torch.unbind,
               torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, torch.narrow, torch.swapaxes,
               torch.movedim, torch.tensor_split}
_MATMUL = {torch.matmul, operator.matmul, torch.bmm}
_ARITH = {operator.mul: "mul", operator.truediv: "div", operator.add: "add", operator.sub: "sub",
          torch.mul: "mul", torch.div: "div", torch.add: "add", torch.sub: "sub"}
_ARITH_METHODS = {"mul": "mul", "div": "div", "add": "add", "sub": "sub", "__mul__": "mul",
                  "__truediv__": "div", "__add__": "add", "__sub__": "sub"}
_IDENTITY_MODULES = (nn.Dropout, nn.Identity)


class NoMatch(Exception):
    """Why a softmax in the graph is not a multi-head attention this rewrite handles."""


def kind(node: fx.Node, gm: fx.GraphModule) -> str:
    """A small vocabulary: view, getitem, matmul, einsum, softmax, sdpa, arith, norm, identity, other."""
    op, t = node.op, node.target
    if op == "call_module":
        m = gm.get_submodule(t)
        if isinstance(m, _IDENTITY_MODULES):
            return "identity"
        if isinstance(m, nn.Softmax):
            return "softmax"
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            return "norm"
        return "other"
    if op == "call_method":
        if t in _VIEW_METHODS:
            return "view"
        if t in ("matmul", "bmm", "__matmul__"):
            return "matmul"
        if t == "softmax":
            return "softmax"
        if t in _ARITH_METHODS:
            return "arith"
        return "other"
    if op == "call_function":
        if t is operator.getitem:
            return "getitem"
        if t in _VIEW_FUNCS:
            return "view"
        if t in _MATMUL:
            return "matmul"
        if t is torch.einsum:
            return "einsum"
        if t in (F.softmax, torch.softmax):
            return "softmax"
        if t is F.scaled_dot_product_attention:
            return "sdpa"
        if t in _ARITH:
            return "arith"
        if t is F.normalize:
            return "norm"
        if t is F.dropout:
            return "identity"
    return "other"


def arith_name(node: fx.Node) -> str:
    return _ARITH_METHODS[node.target] if node.op == "call_method" else _ARITH[node.target]


@dataclass(frozen=True)
class HeadSlice:
    """Where head h of a rank-3 per-head tensor (B', X, Y) lives in a rank ≤ 4 tensor without heads.

    ``layout`` "last": ``t.narrow(-1, off, d).reshape(B', L, d)``; "first" (axis 1, same batch):
    ``t.narrow(1, off, d).reshape(B', d, L)``; then transposed when ``transpose``.
    """

    axis: int
    offsets: tuple[int, ...]
    d: int
    layout: str
    transpose: bool
    shape: tuple[int, int, int]


@dataclass
class Operand:
    """One of q, kᵀ, v: its source node, the head slices, and per-head ops replayed after slicing."""

    source: fx.Node
    heads: HeadSlice
    #: (node, per-head axis or None) in forward order: scalar arith, normalize/LayerNorm
    ops: list[tuple[fx.Node, int | None]] = field(default_factory=list)


@dataclass
class Core:
    """One matched attention: operands, the logits path, the softmax, and the merge."""

    kind: str  # "matmul" | "einsum" | "sdpa"
    heads: int
    q: Operand
    kt: Operand
    v: Operand
    #: nodes from q·kᵀ to the softmax (elementwise terms / identities), in order, and their on-path arg
    logits_ops: list[tuple[fx.Node, fx.Node]]
    softmax: fx.Node | None
    probs_ops: list[tuple[fx.Node, fx.Node]]
    merge: fx.Node
    merge_heads: HeadSlice
    scale: float | None = None
    mask: fx.Node | None = None
    nodes: list[fx.Node] = field(default_factory=list)


def _value(values: dict[fx.Node, Any], a: Any) -> Any:
    return values[a] if isinstance(a, fx.Node) else a


def _eval(node: fx.Node, on_path: fx.Node, x: Any, values: dict[fx.Node, Any]) -> Any:
    """``node`` evaluated with its ``on_path`` input replaced by ``x`` (other inputs: recorded values)."""
    def sub(a: Any) -> Any:
        if a is on_path:
            return x
        return fx.node.map_aggregate(a, lambda b: _value(values, b) if isinstance(b, fx.Node) else b)

    args = tuple(sub(a) for a in node.args)
    kwargs = {k: sub(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def tensor_arg(node: fx.Node, values: dict[fx.Node, Any]) -> fx.Node | None:
    """The first argument of an elementwise op that is a tensor of more than one element."""
    nodes = [a for a in node.args if isinstance(a, fx.Node) and isinstance(values.get(a), torch.Tensor)
             and values[a].numel() > 1]
    return nodes[0] if nodes else None


def _is_scalar(a: Any, values: dict[fx.Node, Any]) -> bool:
    v = _value(values, a)
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def _walk_back(start: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> list[fx.Node]:
    """``start`` and the nodes it is computed from through views/getitem/scalar arith/norms/identities."""
    path = [start]
    node = start
    while True:
        k = kind(node, gm)
        if k in ("view", "getitem", "identity", "norm"):
            nxt = node.args[0] if node.args else None
        elif k == "arith" and arith_name(node) in ("mul", "div"):
            others = [a for a in node.args if a is not tensor_arg(node, values)]
            if not all(_is_scalar(a, values) for a in others) or not isinstance(values.get(node), torch.Tensor):
                break
            nxt = tensor_arg(node, values)
        else:
            break
        if not isinstance(nxt, fx.Node):
            break
        path.append(nxt)
        node = nxt
    return path


def _locate(src_idx: torch.Tensor, value: float) -> tuple[int, ...] | None:
    hits = (src_idx == value).nonzero()
    return tuple(int(c) for c in hits[0]) if len(hits) == 1 else None


def head_slice(src_idx: torch.Tensor, per_head: list[torch.Tensor]) -> HeadSlice | None:
    """The :class:`HeadSlice` under which every ``per_head[h]`` (B', X, Y) is a channel slice of ``src_idx``.

    Both hold index values (positions in one tensor), so equality is an exact proof of the layout.
    """
    r = src_idx.dim()
    if r < 2 or r > 4:
        return None
    b, x, y = per_head[0].shape
    for axis, layout in ((r - 1, "last"), (1, "first")):
        if layout == "first" and (r == 2 or src_idx.shape[0] != b):
            continue
        for d, transpose in ((y, False), (x, True)) if layout == "last" else ((x, False), (y, True)):
            offsets = []
            for t in per_head:
                pos = _locate(src_idx, float(t.flatten()[0]))
                if pos is None:
                    break
                off = pos[axis]
                if off + d > src_idx.shape[axis]:
                    break
                e = src_idx.narrow(axis, off, d)
                natural = (b, e.numel() // (b * d), d) if layout == "last" else (b, d, e.numel() // (b * d))
                if e.numel() != t.numel():
                    break
                e = e.reshape(natural)
                if transpose:
                    e = e.transpose(1, 2)
                if e.shape != t.shape or not torch.equal(e, t):
                    break
                offsets.append(off)
            else:
                return HeadSlice(axis, tuple(offsets), d, layout, transpose, (b, x, y))
    return None


def _index(shape: torch.Size) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)


def _norm_axis(node: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> int:
    """The axis a per-head normalisation reduces over (LayerNorm: last; F.normalize: its ``dim``)."""
    rank = values[node].dim()
    if node.op == "call_module":
        return rank - 1
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    return dim % rank


def operand(start: fx.Node, perm: tuple[int, ...], gm: fx.GraphModule,
            values: dict[fx.Node, Any], role: str) -> Operand:
    """Source and head slices of one attention operand (``perm`` puts its axes in (B, H, X, Y) order)."""
    path = _walk_back(start, gm, values)
    if values[start].dim() != 4:
        raise NoMatch(f"{role} is rank {values[start].dim()}, not (B, heads, L, d)")
    for i in range(1, len(path)):
        src = path[i]
        sval = values.get(src)
        if not isinstance(sval, torch.Tensor) or sval.dim() > 4:
            continue
        chain = list(reversed(path[:i]))
        idx: dict[fx.Node, Any] = {src: _index(sval.shape)}
        try:
            prev = src
            for n in chain:
                k = kind(n, gm)
                idx[n] = idx[prev] if k in ("identity", "norm", "arith") else _eval(n, prev, idx[prev], values)
                prev = n
        except Exception:  # noqa: BLE001 - a chain that does not replay on indices is no source
            continue
        final = idx[start]
        if not isinstance(final, torch.Tensor) or final.shape != values[start].shape:
            continue
        canon = final.permute(perm)
        per_head = [canon[:, h] for h in range(canon.shape[1])]
        hs = head_slice(idx[src], per_head)
        if hs is None:
            continue
        ops: list[tuple[fx.Node, int | None]] = []
        prev = src
        for n in chain:
            k = kind(n, gm)
            if k == "arith":
                ops.append((n, None))
            elif k == "norm":
                ax = _per_head_axis(idx[prev], canon, _norm_axis(n, gm, values))
                if ax is None or (n.op == "call_module" and ax != 2):
                    break
                ops.append((n, ax))
            prev = n
        else:
            return Operand(src, hs, ops)
    raise NoMatch(f"{role} has no head split from a rank ≤ 4 tensor (heads as contiguous channel slices)")


def _per_head_axis(before: torch.Tensor, canon: torch.Tensor, axis: int) -> int | None:
    """Which axis (1 or 2) of the per-head tensor ``axis`` of ``before`` becomes, by index lookup."""
    start = [0] * before.dim()
    step = list(start)
    if before.shape[axis] < 2:
        return None
    step[axis] = 1
    p0, p1 = _locate(canon, float(before[tuple(start)])), _locate(canon, float(before[tuple(step)]))
    if p0 is None or p1 is None:
        return None
    diff = [b - a for a, b in zip(p0, p1, strict=True)]
    for j in (2, 3):
        if diff[j] == 1 and sum(abs(c) for c in diff) == 1 and canon.shape[j] == before.shape[axis]:
            return j - 1
    return None


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def merge(out: fx.Node, perm: tuple[int, ...], gm: fx.GraphModule, values: dict[fx.Node, Any]
          ) -> tuple[fx.Node, HeadSlice, list[fx.Node]]:
    """The first tensor after the attention output without a head axis, and where each head sits in it."""
    oval = values[out]
    canon = _index(oval.shape).permute(perm)
    per_head = [canon[:, h] for h in range(canon.shape[1])]
    cur, cur_idx, chain = out, _index(oval.shape), []
    while True:
        nxt = _single_user(cur)
        if nxt is None or kind(nxt, gm) not in ("view", "identity") or nxt.args[0] is not cur:
            break
        try:
            cur_idx = cur_idx if kind(nxt, gm) == "identity" else _eval(nxt, cur, cur_idx, values)
        except Exception:  # noqa: BLE001
            break
        cur = nxt
        chain.append(cur)
        if isinstance(cur_idx, torch.Tensor) and cur_idx.dim() <= 4:
            hs = head_slice(cur_idx, per_head)
            if hs is not None and sorted(hs.offsets) == [h * hs.d for h in range(len(per_head))] \
                    and hs.d * len(per_head) == cur_idx.shape[hs.axis]:
                return cur, hs, chain
    raise NoMatch("heads are not merged back into contiguous channels of a rank ≤ 4 tensor")


def _einsum_letters(eq: str) -> tuple[list[str], str] | None:
    eq = eq.replace(" ", "")
    if "..." in eq or "->" not in eq:
        return None
    ins, out = eq.split("->")
    parts = ins.split(",")
    if len(parts) != 2 or not all(re.fullmatch(r"[a-zA-Z]+", p) for p in (*parts, out)):
        return None
    return parts, out


def _logits_path(start: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]
                 ) -> tuple[list[tuple[fx.Node, fx.Node]], fx.Node]:
    """Elementwise ops from q·kᵀ to the softmax (each the only user of the last), and the softmax."""
    ops, cur = [], start
    while True:
        nxt = _single_user(cur)
        if nxt is None:
            raise NoMatch("q·kᵀ is used more than once")
        k = kind(nxt, gm)
        if k == "softmax":
            return ops, nxt
        if k == "identity" or (k == "arith" and sum(a is cur for a in nxt.args) == 1):
            ops.append((nxt, cur))
            cur = nxt
            continue
        raise NoMatch(f"q·kᵀ feeds '{nxt.target}' before any softmax")


def _softmax_dim(node: fx.Node, gm: fx.GraphModule) -> Any:
    if node.op == "call_module":
        return gm.get_submodule(node.target).dim
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)


def match_core(sm: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> Core:
    """The attention core around softmax/SDPA node ``sm``; :class:`NoMatch` says why not."""
    if kind(sm, gm) == "sdpa":
        return _match_sdpa(sm, gm, values)
    logits_in = sm.args[0]
    lval = values.get(logits_in)
    if not isinstance(lval, torch.Tensor) or lval.dim() != 4:
        rank = lval.dim() if isinstance(lval, torch.Tensor) else "?"
        raise NoMatch(f"softmax over a rank-{rank} tensor (no head axis)")
    dim = _softmax_dim(sm, gm)
    if not isinstance(dim, int) or dim % 4 != 3:
        raise NoMatch(f"softmax over dim {dim}, not the keys' (last) axis")
    # walk back from the softmax to the q·kᵀ product
    cur = logits_in
    while kind(cur, gm) in ("arith", "identity"):
        nodes = [a for a in cur.args if isinstance(a, fx.Node)]
        cand = [a for a in nodes if isinstance(values.get(a), torch.Tensor) and values[a].shape == lval.shape
                and kind(a, gm) in ("matmul", "einsum", "arith", "identity")]
        if not cand:
            break
        cur = cand[0]
    if kind(cur, gm) not in ("matmul", "einsum"):
        raise NoMatch("softmax input is not a matmul/einsum (plus elementwise terms)")
    m1 = cur
    if kind(m1, gm) == "matmul":
        a, b = m1.args[0], m1.args[1]
        q_perm, k_perm = (0, 1, 2, 3), (0, 1, 2, 3)
    else:
        letters = _einsum_letters(m1.args[0])
        if letters is None:
            raise NoMatch(f"einsum '{m1.args[0]}' not understood")
        (lq, lk), lo = letters
        a, b = m1.args[1], m1.args[2]
        if len(lo) != 4 or len(lq) != 4 or len(lk) != 4:
            raise NoMatch("einsum logits are not rank 4")
        bb, hh, nn_, mm = lo
        c = [ch for ch in lq if ch in lk and ch not in lo]
        if len(c) != 1 or not {bb, hh, nn_} <= set(lq) or not {bb, hh, mm} <= set(lk):
            raise NoMatch(f"einsum '{m1.args[0]}' is not q·kᵀ per (batch, head)")
        q_perm = tuple(lq.index(ch) for ch in (bb, hh, nn_, c[0]))
        k_perm = tuple(lk.index(ch) for ch in (bb, hh, c[0], mm))
    logits_ops, sm2 = _logits_path(m1, gm, values)
    if sm2 is not sm:
        raise NoMatch("q·kᵀ reaches another softmax")
    probs_ops, cur = [], sm
    while True:
        nxt = _single_user(cur)
        if nxt is None:
            raise NoMatch("attention weights are used more than once (e.g. returned)")
        if kind(nxt, gm) == "identity":
            probs_ops.append((nxt, cur))
            cur = nxt
            continue
        break
    m2 = nxt
    if kind(m2, gm) == "matmul":
        if m2.args[0] is not cur:
            raise NoMatch("attention weights are the right operand (v·attnᵀ form)")
        v_node, v_perm, o_perm = m2.args[1], (0, 1, 2, 3), (0, 1, 2, 3)
    elif kind(m2, gm) == "einsum":
        letters = _einsum_letters(m2.args[0])
        if letters is None:
            raise NoMatch(f"einsum '{m2.args[0]}' not understood")
        (l0, l1), lo = letters
        pi = 0 if m2.args[1] is cur else 1
        lp, lv = (l0, l1) if pi == 0 else (l1, l0)
        v_node = m2.args[2 - pi]
        if len(lp) != 4 or len(lv) != 4 or len(lo) != 4:
            raise NoMatch("einsum with the weights is not rank 4")
        bb, hh, nn_, mm = lp
        e = [ch for ch in lv if ch not in lp]
        if len(e) != 1 or mm in lo or set(lo) != {bb, hh, nn_, e[0]} or not {bb, hh, mm} <= set(lv):
            raise NoMatch(f"einsum '{m2.args[0]}' is not attn·v per (batch, head)")
        v_perm = tuple(lv.index(ch) for ch in (bb, hh, mm, e[0]))
        o_perm = tuple(lo.index(ch) for ch in (bb, hh, nn_, e[0]))
    else:
        raise NoMatch("attention weights do not feed a matmul with v")
    q = operand(a, q_perm, gm, values, "q")
    kt = operand(b, k_perm, gm, values, "k")
    v = operand(v_node, v_perm, gm, values, "v")
    heads = values[a].permute(q_perm).shape[1]
    for op_, role in ((kt, "k"), (v, "v")):
        if len(op_.heads.offsets) != heads:
            raise NoMatch(f"{role} has {len(op_.heads.offsets)} heads, q has {heads}")
    out, mh, chain = merge(m2, o_perm, gm, values)
    core = Core(kind(m1, gm), heads, q, kt, v, logits_ops, sm, probs_ops, out, mh)
    core.nodes = [m1, *[n for n, _ in logits_ops], sm, *[n for n, _ in probs_ops], m2, *chain]
    return core


def _sdpa_arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _match_sdpa(node: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> Core:
    qn, kn, vn = (_sdpa_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
    mask = _sdpa_arg(node, 3, "attn_mask")
    dropout, causal = _sdpa_arg(node, 4, "dropout_p", 0.0), _sdpa_arg(node, 5, "is_causal", False)
    scale = node.kwargs.get("scale", node.args[6] if len(node.args) > 6 else None)
    if node.kwargs.get("enable_gqa", False):
        raise NoMatch("SDPA with grouped-query heads")
    if _value(values, causal) or float(_value(values, dropout) or 0.0) != 0.0:
        raise NoMatch("SDPA with is_causal or dropout")
    if isinstance(scale, fx.Node):
        raise NoMatch("SDPA scale computed in the graph")
    qv = values.get(qn)
    if not isinstance(qv, torch.Tensor) or qv.dim() != 4:
        raise NoMatch("SDPA without a head axis (rank-3 query)")
    q = operand(qn, (0, 1, 2, 3), gm, values, "q")
    kt = operand(kn, (0, 1, 3, 2), gm, values, "k")
    v = operand(vn, (0, 1, 2, 3), gm, values, "v")
    heads = qv.shape[1]
    for op_, role in ((kt, "k"), (v, "v")):
        if len(op_.heads.offsets) != heads:
            raise NoMatch(f"{role} has {len(op_.heads.offsets)} heads, q has {heads}")
    out, mh, chain = merge(node, (0, 1, 2, 3), gm, values)
    scale = float(scale) if scale is not None else qv.shape[-1] ** -0.5
    core = Core("sdpa", heads, q, kt, v, [], None, [], out, mh, scale=scale,
                mask=mask if isinstance(mask, fx.Node) else None)
    core.nodes = [node, *chain]
    return core
