"""iFormer-T design variants in the iFormer paper's ablation style, written as a user brings their own model
(``hybridexport bench "benchmarks/ablations/iformer_ablation.py:build(attn='mha')"``).

Built from timm's iFormer-T (the released definition); each keyword changes one design choice:

* ``attn``: ``"shma"`` (released single-head modulation attention), ``"sha"`` (single-head attention: the
  same projections without the sigmoid gate), ``"mha"`` (multi-head attention, ``heads`` heads split by
  reshape/permute, the paper's MHA baseline);
* ``kernel``: the depthwise kernel of every ConvBlock (released: 7; the paper's 3×3 vs 7×7 ablation);
* ``ffn_dw``: a 3×3 depthwise conv inside every FFN (the paper's "FFN with DW conv" row).

These are ablation *designs* for measuring differences on the host (``predictor_accuracy.py`` section 5), not
the paper's exact networks: its ablation baselines are described in prose, with no released definition.
"""

from __future__ import annotations

import torch
from torch import nn


class SingleHead(nn.Module):
    """SHMA's projections and shapes, attention without the modulation gate (``sha``)."""

    def __init__(self, shma: nn.Module) -> None:
        super().__init__()
        self.q, self.k, self.v_gate, self.proj, self.scale = shma.q, shma.k, shma.v_gate, shma.proj, shma.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, _ = self.v_gate(x).chunk(2, dim=1)
        q, k, v = self.q(x).flatten(2) * self.scale, self.k(x).flatten(2), v.flatten(2)
        attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
        return self.proj((v @ attn.transpose(-2, -1)).view(b, -1, h, w))


class MultiHead(nn.Module):
    """The same projections split into ``heads`` heads by reshape and permute (``mha``)."""

    def __init__(self, shma: nn.Module, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v_gate, self.proj = shma.q, shma.k, shma.v_gate, shma.proj
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, _ = self.v_gate(x).chunk(2, dim=1)
        n, nh = h * w, self.heads
        q = self.q(x).reshape(b, nh, -1, n).permute(0, 1, 3, 2)  # (B, heads, N, d)
        k = self.k(x).reshape(b, nh, -1, n)  # (B, heads, d, N)
        v = v.reshape(b, nh, -1, n).permute(0, 1, 3, 2)
        attn = (q @ k * q.shape[-1] ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).permute(0, 1, 3, 2).reshape(b, -1, h, w))


def build(attn: str = "shma", heads: int = 4, kernel: int = 7, ffn_dw: bool = False) -> nn.Module:
    import hybridexport._tvshim  # noqa: F401  (before timm)

    import timm
    from timm.models.iformer import FFN, SHMA, ConvBlock, ConvNorm

    if attn not in ("shma", "sha", "mha") or kernel not in (3, 5, 7) or heads < 1:
        raise ValueError(f"attn {attn!r} (shma, sha, mha), kernel {kernel} (3, 5, 7), heads {heads} (>= 1)")
    model = timm.create_model("iformer_t", pretrained=False)
    for mod in list(model.modules()):
        inner = getattr(getattr(mod, "mixer", None), "module", None)
        if isinstance(inner, SHMA) and attn != "shma":
            mod.mixer.module = SingleHead(inner) if attn == "sha" else MultiHead(inner, heads)
        elif isinstance(mod, ConvBlock) and kernel != 7:
            dw = inner[0]
            dim = dw.c.in_channels
            inner[0] = ConvNorm(dim, dim, kernel, 1, kernel // 2, groups=dim)
        elif isinstance(mod, FFN) and ffn_dw:
            dim = inner[0].c.out_channels
            inner.insert(2, ConvNorm(dim, dim, 3, 1, 1, groups=dim))
    return model.eval()
