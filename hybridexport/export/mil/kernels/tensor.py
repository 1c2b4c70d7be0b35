"""Data-movement MIL ops: shapes, slicing, joins, gathers, padding, rearrangements, generators.

Semantics follow coremltools ``mil/ops/defs/iOS15/tensor_{operation,transformation}.py`` and
``scatter_gather.py`` (iOS16 additions where noted): ``reshape`` reads ``0`` as "keep this axis" (when the
ranks match) and one ``-1`` as "the rest"; ``slice_by_index`` is Python slicing with masks
(``begin_mask`` → from the start, ``end_mask`` → to the end, ``squeeze_mask`` → index ``begin`` and drop
the axis); ``pad`` pads the last ``len(pad)/2`` axes in order; ``concat(interleave=True)`` alternates
its inputs; ``depth_to_space``/``space_to_depth`` use TensorFlow's (DCR) channel order,
``pixel_shuffle``/``pixel_unshuffle`` PyTorch's; ``gather`` takes negative indices from the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hybridexport.export.mil.errors import ProgramError
from hybridexport.export.mil.registry import Args, kernel


def _ints(a: Args, name: str) -> list[int] | None:
    """An int-list input that may be a constant or computed at run time."""
    if name not in a:
        return None
    b = a.bindings[name]
    if isinstance(b, str):
        return [int(i) for i in a[name].reshape(-1).tolist()]
    return a.ints(name)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@kernel("reshape")
def reshape(a: Args) -> torch.Tensor:
    x = a["x"]
    shape = _ints(a, "shape") or []
    if 0 in shape and len(shape) == x.dim():
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("transpose")
def transpose(a: Args) -> torch.Tensor:
    x = a["x"]
    return x.permute([_axis(p, x.dim()) for p in a.ints("perm")])


@kernel("expand_dims")
def expand_dims(a: Args) -> torch.Tensor:
    x = a["x"]
    axes = a.ints("axes")
    out_rank = x.dim() + len(axes)
    for ax in sorted(_axis(i, out_rank) for i in axes):
        x = x.unsqueeze(ax)
    return x


@kernel("squeeze")
def squeeze(a: Args) -> torch.Tensor:
    x = a["x"]
    axes = a.ints("axes")
    if axes is None:
        return x.reshape([s for s in x.shape if s != 1])
    drop = {_axis(i, x.dim()) for i in axes}
    return x.reshape([s for i, s in enumerate(x.shape) if i not in drop])


@kernel("flatten2d")
def flatten2d(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = _axis(int(a.attr("axis", 1)), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@kernel("concat")
def concat(a: Args) -> torch.Tensor:
    values = a.values("values")
    axis = _axis(int(a.attr("axis")), values[0].dim())
    values = _common(values)
    if a.attr("interleave", False):
        stacked = torch.stack(values, dim=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return torch.cat(values, dim=axis)


def _common(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors of one dtype (ints and floats mixed in one tuple become floats)."""
    if len({v.dtype for v in values}) <= 1:
        return values
    target = next((v.dtype for v in values if v.is_floating_point()), values[0].dtype)
    return [v.to(target) for v in values]


@kernel("stack")
def stack(a: Args) -> torch.Tensor:
    values = _common(a.values("values"))
    return torch.stack(values, dim=_axis(int(a.attr("axis")), values[0].dim() + 1))


@kernel("split")
def split(a: Args) -> tuple[torch.Tensor, ...]:
    x = a["x"]
    axis = _axis(int(a.attr("axis")), x.dim())
    sizes = a.ints("split_sizes")
    if sizes is None:
        n = int(a.attr("num_splits"))
        if x.shape[axis] % n:
            raise ProgramError(f"split '{a.op_name}': axis size {x.shape[axis]} is not divisible by {n}")
        sizes = [x.shape[axis] // n] * n
    return tuple(torch.split(x, sizes, dim=axis))


@kernel("tile")
def tile(a: Args) -> torch.Tensor:
    return a["x"].repeat(_ints(a, "reps"))


def _edge_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    i = torch.arange(-before, n + after)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


@kernel("pad")
def pad(a: Args) -> torch.Tensor:
    x = a["x"]
    flat = _ints(a, "pad")
    n = len(flat) // 2
    pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]
    mode = str(a.attr("mode", "constant"))
    if mode == "constant":
        torch_pad: list[int] = []
        for b, e in reversed(pairs):
            torch_pad += [b, e]
        return F.pad(x, torch_pad, value=float(a.attr("constant_val", 0.0)))
    if mode not in ("reflect", "replicate"):
        raise ProgramError(f"pad '{a.op_name}': unknown mode '{mode}'")
    for i, (b, e) in enumerate(pairs):
        if b or e:
            axis = x.dim() - n + i
            x = x.index_select(axis, _edge_index(x.shape[axis], b, e, mode))
    return x


