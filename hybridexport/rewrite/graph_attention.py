"""``attention-graph``: multi-head attention found by its dataflow, rewritten per head in rank ≤ 4.

``split-heads`` knows attention classes; this pass knows the computation, so it covers the rest
(timm's EdgeNeXt/XCiT cross-covariance attention, CoAtNet/MaxViT ``Attention2d``/``AttentionCl``,
LeViT, CaiT class attention, user code). It runs after ``split-heads`` (whose output is already per
head and is left alone) as a separate pass, so each rewrite is verified and reported on its own.

Rules:

- candidates are the modules that issue a ``softmax`` or ``scaled_dot_product_attention`` themselves
  (seen in one hooked run of the model), then their parent and grandparent, smallest first; a
  candidate called at several input shapes, or whose softmax input is below rank 4 (no head axis:
  already per head, or a classifier's softmax), is left alone;
- each candidate is traced alone (``torch.fx``, see :mod:`._attn_trace`) on the inputs it got; children
  without a softmax stay leaves, so the projections are called by their original module names;
- the core is matched by :mod:`._attn_match` (softmax(q·kᵀ ∘ terms)·v or SDPA, heads created by
  views/permutes of a rank ≤ 4 source, each head a contiguous channel slice);
- the replacement is the traced graph with each matched core replaced (other softmaxes in the module
  stay as they were, with the reason in the notes): per head h, q/k/v channels of the source (one
  ``split`` per source, or ``narrow``), rank-3 matmuls, the same terms sliced to head h, softmax, and a ``cat`` on channels
  into the merged tensor. It is specialised to the captured input shapes (as ``torch.export`` is), and
  checked against the module's captured output before it replaces the module (the pipeline then
  verifies the whole model).
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from hybridexport.rewrite._attn_match import Core, NoMatch, Operand, kind, match_core, tensor_arg
from hybridexport.rewrite._attn_trace import Call, bound_inputs, capture, node_values, trace_module
from hybridexport.rewrite._code_names import module_mentions
from hybridexport.rewrite._graph import set_submodule
from hybridexport.rewrite.base import PassOutcome, RewritePass, register_pass
from hybridexport.rewrite.verify import FP32_REL_TOL, compare_outputs, flatten_outputs

#: how many levels above the softmax-issuing module a candidate may be
MAX_LEVELS_UP = 2
#: what the precheck looks for in the submodules' code (the calls :func:`capture` watches)
ATTENTION_WORDS = frozenset({"softmax", "scaled_dot_product_attention"})


class _Builder:
    """Writes per-head nodes for one core into the graph, before the merged tensor."""

    def __init__(self, gm: fx.GraphModule, core: Core, values: dict[fx.Node, Any]) -> None:
        self.g, self.gm, self.core, self.values = gm.graph, gm, core, values
        self._terms: dict[tuple[fx.Node, int], fx.Node] = {}
        self._flat: dict[tuple[fx.Node, tuple[int, ...]], fx.Node] = {}
        self._splits: dict[fx.Node, dict[tuple[int, int], fx.Node]] = {}

    def fn(self, target: Any, *args: Any, **kwargs: Any) -> fx.Node:
        return self.g.call_function(target, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> fx.Node:
        return self.g.call_method(name, args, kwargs)

    def replay(self, node: fx.Node, swap: dict[fx.Node, Any]) -> fx.Node:
        """``node`` again, with the arguments in ``swap`` replaced."""
        def sub(a: Any) -> Any:
            return swap.get(a, a) if isinstance(a, fx.Node) else a

        args = tuple(sub(a) for a in node.args)
        kwargs = {k: sub(v) for k, v in node.kwargs.items()}
        return self.g.create_node(node.op, node.target, args, kwargs)

    def extract(self, opnd: Operand, h: int, natural: bool = False) -> fx.Node:
        """Head ``h`` of an operand as a rank-3 tensor (B', X, Y), per-head ops replayed; ``natural``:
        as sliced from the source, before the transpose (only for operands without per-head ops)."""
        hs = opnd.heads
        t = self.slice(opnd, hs.offsets[h])
        if natural:
            return t
        if hs.transpose:
            t = self.method("transpose", t, 1, 2)
        for node, axis in opnd.ops:
            if kind(node, self.gm) == "arith":
                t = self.replay(node, {tensor_arg(node, self.values): t})
            elif node.op == "call_module":
                t = self.g.call_module(node.target, (t,))
            else:  # F.normalize(input, p, dim, eps)
                p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 2.0)
                eps = node.kwargs.get("eps", node.args[3] if len(node.args) > 3 else 1e-12)
                t = self.fn(F.normalize, t, p=p, dim=axis, eps=eps)
        return t

    def flat(self, opnd: Operand) -> fx.Node:
        """The operand's source as rank 3, (B', L, C) or (B', C, L): reshaped once, sliced per head."""
        hs, shape = opnd.heads, tuple(self.values[opnd.source].shape)
        b, x, y = hs.shape
        length = x * y // hs.d
        flat = (b, length, shape[-1]) if hs.layout == "last" else (b, shape[1], length)
        if flat == shape:
            return opnd.source
        if (opnd.source, flat) not in self._flat:
            self._flat[(opnd.source, flat)] = self.method("reshape", opnd.source, flat)
        return self._flat[(opnd.source, flat)]

    def slice(self, opnd: Operand, offset: int) -> fx.Node:
        """Channels [offset, offset + d) of the operand's flattened source: a piece of one ``split``
        of that source when the slices all operands take from it do not overlap, a ``narrow`` otherwise."""
        flat, axis, d = self.flat(opnd), 2 if opnd.heads.layout == "last" else 1, opnd.heads.d
        if flat not in self._splits:
            self._splits[flat] = self._split(flat, axis)
        pieces = self._splits[flat]
        if (offset, d) in pieces:
            return pieces[(offset, d)]
        return self.fn(torch.narrow, flat, axis, offset, d)

    def _split(self, flat: fx.Node, axis: int) -> dict[tuple[int, int], fx.Node]:
        wanted = sorted({(off, o.heads.d) for o in (self.core.q, self.core.kt, self.core.v) if self.flat(o) is flat
                         for off in o.heads.offsets})
        total = self._flat_size(flat, axis)
        sizes, starts, pos = [], [], 0
        for off, d in wanted:
            if off < pos:
                return {}
            if off > pos:
                sizes.append(off - pos)
                starts.append(None)
            sizes.append(d)
            starts.append((off, d))
            pos = off + d
        if pos < total:
            sizes.append(total - pos)
            starts.append(None)
        if len(sizes) < 2:
            return {}
        parts = self.fn(torch.split, flat, sizes, axis)
        return {key: self.fn(operator.getitem, parts, i) for i, key in enumerate(starts) if key is not None}

    def _flat_size(self, flat: fx.Node, axis: int) -> int:
        for o in (self.core.q, self.core.kt, self.core.v):
            if self.flat(o) is flat:
                return int(self.values[o.source].shape[-1 if o.heads.layout == "last" else 1])
        raise KeyError(flat)

    def term(self, node: Any, h: int) -> Any:
        """The part of a logits term (bias, mask, temperature) that applies to head ``h``."""
        if not isinstance(node, fx.Node):
            return node
        val = self.values.get(node)
        if not isinstance(val, torch.Tensor) or val.dim() <= 2:
            return node
        heads = self.core.heads
        if val.dim() == 4 and val.shape[1] in (1, heads):
            index: Any = (slice(None), 0 if val.shape[1] == 1 else h)
        elif val.dim() == 3 and val.shape[0] == heads and heads > 1:
            index = h
        elif val.dim() == 3 and val.shape[0] == 1:
            return node
        else:
            raise NoMatch(f"a logits term of shape {tuple(val.shape)} does not broadcast per head")
        if (node, h) not in self._terms:
            self._terms[(node, h)] = self.fn(operator.getitem, node, index)
        return self._terms[(node, h)]

    def head(self, h: int, channel_first: bool = False) -> fx.Node:
        """Head ``h``'s attention output, (B', Lq, d), or (B', d, Lq) as v_hᵀ·pᵀ when ``channel_first``."""
        c = self.core
        q, kt = self.extract(c.q, h), self.extract(c.kt, h)
        v = self.extract(c.v, h, natural=channel_first)
        if c.kind == "sdpa":
            s = self.fn(torch.matmul, self.fn(operator.mul, q, c.scale), kt)
            if c.mask is not None:
                m = self.term(c.mask, h)
                if self.values[c.mask].dtype == torch.bool:
                    s = self.method("masked_fill", s, self.method("logical_not", m), float("-inf"))
                else:
                    s = self.fn(operator.add, s, m)
            p = self.method("softmax", s, dim=-1)
        else:
            s = self.fn(torch.matmul, q, kt)
            for node, on_path in c.logits_ops:
                swap = {on_path: s}
                if kind(node, self.gm) == "arith":
                    for a in node.args:
                        if isinstance(a, fx.Node) and a is not on_path:
                            swap[a] = self.term(a, h)
                s = self.replay(node, swap)
            sm = c.softmax
            if sm.op == "call_module":
                p = self.g.call_module(sm.target, (s,))
            else:
                extra = {"dtype": sm.kwargs["dtype"]} if sm.kwargs.get("dtype") is not None else {}
                p = self.method("softmax", s, dim=-1, **extra)
            for node, on_path in c.probs_ops:
                p = self.replay(node, {on_path: p})
        if channel_first:
            return self.fn(torch.matmul, v, self.method("transpose", p, 1, 2))
        return self.fn(torch.matmul, p, v)

    def build(self) -> None:
        c, mh = self.core, self.core.merge_heads
        with self.g.inserting_before(c.merge):
            # channel-first v and output: v_hᵀ·pᵀ gives the output slice as is (one transpose, not two)
            channel_first = mh.transpose and c.v.heads.transpose and not c.v.ops
            outs = [self.head(h, channel_first) for h in range(c.heads)]
            pieces = []
            for h in sorted(range(c.heads), key=lambda i: mh.offsets[i]):
                piece = outs[h]
                pieces.append(self.method("transpose", piece, 1, 2) if mh.transpose and not channel_first else piece)
            merged = self.fn(torch.cat, pieces, dim=-1 if mh.layout == "last" else 1)
            shape = tuple(self.values[c.merge].shape)
            b, x, y = mh.shape
            cat_shape = (b, x * y // mh.d, mh.d * c.heads) if mh.layout == "last" else (b, mh.d * c.heads, x * y // mh.d)
            if cat_shape != shape:
                merged = self.method("reshape", merged, shape)
        c.merge.replace_all_uses_with(merged)


class PerHeadModule(nn.Module):
    """Base class of the replacements: a plain module running the rewritten graph's code, so that
    exporters scope its ops under its own path (they do not for a ``torch.fx.GraphModule``).

    Each replacement gets its own subclass, ``PerHead<original class>``, whose ``forward`` is the
    generated code; children, parameters and buffers are the original module's, under their names.
    """

    source_class = ""


def as_module(gm: fx.GraphModule, src: nn.Module) -> PerHeadModule:
    """``gm``'s code as a :class:`PerHeadModule` holding ``src``'s children, parameters and buffers."""
    name = f"PerHead{type(src).__name__}"
    cls = type(name, (PerHeadModule,), {"forward": type(gm).forward, "source_class": type(src).__name__,
                                           "__module__": __name__, "__qualname__": name})
    new = cls()
    for child_name, child in src.named_children():
        new.add_module(child_name, child)
    for child_name, child in gm.named_children():  # stateless modules a tracer inserted
        if child_name not in new._modules:
            new.add_module(child_name, child)
    for p_name, p in src.named_parameters(recurse=False):
        new.register_parameter(p_name, p)
    for b_name, buf in src.named_buffers(recurse=False):
        new.register_buffer(b_name, buf, persistent=b_name not in src._non_persistent_buffers_set)
    for node in gm.graph.nodes:  # constants the tracer lifted (e.g. a cached bias)
        if node.op == "get_attr" and "." not in node.target and not hasattr(new, node.target):
            new.register_buffer(node.target, getattr(gm, node.target), persistent=False)
    return new


def _rank5(values: dict[fx.Node, Any]) -> int:
    return sum(1 for v in values.values() if isinstance(v, torch.Tensor) and v.dim() >= 5)


def rewrite_module(module: nn.Module, call: Call, keep_open: set[str]
                   ) -> tuple[PerHeadModule, list[Core], str, list[str]]:
    """Trace ``module``, match every attention core in it, and build the per-head replacement.

    Returns (replacement, cores, summary, why each other softmax in it was left as is); raises
    :class:`NoMatch` (or the tracer's error) when nothing in it matches.
    """
    inputs = bound_inputs(module, call)
    if inputs is None:
        raise NoMatch("forward takes *args/**kwargs")
    gm, traced, tracer = trace_module(module, call, keep_open)
    values, _ = node_values(gm, inputs)
    sites = [n for n in gm.graph.nodes if kind(n, gm) in ("softmax", "sdpa")]
    cores, reasons = [], []
    for n in sites:
        try:
            cores.append(match_core(n, gm, values))
        except NoMatch as exc:
            reasons.append(str(exc))
    if not cores:
        raise NoMatch(reasons[0] if reasons else "no softmax in the traced graph")
    for core in cores:
        _Builder(gm, core, values).build()
    gm.graph.eliminate_dead_code()
    live = set(gm.graph.nodes)
    if any(n in live for core in cores for n in core.nodes[:1]):
        raise NoMatch("the original attention is still used after the rewrite")
    gm.graph.lint()
    gm.recompile()
    new_values, _ = node_values(gm, inputs)
    new = as_module(gm, traced)
    with torch.no_grad():
        out = new(**inputs)
    verdict = compare_outputs([flatten_outputs(call.output)], [flatten_outputs(out)], FP32_REL_TOL)
    if not verdict.ok:
        raise NoMatch(f"per-head rewrite does not reproduce the module ({verdict.reason})")
    summary = f"{tracer}, rank-5 tensors {_rank5(values)} → {_rank5(new_values)}"
    return new, cores, summary, reasons


def _ancestors(path: str, levels: int) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, max(len(parts) - 1 - levels, 0), -1)]


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


