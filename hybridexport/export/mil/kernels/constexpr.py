"""Compressed weights and (de)quantization (coremltools ``mil/ops/defs/iOS16/constexpr_ops.py``,
``iOS17/quantization_ops.py``, ``iOS18/compression.py``).

The ``constexpr_*`` ops run once when the interpreter is built, with these kernels, so the weights
a run sees are the program's own dequantized values (rounded to the declared fp16/fp32):
``affine_dequantize``: ``scale · (q - zero_point)`` on ``axis``; ``blockwise_shift_scale``:
``scale · (data - offset)`` with each scale repeated over its block; ``lut_to_dense``: palette lookup of
LSB-first packed indices (iOS16); ``sparse_to_dense``: nonzero values at the set bits of the mask.
"""

from __future__ import annotations

import numpy as np
import torch

from hybridexport.export.mil.errors import ProgramError
from hybridexport.export.mil.registry import Args, kernel


def _on_axis(p: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    if p.dim() == rank:
        return p
    if p.dim() == 0:
        return p.reshape([1] * rank)
    shape = [1] * rank
    shape[axis % rank] = -1
    return p.reshape(shape)


def _wide(t: torch.Tensor, fdtype: torch.dtype) -> torch.Tensor:
    return t.to(fdtype)


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(a: Args) -> torch.Tensor:
    q = _wide(a["quantized_data"], a.fdtype)
    axis = int(a.attr("axis", 0))
    zp = _on_axis(_wide(a["zero_point"], a.fdtype), q.dim(), axis)
    scale = _on_axis(a["scale"], q.dim(), axis)
    return (q - zp) * scale


@kernel("dequantize")
def dequantize(a: Args) -> torch.Tensor:
    x = _wide(a["input"], a.fdtype)
    axis = int(a.attr("axis", 0) or 0)
    zp = a.get("zero_point")
    if zp is not None:
        x = x - _on_axis(_wide(zp, a.fdtype), x.dim(), axis)
    return x * _on_axis(a["scale"], x.dim(), axis)


@kernel("quantize")
def quantize(a: Args) -> torch.Tensor:
    x = a["input"]
    axis = int(a.attr("axis", 0) or 0)
    y = torch.round(x / _on_axis(a["scale"], x.dim(), axis))
    zp = a.get("zero_point")
    if zp is not None:
        y = y + _on_axis(_wide(zp, a.fdtype), x.dim(), axis)
    lo, hi = (-128, 127) if str(a.attr("output_dtype")) == "int8" else (0, 255)
    return y.clamp(lo, hi)


@kernel("constexpr_cast")
def constexpr_cast(a: Args) -> torch.Tensor:
    return a["source_val"]


def _repeat_blocks(p: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    for axis, (n, m) in enumerate(zip(shape, p.shape, strict=True)):
        if m != n:
            if n % m:
                raise ProgramError(f"block size {n}/{m} is not an integer")
            p = p.repeat_interleave(n // m, dim=axis)
    return p


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(a: Args) -> torch.Tensor:
    data = _wide(a["data"], a.fdtype)
    scale = _repeat_blocks(a["scale"], tuple(data.shape))
    offset = a.get("offset")
    if offset is not None:
        data = data - _repeat_blocks(_wide(offset, a.fdtype), tuple(data.shape))
    return scale * data


def _unpack(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.int64)
    return (bits << np.arange(nbits, dtype=np.int64)).sum(axis=1)


@kernel("constexpr_lut_to_dense")
def constexpr_lut_to_dense(a: Args) -> torch.Tensor:
    lut = a["lut"]
    if "shape" not in a:  # iOS18: unpacked indices in the output shape, a palette per block
        indices = a["indices"].to(torch.long)
        if lut.shape[-1] != 1:
            raise ProgramError(f"constexpr_lut_to_dense '{a.op_name}': vector palettes are not interpreted")
        table = lut[..., 0]  # [*blocks, NUM_PALETTES]
        out = torch.empty(indices.shape, dtype=lut.dtype)
        block = [n // m for n, m in zip(indices.shape, table.shape[:-1], strict=True)]
        for pos in np.ndindex(*table.shape[:-1]):
            sl = tuple(slice(p * b, (p + 1) * b) for p, b in zip(pos, block, strict=True))
            out[sl] = table[pos][indices[sl]]
        return out
    shape = [int(s) for s in np.asarray(a.attr("shape")).reshape(-1)]
    count = int(np.prod(shape))
    nbits = int(np.log2(lut.numel()))
    idx = _unpack(a.attr("indices"), nbits, count)
    return lut.reshape(-1)[torch.from_numpy(idx)].reshape(shape)


@kernel("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(a: Args) -> torch.Tensor:
    data = a["nonzero_data"]
    if "shape" not in a:  # iOS18: a full-shape mask
        mask = a["mask"].to(torch.bool)
        out = torch.zeros(mask.shape, dtype=data.dtype)
        out[mask] = data.reshape(-1)
        return out
    shape = [int(s) for s in np.asarray(a.attr("shape")).reshape(-1)]
    bits = np.unpackbits(np.asarray(a.attr("mask")).astype(np.uint8).reshape(-1), bitorder="little")
    flat = torch.zeros(int(np.prod(shape)), dtype=data.dtype)
    flat[torch.from_numpy(np.nonzero(bits[: flat.numel()])[0])] = data.reshape(-1)
    return flat.reshape(shape)