def _take(x: torch.Tensor, axis: int, index: Sequence[int] | range) -> torch.Tensor:
    idx = list(index)
    if idx and all(q - p == 1 for p, q in zip(idx, idx[1:])):
        return x.narrow(axis, idx[0], len(idx))
    return x.index_select(axis, torch.tensor(idx, dtype=torch.long))


@kernel("slice_by_index")
def slice_by_index(a: Args) -> torch.Tensor:
    x = a["x"]
    r = x.dim()
    begin, end = _ints(a, "begin"), _ints(a, "end")
    stride = a.ints("stride") or [1] * r
    bmask = [bool(v) for v in np.asarray(a.attr("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(v) for v in np.asarray(a.attr("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(v) for v in np.asarray(a.attr("squeeze_mask", [False] * r)).reshape(-1)]
    keep = []
    for i in range(r):
        n = x.shape[i]
        if smask[i]:
            b = 0 if bmask[i] else begin[i]
            x = _take(x, i, [b + n if b < 0 else b])
            continue
        keep.append(i)
        s = slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i])
        rng = range(*s.indices(n))
        if len(rng) != n or stride[i] != 1:
            x = _take(x, i, rng)
    return x.reshape([x.shape[i] for i in keep])


@kernel("slice_by_size")
def slice_by_size(a: Args) -> torch.Tensor:
    x = a["x"]
    begin, size = _ints(a, "begin"), _ints(a, "size")
    for i, (b, s) in enumerate(zip(begin, size, strict=True)):
        b = b + x.shape[i] if b < 0 else b
        length = x.shape[i] - b if s == -1 else s
        x = x.narrow(i, b, length)
    return x


def _indices(idx: torch.Tensor, n: int) -> torch.Tensor:
    idx = idx.to(torch.long)
    return torch.where(idx < 0, idx + n, idx)


@kernel("gather")
def gather(a: Args) -> torch.Tensor:
    x, idx = a["x"], a["indices"]
    axis = _axis(int(a.attr("axis", 0)), x.dim())
    batch = int(a.attr("batch_dims", 0))
    idx = _indices(idx, x.shape[axis])
    if batch == 0:
        out = x.index_select(axis, idx.reshape(-1))
        return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))
    lead = x.shape[:batch]
    xf = x.reshape(math.prod(lead), *x.shape[batch:])
    idf = idx.reshape(math.prod(lead), *idx.shape[batch:])
    parts = []
    for b in range(xf.shape[0]):
        xa = axis - batch
        o = xf[b].index_select(xa, idf[b].reshape(-1))
        parts.append(o.reshape(list(xf[b].shape[:xa]) + list(idf[b].shape) + list(xf[b].shape[xa + 1:])))
    return torch.stack(parts).reshape(list(lead) + list(parts[0].shape))


