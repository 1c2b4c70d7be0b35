"""Resizing of the last two axes (coremltools ``mil/ops/defs/iOS15/image_resizing.py``, iOS16 ``half_pixel_centers``).

Bilinear sampling is separable: each output coordinate maps to a grid point ``g`` clamped to
``[0, n_in - 1]`` and interpolates ``x[floor(g)]`` and ``x[floor(g) + 1]``. ``upsample_bilinear``
recomputes its spacing from the output size (``n_in / n_out``; ``(n_in - 1) / (n_out - 1)`` with
``align_corners``); ``resize_bilinear``'s sampling modes are as documented there. Nearest neighbour picks
``floor(o / scale)`` (``upsample_*``) or ``floor(o · n_in / n_out)`` (``resize_*``).
"""

from __future__ import annotations

import math

import torch

from hybridexport.export.mil.errors import ProgramError
from hybridexport.export.mil.registry import Args, kernel


def _lerp_axis(x: torch.Tensor, axis: int, grid: torch.Tensor) -> torch.Tensor:
    n = x.shape[axis]
    g = grid.clamp(0, n - 1).to(x.dtype if x.is_floating_point() else torch.float64)
    lo = torch.floor(g).to(torch.long)
    hi = (lo + 1).clamp(max=n - 1)
    frac = (g - lo.to(g.dtype)).to(x.dtype)
    shape = [1] * x.dim()
    shape[axis] = -1
    frac = frac.reshape(shape)
    a, b = x.index_select(axis, lo), x.index_select(axis, hi)
    return a + (b - a) * frac


def _grid(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    i = torch.arange(n_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            return torch.full((1,), 0.0 if mode == "STRICT_ALIGN_CORNERS" else (n_in - 1) / 2, dtype=torch.float64)
        return i * ((n_in - 1) / (n_out - 1))
    if mode == "DEFAULT":
        return i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    if mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        return 0.5 * delta + i * delta
    if mode == "UNALIGN_CORNERS":
        s = n_in / n_out
        return i * s + 0.5 * s - 0.5
    if mode == "ASYMMETRIC":
        return i * (n_in / n_out)
    raise ProgramError(f"unknown bilinear sampling mode '{mode}'")


def _bilinear(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    for axis, n_out in ((x.dim() - 2, size[0]), (x.dim() - 1, size[1])):
        x = _lerp_axis(x, axis, _grid(x.shape[axis], n_out, mode))
    return x


def _scaled(n: int, scale: float) -> int:
    return int(math.floor(n * scale))


@kernel("upsample_bilinear")
def upsample_bilinear(a: Args) -> torch.Tensor:
    x = a["x"]
    sh, sw = float(a.attr("scale_factor_height", 1)), float(a.attr("scale_factor_width", 1))
    align = bool(a.attr("align_corners", True))
    half = a.attr("half_pixel_centers")
    half = (not align) if half is None else bool(half)
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "ASYMMETRIC")
    return _bilinear(x, (_scaled(x.shape[-2], sh), _scaled(x.shape[-1], sw)), mode)


@kernel("resize_bilinear")
def resize_bilinear(a: Args) -> torch.Tensor:
    x = a["x"]
    size = (int(a.attr("target_size_height", 1)), int(a.attr("target_size_width", 1)))
    return _bilinear(x, size, str(a.attr("sampling_mode", "DEFAULT")))


def _nearest(x: torch.Tensor, index_h: torch.Tensor, index_w: torch.Tensor) -> torch.Tensor:
    x = x.index_select(x.dim() - 2, index_h.clamp(0, x.shape[-2] - 1))
    return x.index_select(x.dim() - 1, index_w.clamp(0, x.shape[-1] - 1))


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(a: Args) -> torch.Tensor:
    x = a["x"]
    sh, sw = float(a.attr("scale_factor_height", 1)), float(a.attr("scale_factor_width", 1))
    oh, ow = _scaled(x.shape[-2], sh), _scaled(x.shape[-1], sw)
    ih = torch.floor(torch.arange(oh, dtype=torch.float64) / sh).to(torch.long)
    iw = torch.floor(torch.arange(ow, dtype=torch.float64) / sw).to(torch.long)
    return _nearest(x, ih, iw)


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(a: Args) -> torch.Tensor:
    x = a["x"]
    oh, ow = int(a.attr("target_size_height")), int(a.attr("target_size_width"))
    ih = torch.floor(torch.arange(oh, dtype=torch.float64) * (x.shape[-2] / oh)).to(torch.long)
    iw = torch.floor(torch.arange(ow, dtype=torch.float64) * (x.shape[-1] / ow)).to(torch.long)
    return _nearest(x, ih, iw)
