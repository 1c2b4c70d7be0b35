"""``split-heads``: multi-head attention without rank-5 tensors or head permutes.

Projections stay fused (one matmul; the softmax scale folded into the query or key rows); their
output is split on channels into per-head tensors, each head runs its own rank-3 attention, and heads
are concatenated on channels. This is the split form of Apple's ml-ane-transformers
(``reference/multihead_attention.py``: ``q.split(d_head, dim=1)``, einsum per head, concat on
channels) and of Qualcomm's split-head attention: no tensor carries a head axis, so there is no
reshape to (B, N, 3, heads, d) and no permute that moves heads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import hybridexport._tvshim  # noqa: F401  (before anything imports timm/torchvision)

import torch
from torch import nn

from hybridexport.rewrite._graph import set_submodule
from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, register_pass


@torch.no_grad()
def scaled_linear(weight: torch.Tensor, bias: torch.Tensor | None, scale: float = 1.0,
                  rows: int = 0) -> nn.Linear:
    """A Linear with ``weight``/``bias``; the first ``rows`` output rows (all when 0) multiplied by
    ``scale`` (the softmax scale folded into the query projection)."""
    out_features, in_features = weight.shape
    lin = nn.Linear(in_features, out_features, bias=bias is not None, dtype=weight.dtype)
    factor = torch.ones(out_features, dtype=weight.dtype)
    factor[: rows or out_features] = scale
    lin.weight.copy_(weight * factor[:, None])
    if bias is not None:
        lin.bias.copy_(bias * factor)
    return lin


def additive_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """SDPA mask semantics → additive float mask (bool True = may attend)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(~mask, float("-inf"))


def _head_slice(mask: torch.Tensor | None, h: int) -> torch.Tensor | None:
    """The part of a (B, heads|1, L, S) mask that applies to head ``h``; lower-rank masks broadcast."""
    if mask is None or mask.dim() < 4:
        return mask
    return mask[:, h] if mask.shape[1] > 1 else mask[:, 0]


class SplitHeadAttention(nn.Module):
    """timm ``Attention`` (qkv Linear, ``num_heads``) as channel splits + per-head rank-3 attention.

    Same call signature as timm's ``forward(x, attn_mask=None, is_causal=False)``, x: (B, N, C).
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = src.num_heads, src.head_dim, src.scale
        self.fold_scale = isinstance(src.q_norm, nn.Identity)
        attn_dim = src.num_heads * src.head_dim
        self.qkv = scaled_linear(src.qkv.weight, src.qkv.bias, src.scale if self.fold_scale else 1.0, attn_dim)
        self.q_norm, self.k_norm = src.q_norm, src.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = src.attn_drop, src.norm, src.proj, src.proj_drop
        self.gate = getattr(src, "gate", None)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        n, heads = x.shape[-2], self.num_heads
        if is_causal:
            attn_mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        mask = additive_mask(attn_mask, x)
        parts = self.qkv(x).split(self.head_dim, dim=-1)  # q heads, k heads, v heads: (B, N, d) each
        outs = []
        for h in range(heads):
            q, k = self.q_norm(parts[h]), self.k_norm(parts[heads + h])
            if not self.fold_scale:
                q = q * self.scale
            scores = q @ k.transpose(-2, -1)
            m = _head_slice(mask, h)
            if m is not None:
                scores = scores + m
            outs.append(self.attn_drop(scores.softmax(dim=-1)) @ parts[2 * heads + h])
        out = self.norm(torch.cat(outs, dim=-1))
        if self.gate is not None:
            out = out * self.gate(x).sigmoid()
        return self.proj_drop(self.proj(out))


class SplitHeadMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` as channel splits + per-head rank-3 attention, same call signature."""

    def __init__(self, src: nn.MultiheadAttention) -> None:
        super().__init__()
        heads, e = src.num_heads, src.embed_dim
        d = e // heads
        self.num_heads, self.head_dim, self.embed_dim = heads, d, e
        self.batch_first, self.dropout = src.batch_first, src.dropout
        # keeps torch's TransformerEncoderLayer off its fused fast path, which reads MHA internals
        self._qkv_same_embed_dim = False
        self.in_proj_bias = None
        if src._qkv_same_embed_dim:
            wq, wk, wv = src.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = src.q_proj_weight, src.k_proj_weight, src.v_proj_weight
        bq, bk, bv = src.in_proj_bias.chunk(3) if src.in_proj_bias is not None else (None, None, None)
        self.q_proj = scaled_linear(wq, bq, d ** -0.5)
        self.k_proj, self.v_proj = scaled_linear(wk, bk), scaled_linear(wv, bv)
        self.out_proj = src.out_proj

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or unbatched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        b, l_q, s = query.shape[0], query.shape[1], key.shape[1]
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(l_q, s, dtype=torch.bool, device=query.device).triu(1)
        mask = _mha_mask(attn_mask, query)
        if mask is not None and mask.dim() == 3 and mask.shape[0] == b * self.num_heads:
            mask = mask.reshape(b, self.num_heads, l_q, s)
        kpm = _mha_mask(key_padding_mask, query)
        kpm = kpm[:, None, :] if kpm is not None else None
        d = self.head_dim
        qs, ks, vs = self.q_proj(query).split(d, -1), self.k_proj(key).split(d, -1), self.v_proj(value).split(d, -1)
        outs, weights = [], []
        for h in range(self.num_heads):
            scores = qs[h] @ ks[h].transpose(-2, -1)
            m = _head_slice(mask, h)
            if m is not None:
                scores = scores + m
            if kpm is not None:
                scores = scores + kpm
            probs = scores.softmax(dim=-1)
            weights.append(probs)
            if self.training and self.dropout > 0:
                probs = nn.functional.dropout(probs, self.dropout)
            outs.append(probs @ vs[h])
        out = self.out_proj(torch.cat(outs, dim=-1))
        if not self.batch_first or unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        w = sum(weights) / self.num_heads if average_attn_weights else torch.stack(weights, dim=1)
        return out, (w.squeeze(0) if unbatched else w)


