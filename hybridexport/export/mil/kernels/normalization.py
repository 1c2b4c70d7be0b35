"""Normalization MIL ops (coremltools ``mil/ops/defs/iOS15/normalization.py``), statistics in the compute dtype.

``layer_norm`` normalizes over ``axes`` (all when absent) with the biased variance, ``gamma``/``beta``
shaped like those axes; ``batch_norm``/``instance_norm`` take per-channel (axis 1) parameters;
``l2_norm`` divides by ``sqrt(sum(x²) + eps)`` over the last three axes, batch-wise over the rest;
``local_response_norm`` sums squares over ``size`` neighbouring channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridexport.export.mil.registry import Args, kernel


def _channel(p: torch.Tensor | None, rank: int) -> torch.Tensor | None:
    return None if p is None else p.reshape([1, -1] + [1] * (rank - 2))


@kernel("batch_norm")
def batch_norm(a: Args) -> torch.Tensor:
    x = a["x"]
    r = x.dim()
    y = (x - _channel(a["mean"], r)) / torch.sqrt(_channel(a["variance"], r) + a.attr("epsilon", 1e-5))
    gamma, beta = _channel(a.get("gamma"), r), _channel(a.get("beta"), r)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


@kernel("instance_norm")
def instance_norm(a: Args) -> torch.Tensor:
    x = a["x"]
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + a.attr("epsilon", 1e-5))
    gamma, beta = _channel(a.get("gamma"), x.dim()), _channel(a.get("beta"), x.dim())
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


@kernel("layer_norm")
def layer_norm(a: Args) -> torch.Tensor:
    x = a["x"]
    r = x.dim()
    axes = sorted({i % r for i in (a.ints("axes") or range(r))}) if r else []
    shape = [x.shape[i] if i in axes else 1 for i in range(r)]
    mean = x.mean(dim=axes, keepdim=True)
    centered = x - mean
    y = centered / torch.sqrt((centered * centered).mean(dim=axes, keepdim=True) + a.attr("epsilon", 1e-5))
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@kernel("l2_norm")
def l2_norm(a: Args) -> torch.Tensor:
    x = a["x"]
    dims = tuple(range(max(0, x.dim() - 3), x.dim()))
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + a.attr("epsilon", 1e-6))


@kernel("local_response_norm")
def local_response_norm(a: Args) -> torch.Tensor:
    return F.local_response_norm(a["x"], int(a.attr("size")), alpha=a.attr("alpha", 1e-4),
                                 beta=a.attr("beta", 0.75), k=a.attr("k", 1.0))
