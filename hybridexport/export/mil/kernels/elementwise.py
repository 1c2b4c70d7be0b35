"""Elementwise MIL ops (numpy broadcasting): arithmetic, comparisons, logic, unary math, cast.

Definitions follow coremltools ``mil/ops/defs/iOS15/elementwise_{binary,unary}.py``: ``floor_div`` rounds
toward −inf, ``mod`` takes the sign of the divisor (Python ``%``), ``round`` is half-to-even,
``inverse``/``log``/``rsqrt`` add their ``epsilon`` first, ``threshold`` is ``max(x, alpha)``.
"""

from __future__ import annotations

import torch

from hybridexport.export.mil.registry import Args, kernel

_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.true_divide,
    "floor_div": lambda x, y: torch.div(x, y, rounding_mode="floor"),
    "mod": torch.remainder,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "less": torch.lt,
    "less_equal": torch.le,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}


def _binary(fn):  # noqa: ANN001, ANN202
    def run(a: Args) -> torch.Tensor:
        return fn(a["x"], a["y"])

    return run


for _name, _fn in _BINARY.items():
    kernel(_name)(_binary(_fn))

_UNARY = {
    "abs": torch.abs,
    "acos": torch.acos,
    "asin": torch.asin,
    "atan": torch.atan,
    "atanh": torch.atanh,
    "ceil": torch.ceil,
    "cos": torch.cos,
    "cosh": torch.cosh,
    "erf": torch.erf,
    "exp": torch.exp,
    "exp2": torch.exp2,
    "floor": torch.floor,
    "logical_not": torch.logical_not,
    "round": torch.round,
    "sign": torch.sign,
    "sin": torch.sin,
    "sinh": torch.sinh,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "tan": torch.tan,
    "tanh": torch.tanh,
}


def _unary(fn):  # noqa: ANN001, ANN202
    def run(a: Args) -> torch.Tensor:
        return fn(a["x"])

    return run


for _name, _fn in _UNARY.items():
    kernel(_name)(_unary(_fn))


@kernel("inverse")
def inverse(a: Args) -> torch.Tensor:
    return torch.reciprocal(a["x"] + a.attr("epsilon", 1e-4))


@kernel("log")
def log(a: Args) -> torch.Tensor:
    return torch.log(a["x"] + a.attr("epsilon", 1e-45))


@kernel("rsqrt")
def rsqrt(a: Args) -> torch.Tensor:
    return torch.rsqrt(a["x"] + a.attr("epsilon", 1e-12))


@kernel("threshold")
def threshold(a: Args) -> torch.Tensor:
    return torch.clamp_min(a["x"], a.attr("alpha"))


@kernel("clip")
def clip(a: Args) -> torch.Tensor:
    return torch.clamp(a["x"], a.attr("alpha"), a.attr("beta"))


@kernel("cast", "identity")
def cast(a: Args) -> torch.Tensor:
    """The interpreter stores the result at the declared dtype: float→int truncates toward 0, ≠0 → True."""
    x = a["x"]
    if a.out_dtypes[0] in ("int32", "int8", "uint8", "int16", "uint16") and x.is_floating_point():
        return torch.trunc(x)
    return x


@kernel("select")
def select(a: Args) -> torch.Tensor:
    return torch.where(a["cond"].to(torch.bool), a["a"], a["b"])
