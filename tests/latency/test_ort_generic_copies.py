"""ONNX Runtime on a CPU copies rank >= 5 tensors on its generic N-d path (costmodel: ``_GENERIC_COPY_RANK``):
a transpose moving the innermost axis costs one ``row`` per element, a transpose feeding only slices runs no
kernel (pushed past them), and those slices copy at the relayout rate. Other devices keep the plain rules."""

from __future__ import annotations

import pytest

from hybridexport.latency.costmodel import MEMORY_GROUP, Design, DeviceSpec, params_from_theta, prior_theta
from hybridexport.latency.features import FeatureTable
from hybridexport.optable import OpRow

ORT_CPU = DeviceSpec(name="h", format="onnx", unit="cpu", precision="fp32", peak_macs=1e11, fallback_macs=1e11,
                     bandwidth=1e10)
PHONE = DeviceSpec(name="p", format="coreml", unit="ane", precision="fp16", peak_macs=1e12, fallback_macs=1e11,
                   bandwidth=1e10)
N, H, D = 196, 4, 32  # tokens, heads, head dim: qkv of (1, N, 3, H, D)
QKV = N * 3 * H * D


def qkv_split(perm_moves_inner: bool) -> FeatureTable:
    """linear → reshape (1, N, 3, H, D) → transpose (rank 5) → three slices → squeeze → matmul."""
    last = N if perm_moves_inner else D  # XCiT puts tokens innermost (2, 0, 3, 4, 1); ViT keeps D (2, 0, 3, 1, 4)
    ops = [
        OpRow("fc", "MatMul", "linear", macs=N * 128 * 384, w_elems=128 * 384, in_elems=N * 128, out_elems=QKV,
              rank=3, erank=2, max_dim=384, last_dim=384),
        OpRow("r", "Reshape", "relayout", in_elems=QKV, out_elems=QKV, rank=5, erank=4, max_dim=N, last_dim=D,
              inputs=["fc"]),
        OpRow("t", "Transpose", "transpose", in_elems=QKV, out_elems=QKV, rank=5, erank=4, max_dim=N, last_dim=last,
              inputs=["r"]),
    ]
    for k in range(3):
        ops.append(OpRow(f"s{k}", "Slice", "slice", in_elems=QKV, out_elems=QKV // 3, rank=5, erank=4, max_dim=N,
                         last_dim=last, inputs=["t"]))
    ops.append(OpRow("q", "Squeeze", "view", in_elems=QKV // 3, out_elems=QKV // 3, rank=4, erank=3, max_dim=N,
                     last_dim=last, inputs=["s0"]))
    ops.append(OpRow("mm", "MatMul", "matmul", macs=H * D * D * N, in_elems=2 * QKV // 3, out_elems=H * D * D,
                     rank=4, erank=3, max_dim=N, last_dim=D, inputs=["q", "s1"]))
    return FeatureTable(model="qkv", format="onnx", resolution=14, ops=ops)


def unfold(rank: int, moves_inner: bool) -> FeatureTable:
    """conv → reshape → transpose (``rank``) → reshape → conv: a patch unfold as MobileViT writes it."""
    elems = 64 * 32 * 32
    ops = [
        OpRow("c0", "Conv", "conv_pw", macs=elems * 64, w_elems=64 * 64, in_elems=elems, out_elems=elems, rank=4,
              erank=3, max_dim=64, last_dim=32),
        OpRow("r0", "Reshape", "relayout", in_elems=elems, out_elems=elems, rank=rank, erank=rank - 1, max_dim=64,
              last_dim=2, inputs=["c0"]),
        OpRow("t", "Transpose", "transpose", in_elems=elems, out_elems=elems, rank=rank, erank=rank - 1, max_dim=64,
              last_dim=64 if moves_inner else 2, inputs=["r0"]),
        OpRow("r1", "Reshape", "relayout", in_elems=elems, out_elems=elems, rank=4, erank=3, max_dim=256,
              last_dim=64, inputs=["t"]),
        OpRow("c1", "Conv", "conv_pw", macs=elems * 64, w_elems=64 * 64, in_elems=elems, out_elems=elems, rank=4,
              erank=3, max_dim=64, last_dim=32, inputs=["r1"]),
    ]
    return FeatureTable(model="unfold", format="onnx", resolution=32, ops=ops)


def test_transpose_moving_the_innermost_axis_at_rank_5_copies_element_by_element() -> None:
    for rank in (5, 6):
        moved, kept = Design([unfold(rank, True)], ORT_CPU), Design([unfold(rank, False)], ORT_CPU)
        assert moved.rows[2] == 64 * 32 * 32  # one row per element
        assert kept.rows[2] == 64 * 32 * 32 / 2  # rows of last_dim elements, as any copy
    low = Design([unfold(4, True)], ORT_CPU)  # rank 4: ONNX Runtime's blocked transposes, rows of last_dim
    assert low.rows[2] == 64 * 32 * 32 / 64
    theta = prior_theta(ORT_CPU)
    row = params_from_theta(theta)["row"]
    gap = Design([unfold(6, True)], ORT_CPU).op_times(theta)[2] - Design([unfold(6, False)], ORT_CPU).op_times(theta)[2]
    assert gap == pytest.approx(row * 64 * 32 * 32 / 2)
    phone = Design([unfold(6, True)], PHONE)
    assert phone.rows[2] == 0  # the rule is ONNX Runtime's, not the phone's


def test_transpose_feeding_only_slices_runs_no_kernel_and_the_slices_copy_strided() -> None:
    theta = prior_theta(ORT_CPU)
    p = params_from_theta(theta)
    vit = Design([qkv_split(perm_moves_inner=False)], ORT_CPU)
    assert vit.view[2] and vit.rows[2] == 0
    assert vit.op_times(theta)[2] == pytest.approx(p["dispatch"] * p["view"])
    assert all(vit.memg[3:6] == MEMORY_GROUP["relayout"])  # rank-5 slices: relayout rate
    xcit = Design([qkv_split(perm_moves_inner=True)], ORT_CPU)
    assert xcit.view[2] and xcit.rows[2] == QKV  # no kernel, but the element-by-element copy remains
    assert xcit.op_times(theta)[2] == pytest.approx(p["dispatch"] * p["view"] + p["row"] * QKV)
    phone = Design([qkv_split(perm_moves_inner=False)], PHONE)
    assert not phone.view[2] and all(phone.memg[3:6] == MEMORY_GROUP["slice"])


def test_a_transpose_with_any_other_consumer_still_runs() -> None:
    t = qkv_split(perm_moves_inner=False)
    t.ops.append(OpRow("use", "Mul", "eltwise", in_elems=QKV, out_elems=QKV, rank=5, erank=4, max_dim=N,
                       last_dim=D, inputs=["t"]))
    d = Design([t], ORT_CPU)
    assert not d.view[2] and d.rows[2] == QKV / D
    # a rank-4 transpose before slices is not pushed either (the generic path starts at rank 5)
    t4 = qkv_split(perm_moves_inner=False)
    t4.ops[2] = OpRow("t", "Transpose", "transpose", in_elems=QKV, out_elems=QKV, rank=4, erank=4, max_dim=N,
                      last_dim=D, inputs=["r"])
    assert not Design([t4], ORT_CPU).view[2]
