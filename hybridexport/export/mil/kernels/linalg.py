"""``linear``, ``matmul`` (numpy broadcasting and 1-D rules, optional transposes of the last two axes),
``einsum`` and iOS18 ``scaled_dot_product_attention``; products accumulate in the compute dtype (fp32)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hybridexport.export.mil.registry import Args, kernel


@kernel("linear")
def linear(a: Args) -> torch.Tensor:
    """``x @ weight.T + bias`` with ``weight`` [D_out, D_in]."""
    return F.linear(a["x"], a["weight"], a.get("bias"))


@kernel("matmul")
def matmul(a: Args) -> torch.Tensor:
    x, y = a["x"], a["y"]
    if a.attr("transpose_x", False) and x.dim() >= 2:
        x = x.transpose(-1, -2)
    if a.attr("transpose_y", False) and y.dim() >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@kernel("einsum")
def einsum(a: Args) -> torch.Tensor:
    return torch.einsum(str(a.attr("equation")), *a.values("values"))


@kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(a: Args) -> torch.Tensor:
    """``softmax(Q Kᵀ / sqrt(E) + mask) V``; a boolean mask keeps True positions (iOS18 definition)."""
    q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)
