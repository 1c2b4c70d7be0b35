"""The kernel registry: one function per MIL op type, and the view of an op's inputs it receives.

A kernel takes an :class:`Args` and returns a tensor (or a tuple, one per output). It computes in the
interpreter's float dtype (``args.fdtype``: float32, or float64 for a wide reference run) from inputs
that already hold the values of their declared MIL dtype; the interpreter rounds each result to the
dtype the program declares for it (fp16 outputs to fp16), so kernels never round themselves.

Register with::

    @kernel("relu")
    def relu(a: Args) -> torch.Tensor:
        return torch.relu(a["x"])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hybridexport.export.mil.errors import ProgramError

Kernel = Callable[["Args"], Any]

#: op type → kernel
KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    """Register the decorated function as the kernel of each MIL op type in ``op_types``."""

    def register(fn: Kernel) -> Kernel:
        for t in op_types:
            if t in KERNELS:
                raise ValueError(f"MIL op '{t}' has two kernels ({KERNELS[t].__name__}, {fn.__name__})")
            KERNELS[t] = fn
        return fn

    return register


class Const:
    """A compile-time input: its numpy value (as the program stores it) and the tensor kernels see."""

    __slots__ = ("array", "tensor")

    def __init__(self, array: Any, fdtype: torch.dtype) -> None:
        self.array = array
        self.tensor = to_tensor(array, fdtype) if not isinstance(array, str) else None


class Args:
    """The inputs of one op: each bound either to a :class:`Const` or to the name of a runtime value.

    ``a[name]`` is the input as a tensor (KeyError if absent), ``a.get(name)`` the same or None,
    ``a.attr(name, default)`` the compile-time value (python scalar, str, list or numpy array),
    ``a.values(name)`` the tensors of a tuple input (``concat(values=...)``).
    """

    __slots__ = ("op_name", "op_type", "bindings", "env", "fdtype", "out_dtypes", "out_shapes")

    def __init__(self, op_name: str, op_type: str, bindings: dict[str, Any], fdtype: torch.dtype,
                 out_dtypes: list[str], out_shapes: list[tuple[Any, ...]]) -> None:
        self.op_name = op_name
        self.op_type = op_type
        self.bindings = bindings  # name -> Const | str | list[Const | str]
        self.env: dict[str, torch.Tensor] = {}
        self.fdtype = fdtype
        self.out_dtypes = out_dtypes  # declared MIL dtype of each output ("fp16", "fp32", "int32", "bool", ...)
        self.out_shapes = out_shapes

    def _resolve(self, b: Any) -> torch.Tensor:
        if isinstance(b, Const):
            if b.tensor is None:
                raise ProgramError(f"op '{self.op_name}' ({self.op_type}): a string input is used as a tensor")
            return b.tensor
        return self.env[b]

    def __getitem__(self, name: str) -> torch.Tensor:
        b = self.bindings[name]
        if isinstance(b, list):
            raise ProgramError(f"op '{self.op_name}' ({self.op_type}): input '{name}' is a tuple")
        return self._resolve(b)

    def __contains__(self, name: str) -> bool:
        return name in self.bindings

    def get(self, name: str) -> torch.Tensor | None:
        return self[name] if name in self.bindings else None

    def values(self, name: str) -> list[torch.Tensor]:
        b = self.bindings[name]
        return [self._resolve(v) for v in (b if isinstance(b, list) else [b])]

    def attr(self, name: str, default: Any = None) -> Any:
        """The compile-time value of input ``name`` (``default`` when the op has no such input)."""
        b = self.bindings.get(name)
        if b is None:
            return default
        if not isinstance(b, Const):
            raise ProgramError(f"op '{self.op_name}' ({self.op_type}): input '{name}' must be a constant, "
                               "the program computes it at run time")
        v = b.array
        if isinstance(v, np.ndarray) and v.ndim == 0:
            return v.item()
        if isinstance(v, np.generic):
            return v.item()
        return v

    def ints(self, name: str, default: Any = None) -> list[int] | None:
        """A compile-time integer list input (``axes``, ``perm``, ``pad``...)."""
        v = self.attr(name, default)
        if v is None:
            return None
        return [int(i) for i in np.asarray(v).reshape(-1)]


_TORCH_INTS = {
    np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8, np.dtype(np.int16): torch.int16,
    np.dtype(np.uint16): torch.int32, np.dtype(np.int32): torch.int32, np.dtype(np.uint32): torch.int64,
    np.dtype(np.int64): torch.int64,
}


def to_tensor(value: Any, fdtype: torch.dtype) -> torch.Tensor:
    """A numpy value as a tensor: floats in ``fdtype`` (exact for fp16/fp32 values), ints, bools."""
    a = np.asarray(value)
    if a.dtype == np.bool_:
        return torch.from_numpy(a.copy())
    if np.issubdtype(a.dtype, np.floating):
        return torch.from_numpy(a.astype(np.float64 if fdtype == torch.float64 else np.float32))
    if a.dtype in _TORCH_INTS:
        tdt = _TORCH_INTS[a.dtype]
        return torch.from_numpy(a.astype(np.int64)).to(tdt) if a.dtype in (np.uint16, np.uint32) else (
            torch.from_numpy(a.copy()).to(tdt))
    raise ProgramError(f"constant of numpy dtype {a.dtype} is not supported")