def _mha_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``nn.MultiheadAttention`` mask semantics (bool True = masked out) → additive float mask."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))


class SplitHeadMobile2Former(nn.Module):
    """Mobile-Former Mobile→Former (tokens attend to the feature map), heads split on channels.

    Per head h: q_h = q(tokens)[..., h·d:(h+1)·d] (B×T×d, scale folded), kv_h = features[:, h·d:(h+1)·d]
    as B×d×HW; attention softmax(q_h @ kv_h) @ kv_hᵀ → B×T×d; heads concatenated on channels.
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = src.num_heads, src.scale
        self.q = scaled_linear(src.q.weight, src.q.bias, src.scale)
        self.alpha, self.proj, self.layer_norm = src.alpha, src.proj, src.layer_norm

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        d = c // self.num_heads
        tok = tokens.transpose(0, 1)  # B×T×D
        qs = self.q(tok).split(d, dim=-1)
        outs = []
        for i, kv in enumerate(features.split(d, dim=1)):
            kv = kv.reshape(b, d, h * w)  # B×d×HW
            attn = (qs[i] @ kv).softmax(dim=-1)  # B×T×HW
            outs.append(attn @ kv.transpose(1, 2))  # B×T×d
        out = torch.cat(outs, dim=-1) * (self.alpha(tok) * 2.0)
        return self.layer_norm(tokens + self.proj(out).transpose(0, 1))


class SplitHeadFormer(nn.Module):
    """Mobile-Former's Former (token self-attention, keys = values = tokens), heads split on channels."""

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = src.num_heads, src.scale
        self.q = scaled_linear(src.q.weight, src.q.bias, src.scale)
        self.proj, self.layer_norm, self.ffn, self.ffn_norm = src.proj, src.layer_norm, src.ffn, src.ffn_norm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tok = tokens.transpose(0, 1)  # B×T×D
        d = tok.shape[-1] // self.num_heads
        qs = self.q(tok).split(d, dim=-1)
        outs = []
        for i, kv in enumerate(tok.split(d, dim=-1)):  # B×T×d
            attn = (qs[i] @ kv.transpose(1, 2)).softmax(dim=-1)  # B×T×T
            outs.append(attn @ kv)
        tokens = self.layer_norm(tokens + self.proj(torch.cat(outs, dim=-1)).transpose(0, 1))
        return self.ffn_norm(tokens + self.ffn(tokens))


class SplitHeadFormer2Mobile(nn.Module):
    """Mobile-Former Former→Mobile (the feature map attends to the tokens), channel-first per head.

    Per head: scoresᵀ = k_h(tokens) @ features_h (B×T×HW, softmax over T), out_h = v_hᵀ @ scoresᵀ
    (B×d×HW): the feature map is never transposed.
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = src.num_heads, src.scale
        self.k = scaled_linear(src.k.weight, src.k.bias, src.scale)
        self.v = scaled_linear(src.v.weight, src.v.bias)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        d = c // self.num_heads
        tok = tokens.transpose(0, 1)  # B×T×D
        ks = self.k(tok).split(d, dim=-1)
        vts = self.v(tok).transpose(1, 2).split(d, dim=1)  # heads × B×d×T
        outs = []
        for i, q in enumerate(features.split(d, dim=1)):
            q = q.reshape(b, d, h * w)  # B×d×HW
            attn_t = (ks[i] @ q).softmax(dim=1)  # B×T×HW
            outs.append(vts[i] @ attn_t)  # B×d×HW
        return features + torch.cat(outs, dim=1).reshape(b, c, h, w)


class HeadFreeSHMA(nn.Module):
    """iFormer's single-head modulation attention (timm ``SHMA``, no windowing) without the head axis.

    timm's fused path adds a unit head axis and three transposes around SDPA; this is the same math
    on channel-first (B, C, N) tensors: softmax(qᵀk) and v·attnᵀ, whose operand transposes matmul
    lowering absorbs (Core ML ``transpose_x/y``, onnxruntime FusedMatMul).
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = 1, src.scale
        self.q, self.k, self.v_gate, self.proj = src.q, src.k, src.v_gate, src.proj
        self.gate_act, self.attn_drop = src.gate_act, src.attn_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, gate = self.gate_act(self.v_gate(x)).chunk(2, dim=1)
        q = self.q(x).flatten(2) * self.scale
        attn = self.attn_drop((q.transpose(-2, -1) @ self.k(x).flatten(2)).softmax(dim=-1))
        out = (v.flatten(2) @ attn.transpose(-2, -1)).view(b, -1, h, w)
        return self.proj(out * gate)


