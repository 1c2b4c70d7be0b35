"""Aligning runtime rows with graph ops, and the Profile aggregation used by compare."""

from __future__ import annotations

import json

import pytest

from hybridexport.bench.mapping import align, aligned_modules, aten_kind, is_xnnpack_op, xnn_base, xnn_kinds
from hybridexport.bench.profile import LayerRow, Profile, Stats, aggregate_by_module
from hybridexport.modpath import ROOT, common_module


def test_kinds():
    assert aten_kind("aten.convolution.default") == "conv" and aten_kind("aten.linear.default") == "matmul"
    assert aten_kind("dim_order_ops._clone_dim_order.default") == "transpose"
    assert xnn_base("Delegate/Convolution (NHWC, QC8) DWConv:14") == "convolution"
    assert xnn_base("Fully Connected (NC, F32) GEMM #3") == "fully connected"
    assert xnn_kinds("Fully Connected (NC, F32) GEMM #3") == {"matmul", "conv"}
    assert is_xnnpack_op("Delegate/Add (ND, QS8):9") and is_xnnpack_op("GELU (NC) #1")
    assert not is_xnnpack_op("[tfl.quantize]:0") and not is_xnnpack_op("native_call_mean.out")


def test_align_pairs_in_order_and_never_jumps_blocks():
    graph = ["conv", "batchnorm", "gelu", "conv", "batchnorm", "add", "conv", "matmul", "transpose", "softmax"]
    runtime = [{"transpose"}, {"conv"}, {"gelu"}, {"matmul", "conv"}, {"add"}, {"conv"}, {"matmul"}, {"softmax"}]
    m = align(runtime, graph)
    assert m == [None, 0, 2, 3, 5, 6, 7, 9]
    # a delegate-inserted transpose must not jump to the transpose far ahead (past conv/add/conv/matmul)
    assert align([{"transpose"}, {"conv"}], graph) == [None, 0]
    mods = aligned_modules(m + [None], [f"m{i}" for i in range(len(graph))])
    assert mods[0] == "m0" and mods[-1] == "m9"  # inserted ops: next op's module, trailing ones: previous


def test_common_module():
    assert common_module(["a.b.c", "a.b.d"]) == "a.b"
    assert common_module(["a.b", "c"]) == ROOT
    assert common_module(["", ""]) == ""
    assert common_module([ROOT, "a"]) == "a"


def _row(name, module, samples, unit="cpu"):
    return LayerRow(name=name, op_type="Conv", module=module, compute_unit=unit, ms=Stats.from_samples(samples))


def test_aggregate_by_module_sums_runs():
    rows = [_row("a", "stages.0.blocks.0.conv", [1, 2, 3]), _row("b", "stages.0.blocks.1.conv", [1, 1, 1]),
            _row("c", "stages.1.blocks.0.conv", [5, 5, 5], "gpu"), _row("d", "", [1, 1, 1])]
    agg = {r.module or r.name: r for r in aggregate_by_module(rows, depth=2)}
    assert agg["stages.0"].ms.samples == [2, 3, 4] and agg["stages.0"].ms.median == 3
    assert agg["stages.1"].compute_unit == "gpu"
    assert agg["d"].module == ""  # unmapped rows stay apart
    p = Profile(model="m", format="onnx", device="host", runner="x", obtained="measured",
                total_ms=Stats.from_samples([9, 10, 11]), layers=rows)
    assert p.layer_total().samples == [8, 9, 10] and p.coverage() == pytest.approx(0.9)
    assert [r.module for r in p.by_module(1)] == ["stages", ""]


def test_profile_round_trip(tmp_path):
    p = Profile(model="m", format="onnx", device="host", runner="x", obtained="measured",
                total_ms=Stats.from_samples([1.0, 2.0]), layers=[_row("a", "x", [1.0, 2.0])], method="m")
    p.fill_shares()
    path = p.save(tmp_path / "p.json")
    q = Profile.load(path)
    assert q.to_dict() == json.loads(path.read_text())