@kernel("gather_along_axis")
def gather_along_axis(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = _axis(int(a.attr("axis", 0)), x.dim())
    return torch.gather(x, axis, _indices(a["indices"], x.shape[axis]))


@kernel("gather_nd")
def gather_nd(a: Args) -> torch.Tensor:
    x, idx = a["x"], a["indices"].to(torch.long)
    batch = int(a.attr("batch_dims", 0))
    k = idx.shape[-1]
    lead = x.shape[:batch]
    xb = x.reshape(math.prod(lead), *x.shape[batch:])
    ib = idx.reshape(math.prod(lead), -1, k)
    sizes = torch.tensor(list(x.shape[batch:batch + k]))
    ib = torch.where(ib < 0, ib + sizes, ib)
    rows = [xb[b][tuple(ib[b, :, j] for j in range(k))] for b in range(xb.shape[0])]
    out = torch.stack(rows)
    return out.reshape(list(idx.shape[:-1]) + list(x.shape[batch + k:]))


def _scatter_mode(mode: str, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    ops = {"update": lambda c, u: u, "add": torch.add, "sub": torch.sub, "mul": torch.mul,
           "div": torch.true_divide, "max": torch.maximum, "min": torch.minimum}
    if mode not in ops:
        raise ProgramError(f"unknown scatter mode '{mode}'")
    return ops[mode](current, updates)


@kernel("scatter_along_axis")
def scatter_along_axis(a: Args) -> torch.Tensor:
    data, upd = a["data"].clone(), a["updates"]
    axis = _axis(int(a.attr("axis", 0)), data.dim())
    idx = _indices(a["indices"], data.shape[axis])
    mode = str(a.attr("mode", "add"))
    current = torch.gather(data, axis, idx)
    return data.scatter(axis, idx, _scatter_mode(mode, current, upd))


@kernel("scatter")
def scatter(a: Args) -> torch.Tensor:
    data, upd = a["data"].clone(), a["updates"]
    axis = _axis(int(a.attr("axis", 0)), data.dim())
    idx = _indices(a["indices"], data.shape[axis]).reshape(-1)
    moved = data.movedim(axis, 0)
    u = upd.movedim(axis, 0).reshape(idx.shape[0], *moved.shape[1:])
    moved[idx] = _scatter_mode(str(a.attr("mode", "add")), moved[idx], u)
    return moved.movedim(0, axis)


@kernel("pixel_shuffle")
def pixel_shuffle(a: Args) -> torch.Tensor:
    return F.pixel_shuffle(a["x"], int(a.attr("upscale_factor")))


@kernel("pixel_unshuffle")
def pixel_unshuffle(a: Args) -> torch.Tensor:
    return F.pixel_unshuffle(a["x"], int(a.attr("downscale_factor")))


@kernel("depth_to_space")
def depth_to_space(a: Args) -> torch.Tensor:
    x = a["x"]
    b = int(a.attr("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@kernel("space_to_depth")
def space_to_depth(a: Args) -> torch.Tensor:
    x = a["x"]
    b = int(a.attr("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@kernel("sliding_windows")
def sliding_windows(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = _axis(int(a.attr("axis")), x.dim())
    y = x.unfold(axis, int(a.attr("size")), int(a.attr("stride", 1)))
    return y.movedim(-1, axis + 1)


@kernel("reverse")
def reverse(a: Args) -> torch.Tensor:
    x = a["x"]
    axes = a.ints("axes")
    return torch.flip(x, [_axis(i, x.dim()) for i in (axes if axes is not None else range(x.dim()))])


@kernel("band_part")
def band_part(a: Args) -> torch.Tensor:
    x = a["x"]
    lower, upper = int(a.attr("lower", -1)), int(a.attr("upper", -1))
    m, n = x.shape[-2], x.shape[-1]
    i = torch.arange(m).reshape(m, 1)
    j = torch.arange(n).reshape(1, n)
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return torch.where(keep, x, torch.zeros_like(x))


@kernel("cumsum")
def cumsum(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = _axis(int(a.attr("axis", 0)), x.dim())
    if a.attr("reverse", False):
        x = x.flip(axis)
    y = x.cumsum(axis)
    if a.attr("exclusive", False):
        y = y - x
    return y.flip(axis) if a.attr("reverse", False) else y


@kernel("fill")
def fill(a: Args) -> torch.Tensor:
    value = a.attr("value", 0.0)
    return torch.full(_ints(a, "shape"), value, dtype=_dtype_for(a, value))


@kernel("fill_like")
def fill_like(a: Args) -> torch.Tensor:
    value = a.attr("value", 0.0)
    return torch.full(tuple(a["ref_tensor"].shape), value, dtype=_dtype_for(a, value))


def _dtype_for(a: Args, value: object) -> torch.dtype:
    kind = a.out_dtypes[0]
    if kind in ("fp16", "fp32", "fp64"):
        return a.fdtype
    return torch.bool if kind == "bool" else torch.int32


@kernel("range_1d")
def range_1d(a: Args) -> torch.Tensor:
    start, end, step = (a[n].item() for n in ("start", "end", "step"))
    dtype = a.fdtype if a.out_dtypes[0].startswith("fp") else torch.int32
    return torch.arange(start, end, step, dtype=dtype)


@kernel("shape")
def shape(a: Args) -> torch.Tensor:
    return torch.tensor(list(a["x"].shape), dtype=torch.int32)


@kernel("one_hot")
def one_hot(a: Args) -> torch.Tensor:
    idx = a["indices"].to(torch.long)
    size = int(a["one_hot_vector_size"].item())
    axis = int(a.attr("axis", -1))
    on, off = a.attr("on_value", 1), a.attr("off_value", 0)
    hot = F.one_hot(idx.clamp(0, size - 1), size) * ((idx >= 0) & (idx < size)).unsqueeze(-1)
    out = torch.where(hot.bool(), torch.tensor(on, dtype=a.fdtype), torch.tensor(off, dtype=a.fdtype))
    return out.movedim(-1, _axis(axis, idx.dim() + 1))


@kernel("topk")
def topk(a: Args) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    x = a["x"]
    k = int(a.attr("k", 1))
    axis = _axis(int(a.attr("axis", -1)), x.dim())
    ascending = bool(a.attr("ascending", False))
    order = torch.argsort(x, dim=axis, descending=not ascending, stable=True)
    idx = order.narrow(axis, 0, k) if k >= 0 else order
    values = torch.gather(x, axis, idx)
    return values if len(a.out_dtypes) == 1 else (values, idx.to(torch.int32))


@kernel("argsort")
def argsort(a: Args) -> torch.Tensor:
    x = a["x"]
    axis = _axis(int(a.attr("axis", -1)), x.dim())
    return torch.argsort(x, dim=axis, descending=not a.attr("ascending", False), stable=True).to(torch.int32)


@kernel("non_zero")
def non_zero(a: Args) -> torch.Tensor:
    return torch.nonzero(a["x"]).to(torch.int32)


@kernel("crop")
def crop(a: Args) -> torch.Tensor:
    x = a["x"]
    (t, b), (lft, r) = a.ints("crop_height"), a.ints("crop_width")
    return x[..., t: x.shape[-2] - b, lft: x.shape[-1] - r]
