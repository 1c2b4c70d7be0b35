"""Activation MIL ops, as coremltools ``mil/ops/defs/iOS15/activation.py`` defines them.

``prelu``/``softplus_parametric`` take per-channel parameters on axis 1; ``thresholded_relu`` keeps
``x >= alpha`` (its value inference); ``sigmoid_hard`` is ``min(max(alpha·x + beta, 0), 1)``;
``gelu`` has modes EXACT (erf), TANH_APPROXIMATION and SIGMOID_APPROXIMATION (``x·σ(1.702x)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridexport.export.mil.registry import Args, kernel


def _per_channel(p: torch.Tensor, rank: int) -> torch.Tensor:
    """A [C] parameter broadcast on axis 1 of a rank-``rank`` tensor."""
    return p.reshape([1, -1] + [1] * (rank - 2)) if p.dim() == 1 and rank >= 2 else p


@kernel("relu")
def relu(a: Args) -> torch.Tensor:
    return torch.relu(a["x"])


@kernel("relu6")
def relu6(a: Args) -> torch.Tensor:
    return torch.clamp(a["x"], 0.0, 6.0)


@kernel("sigmoid")
def sigmoid(a: Args) -> torch.Tensor:
    return torch.sigmoid(a["x"])


@kernel("silu")
def silu(a: Args) -> torch.Tensor:
    return F.silu(a["x"])


@kernel("softplus")
def softplus(a: Args) -> torch.Tensor:
    return F.softplus(a["x"])


@kernel("softsign")
def softsign(a: Args) -> torch.Tensor:
    return F.softsign(a["x"])


@kernel("sigmoid_hard")
def sigmoid_hard(a: Args) -> torch.Tensor:
    return torch.clamp(a["x"] * a["alpha"] + a["beta"], 0.0, 1.0)


@kernel("leaky_relu")
def leaky_relu(a: Args) -> torch.Tensor:
    x = a["x"]
    return torch.where(x < 0, x * a["alpha"], x)


@kernel("elu")
def elu(a: Args) -> torch.Tensor:
    x = a["x"]
    return torch.where(x < 0, a["alpha"] * torch.expm1(x), x)


@kernel("prelu")
def prelu(a: Args) -> torch.Tensor:
    x = a["x"]
    alpha = _per_channel(a["alpha"], x.dim())
    return torch.clamp_min(x, 0) + torch.clamp_max(x, 0) * alpha


@kernel("thresholded_relu")
def thresholded_relu(a: Args) -> torch.Tensor:
    x = a["x"]
    return torch.where(x < a["alpha"], torch.zeros_like(x), x)


@kernel("clamped_relu")
def clamped_relu(a: Args) -> torch.Tensor:
    x, alpha, beta = a["x"], a["alpha"], a["beta"]
    return torch.minimum(torch.clamp_min(x, 0), beta) + torch.minimum(torch.clamp_max(x, 0) * alpha, beta)


@kernel("linear_activation")
def linear_activation(a: Args) -> torch.Tensor:
    return a["alpha"] * a["x"] + a["beta"]


@kernel("scaled_tanh")
def scaled_tanh(a: Args) -> torch.Tensor:
    return a["alpha"] * torch.tanh(a["x"] * a["beta"])


@kernel("softplus_parametric")
def softplus_parametric(a: Args) -> torch.Tensor:
    x = a["x"]
    alpha, beta = _per_channel(a["alpha"], x.dim()), _per_channel(a["beta"], x.dim())
    return alpha * torch.log1p(torch.exp(x * beta))


@kernel("gelu")
def gelu(a: Args) -> torch.Tensor:
    x, mode = a["x"], a.attr("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)


@kernel("softmax")
def softmax(a: Args) -> torch.Tensor:
    return torch.softmax(a["x"], dim=a.attr("axis", -1))
