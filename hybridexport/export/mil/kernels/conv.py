"""``conv``, ``conv_transpose`` and pooling (1-D to 3-D), as coremltools ``mil/ops/defs/iOS15/{conv,pool}.py``
define them.

Padding: ``valid`` none; ``custom`` ``pad[2i]``/``pad[2i+1]`` before/after spatial axis ``i``; ``same``
totals ``max(0, (ceil(D/s) - 1)·s + (K - 1)·d + 1 - D)`` with the odd element after (``same_lower``: before).
Pool ``ceil_mode`` follows coremltools' output-size rule; the windows that then overhang the padded
input average over the padded part only (PyTorch's rule), ``exclude_padding_from_average`` over the
real elements only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hybridexport.export.mil.errors import ProgramError
from hybridexport.export.mil.registry import Args, kernel

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def pad_pairs(pad_type: str, pad: Sequence[int] | None, sizes: Sequence[int], kernel_sizes: Sequence[int],
              strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding of each spatial axis."""
    n = len(kernel_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = list(pad or [0] * (2 * n))
        return [(int(p[2 * i]), int(p[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for d_in, k, s, dil in zip(sizes, kernel_sizes, strides, dilations, strict=True):
            eff = (k - 1) * dil + 1
            total = max(0, (math.ceil(d_in / s) - 1) * s + eff - d_in)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise ProgramError(f"unknown pad_type '{pad_type}'")


def _torch_pad(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """(before, after) per spatial axis → F.pad's list, last axis first."""
    flat: list[int] = []
    for b, e in reversed(list(pairs)):
        flat += [b, e]
    return flat


def _spatial(a: Args, x: torch.Tensor, n: int, kernel_sizes: Sequence[int], dilations: Sequence[int]
             ) -> tuple[list[int], list[tuple[int, int]]]:
    strides = a.ints("strides") or [1] * n
    pairs = pad_pairs(str(a.attr("pad_type", "valid")), a.ints("pad"), list(x.shape[-n:]), kernel_sizes,
                      strides, dilations)
    return strides, pairs


@kernel("conv")
def conv(a: Args) -> torch.Tensor:
    x, w = a["x"], a["weight"]
    n = w.dim() - 2
    if n not in _CONV:
        raise ProgramError(f"conv '{a.op_name}': {n}-D convolution is not defined")
    dilations = a.ints("dilations") or [1] * n
    strides, pairs = _spatial(a, x, n, list(w.shape[2:]), dilations)
    groups = int(a.attr("groups", 1))
    if all(b == e for b, e in pairs):
        return _CONV[n](x, w, a.get("bias"), strides, [b for b, _ in pairs], dilations, groups)
    return _CONV[n](F.pad(x, _torch_pad(pairs)), w, a.get("bias"), strides, 0, dilations, groups)


@kernel("conv_transpose")
def conv_transpose(a: Args) -> torch.Tensor:
    """The full transposed convolution, cropped by ``pad`` (or to ``output_shape``); weight [C_in, C_out/g, *K]."""
    x, w = a["x"], a["weight"]
    n = w.dim() - 2
    strides = a.ints("strides") or [1] * n
    dilations = a.ints("dilations") or [1] * n
    groups = int(a.attr("groups", 1))
    full = _CONV_T[n](x, w, None, strides, 0, 0, groups, dilations)
    pad_type = str(a.attr("pad_type", "valid"))
    out_shape = a.ints("output_shape")
    sizes_in = list(x.shape[-n:])
    for i in range(n):
        axis = full.dim() - n + i
        have = full.shape[axis]
        if pad_type == "same":
            total = have - sizes_in[i] * strides[i]
            begin, want = total // 2, sizes_in[i] * strides[i]
        elif pad_type == "custom":
            p = a.ints("pad") or [0] * (2 * n)
            begin, want = p[2 * i], have - p[2 * i] - p[2 * i + 1]
        else:
            begin, want = 0, have
        if out_shape is not None:
            want = out_shape[2 + i]
        piece = full.narrow(axis, begin, min(want, have - begin))
        if piece.shape[axis] < want:  # output_padding: zeros after
            extra = [0, 0] * (full.dim() - axis - 1) + [0, want - piece.shape[axis]]
            piece = F.pad(piece, extra)
        full = piece
    bias = a.get("bias")
    if bias is not None:
        full = full + bias.reshape([1, -1] + [1] * n)
    return full


def _pool_geometry(a: Args, x: torch.Tensor) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """kernel, strides, (before, after) padding, and the extra after-padding ``ceil_mode`` needs."""
    k = a.ints("kernel_sizes")
    n = len(k)
    strides, pairs = _spatial(a, x, n, k, [1] * n)
    extra = []
    for d_in, kk, s, (b, e) in zip(x.shape[-n:], k, strides, pairs, strict=True):
        total = b + e
        if a.attr("ceil_mode", False):
            out = math.floor((d_in + total - kk + s - 1) / s + 1)
            if (out - 1) * s >= d_in + total / 2 and total > 0:
                out -= 1
        else:
            out = math.floor((d_in + total - kk) / s + 1)
        extra.append(max(0, (out - 1) * s + kk - (d_in + total)))
    return k, strides, pairs, extra


def _padded(x: torch.Tensor, pairs: Sequence[tuple[int, int]], extra: Sequence[int], value: float) -> torch.Tensor:
    full = [(b, e + x_) for (b, e), x_ in zip(pairs, extra, strict=True)]
    return F.pad(x, _torch_pad(full), value=value) if any(b or e for b, e in full) else x


@kernel("max_pool")
def max_pool(a: Args) -> torch.Tensor:
    x = a["x"]
    k, strides, pairs, extra = _pool_geometry(a, x)
    return _MAX[len(k)](_padded(x, pairs, extra, float("-inf")), k, strides)


def _window_sum(x: torch.Tensor, k: Sequence[int], strides: Sequence[int]) -> torch.Tensor:
    return _AVG[len(k)](x, k, strides) * math.prod(k)


@kernel("avg_pool")
def avg_pool(a: Args) -> torch.Tensor:
    x = a["x"]
    k, strides, pairs, extra = _pool_geometry(a, x)
    n = len(k)
    total = _window_sum(_padded(x, pairs, extra, 0.0), k, strides)
    if not any(b or e for b, e in pairs) and not any(extra):
        return total / math.prod(k)
    ones = torch.ones((1, 1, *x.shape[-n:]), dtype=x.dtype)
    if a.attr("exclude_padding_from_average", False):
        count = _window_sum(_padded(ones, pairs, extra, 0.0), k, strides)
    else:  # the padding counts, the ceil-mode overhang does not
        inside = F.pad(ones, _torch_pad(pairs), value=1.0)
        count = _window_sum(_padded(inside, [(0, 0)] * n, extra, 0.0), k, strides)
    return total / count


@kernel("l2_pool")
def l2_pool(a: Args) -> torch.Tensor:
    x = a["x"]
    k, strides, pairs, extra = _pool_geometry(a, x)
    return torch.sqrt(_window_sum(_padded(x * x, pairs, extra, 0.0), k, strides))
