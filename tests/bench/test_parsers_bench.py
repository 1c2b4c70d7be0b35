"""Parsers of benchmarking-tool outputs, on recorded (and clearly marked synthesized) files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridexport.bench.parsers import (
    parse_benchmark_model,
    parse_devicectl_devices,
    parse_ort_trace,
)
from hybridexport.errors import InputFileError

DATA = Path(__file__).resolve().parents[1] / "data" / "bench"


def text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- benchmark_model


def test_older_layout_with_start_column_complete_output():
    out = parse_benchmark_model(text("benchmark_model_with_start_mobilenet_v1.txt"))
    assert out.layout == "with-start"
    assert len(out.rows) == 31 and out.nodes_executed == 31
    first = out.rows[0]
    assert first.node_type == "CONV_2D" and first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert first.start_ms == pytest.approx(0.066) and first.avg_ms == pytest.approx(60.957)
    assert first.tensor_names == ["MobilenetV1/MobilenetV1/Conv2d_0/Relu6"] and first.node_index == 0
    # the regular runs: count=50 ... avg=2.95034e+06 (µs, scientific notation)
    assert out.inference.count == 50 and out.inference.avg_us == pytest.approx(2.95034e6)
    assert out.profiled.avg_us == pytest.approx(2.9499e6)
    assert out.settings["Num threads"] == "4"
    assert out.init_ms == pytest.approx(17.187)
    # the rows' per-run time adds up to the reported avg (they are the whole model)
    assert sum(r.ms_per_run for r in out.rows) == pytest.approx(out.profiled.avg_us / 1000, rel=0.01)


def test_newer_layout_without_start_column_and_xnnpack_rows():
    out = parse_benchmark_model(text("benchmark_model_without_start_xnnpack_efficientdet_excerpt.txt"))
    assert out.layout == "without-start"
    assert out.rows[0].node_type == "QUANTIZE" and out.rows[0].start_ms is None
    dw = out.rows[2]
    assert dw.node_type == "Convolution (NHWC, QC8) DWConv" and dw.name == "Delegate/Convolution (NHWC, QC8) DWConv:1"
    assert dw.times_called == 13 and dw.ms_per_run == pytest.approx(13 * 0.051)
    assert dw.tensor_names == []
    post = next(r for r in out.rows if r.node_type == "TFLite_Detection_PostProcess")
    assert post.tensor_names[0] == "StatefulPartitionedCall:3" and post.node_index == 266
    # the regular run (count=64), not the warm-up (count=32) nor the init table (count=1)
    assert out.inference.count == 64 and out.inference.avg_us == pytest.approx(15517.6)
    assert out.inference.std_us == pytest.approx(551)
    assert out.nodes_executed == 171


@pytest.mark.parametrize("name, delegate", [
    ("benchmark_model_with_start_nnapi_deeplabv3.txt", "TfLiteNnapiDelegate"),
    ("benchmark_model_with_start_gpu_hexagon_multibranch.txt", "TfLiteGpuDelegateV2"),
])
def test_bare_tables_quoted_in_docs(name, delegate):
    """Authors quote only the table: it parses with require_total=False, and is refused as a full output."""
    out = parse_benchmark_model(text(name), require_total=False)
    assert out.layout == "with-start"
    assert any(r.node_type == delegate for r in out.rows)
    assert out.inference is None and out.profiled is None
    with pytest.raises(InputFileError, match="truncated|timings"):
        parse_benchmark_model(text(name))
    with pytest.raises(InputFileError, match="no run timings"):
        _ = out.total


def test_multi_tensor_names_of_a_delegate_partition():
    out = parse_benchmark_model(text("benchmark_model_with_start_gpu_hexagon_multibranch.txt"), require_total=False)
    gpu = next(r for r in out.rows if r.node_type == "TfLiteGpuDelegateV2")
    assert gpu.tensor_names == ["anynet/s1_gpu_b2_relu/Relu;anynet/s1_gpu_b2_add/add"]
    assert gpu.start_ms == pytest.approx(3.943)


@pytest.mark.parametrize("name", ["benchmark_model_with_start_tinynet_synthesized.txt",
                                  "benchmark_model_without_start_tinynet_synthesized.txt"])
def test_synthesized_tinynet_outputs_parse(name):
    out = parse_benchmark_model(text(name))
    assert len(out.rows) == 11 and out.total.count == 20


def test_no_op_profiling_section():
    body = text("benchmark_model_with_start_mobilenet_v1.txt").split("Operator-wise")[0]
    with pytest.raises(InputFileError, match="--enable_op_profiling=true"):
        parse_benchmark_model(body)


def test_truncated_mid_row_is_a_clear_error():
    t = text("benchmark_model_with_start_mobilenet_v1.txt")
    cut = t.index("[MobilenetV1/MobilenetV1/Conv2d_5_depthwise") - 40  # inside a row, before its name
    with pytest.raises(InputFileError, match="cannot read operator row|truncated"):
        parse_benchmark_model(t[:cut])


def test_truncated_after_header_and_empty_input():
    t = text("benchmark_model_without_start_xnnpack_efficientdet_excerpt.txt")
    head = t[: t.index("QUANTIZE            0.199")]
    with pytest.raises(InputFileError, match="no rows|truncated"):
        parse_benchmark_model(head.rsplit("\n", 1)[0] + "\n")
    with pytest.raises(InputFileError, match="empty"):
        parse_benchmark_model("   \n")
    with pytest.raises(InputFileError):
        parse_benchmark_model("Operator-wise Profiling Info for Regular Benchmark Runs:\n")


def test_garbage_columns_are_refused():
    bad = ("Operator-wise Profiling Info for Regular Benchmark Runs:\n=== Run Order ===\n"
           "\t[node type]\t[what]\t[Name]\n\tCONV_2D\t1\t[x]:0\n")
    with pytest.raises(InputFileError, match="unexpected operator-table columns"):
        parse_benchmark_model(bad)


# ----------------------------------------------------------------------------- devicectl


def test_devicectl_recorded_ipad():
    devs = parse_devicectl_devices(DATA / "devicectl_list_devices_qtcreator_ipad.json")
    assert len(devs) == 1
    d = devs[0]
    assert d.product_type == "iPad11,2" and d.marketing_name == "iPad mini (5th generation)"
    assert d.device_type == "iPad" and d.os_version == "17.3" and d.transport == "wired" and d.usable


def test_devicectl_synthesized_iphone13_and_unreachable_phone():
    devs = parse_devicectl_devices(DATA / "devicectl_list_devices_iphone13_synthesized.json")
    by_type = {d.product_type: d for d in devs}
    assert by_type["iPhone14,5"].usable and by_type["iPhone14,5"].marketing_name == "iPhone 13"
    assert not by_type["iPhone13,2"].usable  # tunnelState: unavailable


def test_devicectl_failure_names_the_error_chain():
    with pytest.raises(InputFileError, match="Connection was invalidated; Transport error"):
        parse_devicectl_devices(DATA / "devicectl_error_device_gone_qtcreator.json")


def test_devicectl_truncated_and_not_devicectl(tmp_path):
    t = (DATA / "devicectl_list_devices_qtcreator_ipad.json").read_text()
    p = tmp_path / "cut.json"
    p.write_text(t[: len(t) // 2])
    with pytest.raises(InputFileError, match="not valid JSON"):
        parse_devicectl_devices(p)
    with pytest.raises(InputFileError, match="no 'info'"):
        parse_devicectl_devices({"devices": []})
    with pytest.raises(InputFileError, match="result.devices"):
        parse_devicectl_devices({"info": {"outcome": "success"}, "result": {}})


# ----------------------------------------------------------------------------- onnxruntime trace


def test_ort_trace_recorded():
    tr = parse_ort_trace(DATA / "ort_trace_tinynet.json")
    assert len(tr.runs) == 3 and len(tr.run_us) == 3
    assert tr.nodes and all(n.provider == "CPUExecutionProvider" for n in tr.nodes.values())
    ops = {n.op_type for n in tr.nodes.values()}
    assert {"Conv", "Gelu", "Softmax"} <= ops
    for run, total in zip(tr.runs, tr.run_us):
        assert set(run) == set(tr.nodes)  # every node ran in every run
        assert 0 < sum(run.values()) <= total


def test_ort_trace_malformed(tmp_path):
    raw = (DATA / "ort_trace_tinynet.json").read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(raw[: len(raw) // 2])
    with pytest.raises(InputFileError, match="truncated"):
        parse_ort_trace(cut)
    events = json.loads(raw)
    with pytest.raises(InputFileError, match="no model_run"):
        parse_ort_trace([e for e in events if e.get("name") != "model_run"])
    with pytest.raises(InputFileError, match="no kernel"):
        parse_ort_trace([e for e in events if e.get("cat") != "Node"])
    broken = [dict(e) for e in events]
    k = next(i for i, e in enumerate(broken) if e.get("cat") == "Node")
    del broken[k]["dur"]
    with pytest.raises(InputFileError, match=f"event {k}"):
        parse_ort_trace(broken)
    with pytest.raises(InputFileError, match="JSON array"):
        p = tmp_path / "obj.json"
        p.write_text("{}")
        parse_ort_trace(p)
    with pytest.raises(InputFileError, match="does not exist"):
        parse_ort_trace(tmp_path / "missing.json")