@register_pass
class AttentionGraph(RewritePass):
    """Rewrite multi-head attention recognised in the traced graph into per-head rank-3 attention.

    Before (any spelling: matmuls, einsum, SDPA; channel-last or channel-first)::

        proj(x) ─ view/reshape (…, heads, d) ─ permute/transpose/unbind/chunk ─ q, k, v (B, H, L, d)
        softmax(q @ kᵀ · s + bias) @ v ─ transpose/permute ─ reshape (B, L, C)
    After::

        for h in heads:  q_h, k_h, v_h = proj(x).narrow(channels, offset_h, d)      rank ≤ 3
                         softmax(q_h @ k_hᵀ · s + bias[h]) @ v_h
        cat(heads, channels) ─ reshape (B, L, C)

    The module keeps its path, children (projections called by name), parameters and buffers; its class
    becomes ``PerHead<original class>`` (a :class:`PerHeadModule`).
    """

    name = "attention-graph"
    summary = "attention found by dataflow (any module): per-head, rank ≤ 4, no head permutes"

    def precheck(self, model: nn.Module) -> str:
        if any(module_mentions(child, ATTENTION_WORDS) for _, child in model.named_children()):
            return ""
        return "no submodule's code calls softmax or scaled_dot_product_attention"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        cap = capture(model, example, MAX_LEVELS_UP)
        done: list[str] = []
        left: dict[str, list[str]] = defaultdict(list)
        heads: Counter[int] = Counter()
        kinds: Counter[str] = Counter()
        changes: list[str] = []
        matched = 0
        for owner in sorted(cap.owners, key=lambda p: (-p.count("."), p)):
            if any(_inside(owner, d) for d in done):
                continue
            if not owner:
                left["the model itself issues the softmax (only submodules are replaced)"].append("<root>")
                continue
            if all(r < 4 for r in cap.owners[owner]):
                left["no head axis: softmax/SDPA input of rank < 4, already per head or not attention"].append(owner)
                continue
            reason = ""
            for path in [owner, *_ancestors(owner, MAX_LEVELS_UP)]:
                call = cap.calls.get(path)
                if call is None:
                    continue
                if call.other_shapes:
                    reason = reason or "called at several input shapes"
                    continue
                mod = model.get_submodule(path)
                keep_open = {o[len(path) + 1:] for o in cap.owners if o.startswith(path + ".")}
                keep_open |= {p.rsplit(".", i)[0] for p in set(keep_open) for i in range(1, p.count(".") + 1)}
                try:
                    new, cores, summary, others = rewrite_module(mod, call, keep_open)
                except NoMatch as exc:
                    reason = reason or str(exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - an untraceable module is left alone, with the reason
                    reason = reason or f"not traceable ({str(exc)[:160]})"
                    continue
                set_submodule(model, path, new)
                done.append(path)
                matched += len(cores)
                for core in cores:
                    heads[core.heads] += 1
                    kinds[core.kind] += 1
                changes.append(f"{path} ({type(mod).__name__}): {len(cores)} attention, {summary}")
                for why in others:
                    left[why].append(f"{path} (another softmax in it)")
                break
            else:
                left[reason or "no candidate module"].append(owner)
        notes = [f"left as is ({why}): {', '.join(paths[:8])}{f' … +{len(paths) - 8}' if len(paths) > 8 else ''}"
                 for why, paths in left.items()]
        if not matched:
            notes.insert(0, "no multi-head attention in any module's graph")
            return PassOutcome(0, notes=notes)
        head_txt = ", ".join(f"{n}×{h} heads" for h, n in sorted(heads.items()))
        kind_txt = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        summary = [f"split {matched} attention ({kind_txt}; {head_txt}) into per-head rank-3 attention "
                   f"in {len(done)} modules"]
        if len(changes) > 6:
            changes = [*changes[:6], f"… and {len(changes) - 6} more modules"]
        return PassOutcome(matched, summary + changes, notes)