def _matchers() -> list[tuple[str, Callable[[nn.Module], bool], Callable[[nn.Module], nn.Module]]]:
    """(label, matches, build) for every attention this pass knows, most specific first."""
    found: list[tuple[str, Callable[[nn.Module], bool], Callable[[nn.Module], nn.Module]]] = []
    try:
        from timm.layers import Attention as TimmAttention

        def timm_ok(m: nn.Module) -> bool:
            return type(m) is TimmAttention and all(hasattr(m, a) for a in ("qkv", "num_heads", "head_dim", "proj"))

        found.append(("timm Attention", timm_ok, SplitHeadAttention))
    except ImportError:  # pragma: no cover - timm is a dependency
        pass

    def mha_ok(m: nn.Module) -> bool:
        return type(m) is nn.MultiheadAttention and m.bias_k is None and not m.add_zero_attn

    found.append(("nn.MultiheadAttention", mha_ok, SplitHeadMultiheadAttention))
    try:
        from timm.models.iformer import SHMA

        found.append(("iFormer SHMA", lambda m: type(m) is SHMA and not m.window_size, HeadFreeSHMA))
    except ImportError:  # pragma: no cover - older timm
        pass
    try:
        from hybridexport.zoo import mobileformer_blocks as mf

        for cls, builder in (
            (mf.Mobile2Former, SplitHeadMobile2Former),
            (mf.Former, SplitHeadFormer),
            (mf.Former2Mobile, SplitHeadFormer2Mobile),
        ):
            found.append((f"Mobile-Former {cls.__name__}", lambda m, c=cls: type(m) is c, builder))
    except (ImportError, AttributeError):
        pass
    return found


_NONE = "no multi-head attention module of a known kind"


@register_pass
class SplitHeads(RewritePass):
    """Rewrite multi-head attention into per-head attention concatenated on channels.

    Before (timm ``Attention``)::

        qkv(x) ─ reshape (B, N, 3, H, d) ─ permute (3, B, H, N, d) ─ unbind ─ SDPA ─ transpose ─ reshape ─ proj
    After::

        qkv(x)·s ─ split(d, dim=-1) → q_h, k_h, v_h                 (B, N, d) each
        for h in heads:  softmax(q_h @ k_hᵀ) @ v_h
        cat(heads, dim=-1) ─ proj

    Handles timm ``Attention`` (ViT/MobileViT blocks), ``nn.MultiheadAttention`` (no bias_k/zero_attn),
    Mobile-Former's Mobile→Former, Former and Former→Mobile, and iFormer's single-head SHMA (its fused
    path's unit head axis and transposes removed). Every tensor has rank ≤ 4 (rank 3 for
    token inputs) and no permute touches a head axis; the cost is ``heads``× more, smaller attention matmuls.
    """

    name = "split-heads"
    summary = "per-head attention, concatenated on channels (no rank-5, no head permutes)"

    def precheck(self, model: nn.Module) -> str:
        matchers = _matchers()
        for path, mod in model.named_modules():
            if path and (isinstance(mod, nn.MultiheadAttention) or any(ok(mod) for _, ok, _ in matchers)):
                return ""
        return _NONE

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        matchers = _matchers()
        done: Counter[str] = Counter()
        heads: Counter[int] = Counter()
        skipped: list[str] = []
        for path, mod in list(model.named_modules()):
            if not path:
                continue
            for label, ok, build in matchers:
                if ok(mod):
                    set_submodule(model, path, build(mod))
                    done[label] += 1
                    heads[int(getattr(mod, "num_heads", 1))] += 1
                    break
            else:
                if isinstance(mod, nn.MultiheadAttention):
                    skipped.append(f"{path} (bias_k/bias_v or add_zero_attn not supported)")
        notes = [f"left as is: {s}" for s in skipped]
        if not done:
            notes.insert(0, _NONE)
            return PassOutcome(0, notes=notes)
        changes = []
        split = Counter({k: v for k, v in done.items() if k != "iFormer SHMA"})
        if split:
            head_txt = ", ".join(f"{n}×{h} heads" for h, n in sorted(heads.items()) if h > 1)
            changes.append(count_phrase(split, "split", f"into per-head attention ({head_txt})"))
        if done["iFormer SHMA"]:
            changes.append(f"rewrote {done['iFormer SHMA']} iFormer SHMA (single head) without the head axis")
        return PassOutcome(sum(done.values()), changes, notes)
