"""MIL kernels that coremltools gives no numpy value for, against PyTorch (float64) or their documented examples.

Convolutions and pools over every attribute the converter emits (pads, pad types, strides, dilations,
groups, ceil mode, padding in the average), normalizations, resizing (each sampling mode against the
grid its docstring tabulates), channel/space rearrangements, gathers and windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from hybridexport.export.mil.interpreter import Interpreter  # noqa: E402

IOS15, IOS16 = ct.target.iOS15, ct.target.iOS16
FEW = settings(max_examples=8, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)


def run1(op: str, x: np.ndarray, opset: Any = IOS15, **consts: Any) -> np.ndarray:
    """``op`` with ``x`` fed at run time (type inference checks the result's shape)."""
    dtype = types.int32 if x.dtype == np.int32 else types.fp32

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=dtype)], opset_version=opset)
    def prog(a):
        return getattr(mb, op)(x=a, **consts) if op != "one_hot" else mb.one_hot(indices=a, **consts)

    interp = Interpreter(prog)
    return interp.run([x]).outputs[interp.output_names[0]]


def _torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float64))


def _same_pads(size: int, k: int, s: int, d: int, lower: bool) -> tuple[int, int]:
    """TensorFlow-style SAME padding: output ceil(size/s), the odd pixel after (before when ``lower``)."""
    out = -(-size // s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


@FEW
@given(dims=st.integers(1, 3), seed=seeds, data=st.data())
def test_conv(dims, seed, data):
    r = np.random.default_rng(seed)
    groups = data.draw(st.sampled_from([1, 2]))
    cin, cout = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
    sizes = [data.draw(st.integers(4, 7)) for _ in range(dims)]
    k = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    s = [data.draw(st.integers(1, 2)) for _ in range(dims)]
    d = [data.draw(st.integers(1, 2)) for _ in range(dims)]
    pad_type = data.draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
    x = r.normal(size=(1, cin, *sizes)).astype(np.float32)
    w = r.normal(size=(cout, cin // groups, *k)).astype(np.float32)
    b = r.normal(size=(cout,)).astype(np.float32) if data.draw(st.booleans()) else None
    if pad_type == "custom":
        pairs = [(data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in range(dims)]
    elif pad_type == "valid":
        pairs = [(0, 0)] * dims
    else:
        pairs = [_same_pads(n, kk, ss, dd, pad_type == "same_lower") for n, kk, ss, dd in zip(sizes, k, s, d)]
    extra = {"pad": [p for pair in pairs for p in pair]} if pad_type == "custom" else {}
    if b is not None:
        extra["bias"] = b
    opset = IOS16 if pad_type == "same_lower" else IOS15  # same_lower exists from iOS16
    got = run1("conv", x, opset=opset, weight=w, strides=s, dilations=d, groups=groups, pad_type=pad_type, **extra)
    flat = [p for pair in reversed(pairs) for p in pair]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    want = conv(F.pad(_torch(x), flat), _torch(w), None if b is None else _torch(b), s, 0, d, groups)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@FEW
@given(seed=seeds, data=st.data())
def test_conv_transpose(seed, data):
    r = np.random.default_rng(seed)
    groups = data.draw(st.sampled_from([1, 2]))
    cin, cout = 2 * groups, groups * data.draw(st.integers(1, 2))
    k, s, dil = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    p = data.draw(st.integers(0, (k - 1) * dil // 2))
    out_pad = data.draw(st.integers(0, max(0, min(s, dil) - 1)))
    x = r.normal(size=(1, cin, 4, 5)).astype(np.float32)
    w = r.normal(size=(cin, cout // groups, k, k)).astype(np.float32)
    b = r.normal(size=(cout,)).astype(np.float32)
    want = F.conv_transpose2d(_torch(x), _torch(w), _torch(b), s, p, out_pad, groups, dil).numpy()
    got = run1("conv_transpose", x, weight=w, bias=b, strides=[s, s], dilations=[dil, dil], groups=groups,
               pad_type="custom", pad=[p, p, p, p], output_shape=list(want.shape))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@FEW
@given(seed=seeds, data=st.data())
def test_pools(seed, data):
    r = np.random.default_rng(seed)
    k = data.draw(st.integers(1, 3))
    s = data.draw(st.integers(1, k))  # windows never skip input (as the converter emits them)
    p = data.draw(st.integers(0, k // 2))
    ceil_mode = data.draw(st.booleans())
    exclude = data.draw(st.booleans())
    x = r.normal(size=(1, 2, data.draw(st.integers(3, 7)), data.draw(st.integers(3, 7)))).astype(np.float32)
    common = {"kernel_sizes": [k, k], "strides": [s, s], "pad_type": "custom", "pad": [p] * 4, "ceil_mode": ceil_mode}
    got = run1("avg_pool", x, exclude_padding_from_average=exclude, **common)
    want = F.avg_pool2d(_torch(x), k, s, p, ceil_mode=ceil_mode, count_include_pad=not exclude).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = run1("max_pool", x, **common)
    np.testing.assert_allclose(got, F.max_pool2d(_torch(x), k, s, p, ceil_mode=ceil_mode).numpy(), rtol=0, atol=0)
    got = run1("l2_pool", x, **common)
    want = torch.sqrt(F.avg_pool2d(F.pad(_torch(x) ** 2, [p] * 4), k, s, ceil_mode=ceil_mode) * k * k).numpy()
    if not ceil_mode:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pool_same_padding_and_1d_3d():
    r = np.random.default_rng(0)
    x = r.normal(size=(1, 2, 5, 6)).astype(np.float32)
    got = run1("avg_pool", x, kernel_sizes=[3, 2], strides=[2, 2], pad_type="same", exclude_padding_from_average=True)
    pads = [_same_pads(5, 3, 2, 1, False), _same_pads(6, 2, 2, 1, False)]
    padded = F.pad(_torch(x), [*pads[1], *pads[0]])
    ones = F.pad(torch.ones(1, 1, 5, 6, dtype=torch.float64), [*pads[1], *pads[0]])
    want = F.avg_pool2d(padded, (3, 2), 2) / F.avg_pool2d(ones, (3, 2), 2)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)
    x1 = r.normal(size=(1, 3, 9)).astype(np.float32)
    np.testing.assert_allclose(run1("max_pool", x1, kernel_sizes=[3], strides=[2], pad_type="valid"),
                               F.max_pool1d(_torch(x1), 3, 2).numpy())
    x3 = r.normal(size=(1, 2, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run1("avg_pool", x3, kernel_sizes=[2, 2, 2], strides=[2, 2, 2], pad_type="valid"),
                               F.avg_pool3d(_torch(x3), 2).numpy(), rtol=1e-6)


@FEW
@given(seed=seeds, rank=st.integers(3, 5))
def test_batch_and_instance_norm(seed, rank):
    r = np.random.default_rng(seed)
    shape = (2, 3, *r.integers(1, 4, size=rank - 2))
    x = r.normal(size=shape).astype(np.float32)
    mean, var = r.normal(size=3).astype(np.float32), r.uniform(0.5, 2, size=3).astype(np.float32)
    gamma, beta = r.normal(size=3).astype(np.float32), r.normal(size=3).astype(np.float32)
    got = run1("batch_norm", x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=np.float32(1e-3))
    want = F.batch_norm(_torch(x), _torch(mean), _torch(var), _torch(gamma), _torch(beta), False, 0.0, 1e-3)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    if rank <= 4 and int(np.prod(shape[2:])) > 1:
        got = run1("instance_norm", x, gamma=gamma, beta=beta, epsilon=np.float32(1e-5))
        want = F.instance_norm(_torch(x), weight=_torch(gamma), bias=_torch(beta), eps=1e-5)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_local_response_norm_and_silu():
    r = np.random.default_rng(1)
    x = r.normal(size=(1, 7, 3, 3)).astype(np.float32)
    got = run1("local_response_norm", x, size=3, alpha=np.float32(1e-2), beta=np.float32(0.75), k=np.float32(2.0))
    np.testing.assert_allclose(got, F.local_response_norm(_torch(x), 3, 1e-2, 0.75, 2.0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(run1("silu", x), F.silu(_torch(x)).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode,grid", [
    # the grids of resize_bilinear's docstring for Xin = 2 (a [0, 1] ramp interpolates to the grid points)
    ("UNALIGN_CORNERS", [0.0, 0.1, 0.5, 0.9, 1.0]),
    ("STRICT_ALIGN_CORNERS", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("ALIGN_CORNERS", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("DEFAULT", [0.0, 0.4, 0.8, 1.0, 1.0]),
    ("OFFSET_CORNERS", [0.1, 0.3, 0.5, 0.7, 0.9]),
])
def test_resize_bilinear_sampling_modes(mode, grid):
    ramp = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)
    got = run1("resize_bilinear", ramp, target_size_height=1, target_size_width=5, sampling_mode=mode)
    np.testing.assert_allclose(got.reshape(-1), grid, atol=1e-6)


@FEW
@given(seed=seeds, sh=st.integers(1, 3), sw=st.integers(1, 3), align=st.booleans())
def test_upsampling_matches_torch(seed, sh, sw, align):
    x = np.random.default_rng(seed).normal(size=(1, 2, 3, 4)).astype(np.float32)
    got = run1("upsample_nearest_neighbor", x, scale_factor_height=sh, scale_factor_width=sw)
    np.testing.assert_array_equal(got, F.interpolate(_torch(x), scale_factor=(sh, sw), mode="nearest").numpy())
    got = run1("upsample_bilinear", x, scale_factor_height=float(sh), scale_factor_width=float(sw), align_corners=align)
    want = F.interpolate(_torch(x), scale_factor=(sh, sw), mode="bilinear", align_corners=align)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    got = run1("resize_bilinear", x, target_size_height=5, target_size_width=7,
               sampling_mode="STRICT_ALIGN_CORNERS" if align else "UNALIGN_CORNERS")
    want = F.interpolate(_torch(x), size=(5, 7), mode="bilinear", align_corners=align)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    got = run1("resize_nearest_neighbor", x, target_size_height=6, target_size_width=8)
    np.testing.assert_array_equal(got, F.interpolate(_torch(x), size=(6, 8), mode="nearest").numpy())


def test_upsample_bilinear_half_pixel_centers_ios16():
    x = np.random.default_rng(2).normal(size=(1, 1, 3, 3)).astype(np.float32)
    got = run1("upsample_bilinear", x, opset=IOS16, scale_factor_height=2.0, scale_factor_width=2.0,
               align_corners=False, half_pixel_centers=False)
    i = np.arange(6) * 0.5  # asymmetric grid: o · n_in / n_out
    lo, hi = np.floor(i).astype(int), np.minimum(np.floor(i).astype(int) + 1, 2)
    f = i - lo
    rows = x[0, 0][lo] * (1 - f)[:, None] + x[0, 0][hi] * f[:, None]
    want = rows[:, lo] * (1 - f)[None] + rows[:, hi] * f[None]
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-5, atol=1e-6)


def test_channel_space_rearrangements():
    r = np.random.default_rng(3)
    x = r.normal(size=(1, 8, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(run1("pixel_shuffle", x, upscale_factor=2), F.pixel_shuffle(_torch(x), 2).numpy())
    y = r.normal(size=(1, 2, 4, 6)).astype(np.float32)
    np.testing.assert_array_equal(run1("pixel_unshuffle", y, opset=IOS16, downscale_factor=np.uint32(2)),
                                  F.pixel_unshuffle(_torch(y), 2).numpy())
    got = run1("depth_to_space", x, block_size=2)  # TensorFlow (DCR) order
    b, c2 = 2, 2
    want = np.zeros((1, c2, 6, 4), np.float32)
    for c in range(c2):
        for i in range(b):
            for j in range(b):
                want[0, c, i::b, j::b] = x[0, (i * b + j) * c2 + c]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run1("space_to_depth", want, block_size=2), x)


def test_gather_nd_one_hot_windows_crop():
    r = np.random.default_rng(4)
    x = r.normal(size=(3, 4, 5)).astype(np.float32)
    idx = np.array([[0, 1], [2, 3], [1, 0]], np.int32)
    np.testing.assert_array_equal(run1("gather_nd", x, indices=idx), x[idx[:, 0], idx[:, 1]])
    np.testing.assert_array_equal(run1("gather_nd", x, opset=IOS16, indices=np.array([[1], [3]], np.int32)[None]
                                       .repeat(3, 0), batch_dims=1), np.stack([x[b][[1, 3]] for b in range(3)]))
    labels = np.array([0, 2, 3, 1], np.int32)
    got = run1("one_hot", labels, one_hot_vector_size=4, on_value=np.float32(5), off_value=np.float32(-1))
    np.testing.assert_array_equal(got, np.where(np.eye(4)[labels] > 0, 5, -1))
    got = run1("sliding_windows", x, axis=2, size=3, stride=2)
    np.testing.assert_array_equal(got, np.stack([x[:, :, 0:3], x[:, :, 2:5]], axis=2))
    img = r.normal(size=(1, 2, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(run1("crop", img, crop_height=[1, 2], crop_width=[0, 3]), img[..., 1:4, 0:4])


def test_same_padding_rule_is_tensorflow_s():
    """SAME keeps ceil(D/s) outputs: 7 inputs, kernel 4, stride 2 → 4 outputs, padding 1 before, 2 after."""
    assert _same_pads(7, 4, 2, 1, False) == (1, 2)
    assert _same_pads(7, 4, 2, 1, True) == (2, 1)
    assert math.ceil(7 / 2) == 4
