"""Reductions over ``axes`` (all when absent) with ``keep_dims`` (default False), and arg-max/min over ``axis``
(first index on ties, int32), as coremltools ``mil/ops/defs/iOS15/reduction.py`` defines them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hybridexport.export.mil.registry import Args, kernel


def _axes(a: Args, x: torch.Tensor) -> list[int]:
    axes = a.ints("axes")
    return list(range(x.dim())) if axes is None else sorted({i % x.dim() for i in axes}) if x.dim() else []


_REDUCE: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "reduce_sum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "reduce_mean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "reduce_prod": lambda x, d, k: _prod(x, d, k),
    "reduce_max": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "reduce_min": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "reduce_l1_norm": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "reduce_l2_norm": lambda x, d, k: torch.sqrt((x * x).sum(dim=d, keepdim=k)),
    "reduce_sum_square": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "reduce_log_sum": lambda x, d, k: torch.log(x.sum(dim=d, keepdim=k)),
    "reduce_log_sum_exp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep)
    return x


def _reduction(fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor]) -> Callable[[Args], torch.Tensor]:
    def run(a: Args) -> torch.Tensor:
        x = a["x"]
        if x.dtype == torch.int32 and fn is not _REDUCE["reduce_max"] and fn is not _REDUCE["reduce_min"]:
            x = x.to(a.fdtype)
        return fn(x, _axes(a, x), bool(a.attr("keep_dims", False)))

    return run


for _name, _fn in _REDUCE.items():
    kernel(_name)(_reduction(_fn))


@kernel("reduce_argmax", "reduce_argmin")
def reduce_arg(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = int(a.attr("axis", -1))
    keep = bool(a.attr("keep_dims", False))
    fn = torch.argmax if a.op_type == "reduce_argmax" else torch.argmin
    return fn(x, dim=axis, keepdim=keep).to(torch.int32)
