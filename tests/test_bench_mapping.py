"""Module-path mapping helpers and the Profile aggregation used by compare."""

from __future__ import annotations

import json

import pytest

from hybridexport.bench.mapping import (
    ROOT,
    align,
    aligned_modules,
    aten_kind,
    common_module,
    is_xnnpack_op,
    litert_location_paths,
    litert_module,
    module_from_name_scopes,
    module_from_stack,
    xnn_base,
    xnn_kinds,
)
from hybridexport.bench.profile import LayerRow, Profile, Stats, aggregate_by_module


def test_litert_names():
    name = ("__main__.TinyNet/__main__.Block_body/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
            "__main__.TinyNet/__main__.Block_stem/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
            "__main__.TinyNet/__main__.Block_body/torch.nn.modules.conv.Conv2d_conv;2")
    assert litert_location_paths(name) == ["body.bn", "stem.bn", "body.conv"]
    assert litert_module(name) == "body"  # the op's own location, widened by its folded BN only
    assert litert_module("__main__.TinyNet/torch.nn.modules.dropout.Dropout_head_drop;") == "head_drop"
    assert litert_module("__main__.TinyNet;3") == ROOT
    assert litert_module("MobilenetV1/MobilenetV1/Conv2d_0/Relu6") == ""  # a TF name scope, not a location
    assert litert_module("serving_default_output_0_output") == ""
    odd = "m.Net/m.Odd_Class_stage_one/torch.nn.modules.conv.Conv2d_c;"
    assert litert_module(odd) == "Class_stage_one.c"
    assert litert_module(odd, known={"", "stage_one", "stage_one.c"}) == "stage_one.c"  # split fixed by known paths
    assert litert_module(odd, known={"", "other"}) == ROOT  # unknown paths are cut back


def test_onnx_name_scopes_and_export_stacks():
    assert module_from_name_scopes(["", "stem", "stem.conv1", "stem.conv1.bn", "_native_batch_norm"]) == "stem.conv1.bn"
    assert module_from_name_scopes(["", "mean"]) == ROOT
    stack = {"L__self__": ("", "M"), "L__self___stem": ("stem", "Blk"), "x": ("stem.conv", "Conv2d")}
    assert module_from_stack(stack) == "stem.conv"
    assert module_from_stack({"L__self__": ("", "M")}) == ROOT
    assert module_from_stack(None) == ""


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
