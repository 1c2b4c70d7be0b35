"""The predicted runner: reads an artifact's op table only (no conversion, rewrite or trace), deterministic."""

from __future__ import annotations

import time

import pytest

from hybridexport.bench import bench
from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.export import convert

from models import tiny


@pytest.fixture(scope="module")
def coreml(tmp_path_factory):
    [m] = convert(tiny(), to="coreml", out=tmp_path_factory.mktemp("pred"), verify_inputs=0)
    return m


def test_prediction_reads_the_op_table_and_is_deterministic(coreml, monkeypatch):
    import hybridexport.export.api as api
    import hybridexport.rewrite.pipeline as pipeline

    def forbidden(*a, **k):
        raise AssertionError("bench must not convert or rewrite again")

    monkeypatch.setattr(api, "convert", forbidden)
    monkeypatch.setattr(pipeline, "run_pipeline", forbidden)
    runner = get_runner("predicted")
    req = BenchRequest(device=load_device("iphone13"), manifest=coreml)
    prof, again = runner.run(req), runner.run(BenchRequest(device=load_device("iphone13"), manifest=coreml))
    assert [r.ms.median for r in prof.layers] == [r.ms.median for r in again.layers]
    assert prof.obtained == "predicted" and prof.format == "coreml" and prof.input_shapes == [[1, 3, 16, 16]]
    assert sum(r.ms.median for r in prof.layers) == pytest.approx(prof.total_ms.median, rel=1e-12)
    assert prof.total_ms.p10 <= prof.total_ms.median <= prof.total_ms.p90
    ops = [r for r in prof.layers if r.op_type != "overhead"]
    assert all(r.module for r in ops) and {r.module for r in ops} >= {"stem.conv", "body.conv", "head"}
    assert {r.module_source for r in ops} <= {"scope", "inherited"}
    assert prof.extra["heldout_error_pct"] > 0 and prof.extra["timings_s"]["predict_s"] < 1


def test_bench_on_an_existing_artifact_does_not_convert(coreml, monkeypatch):
    import hybridexport.export.api as api

    monkeypatch.setattr(api, "convert", lambda *a, **k: pytest.fail("converted again"))
    t0 = time.perf_counter()
    [p] = bench(coreml.path, device="iphone13")
    assert p.runner == "predicted" and time.perf_counter() - t0 < 30


def test_predicted_host_takes_the_format_its_model_reads(tmp_path):
    """`bench MODEL --runner predicted` on the host picks ONNX (what the host model predicts), not Core ML."""
    [p] = bench(tiny(), device="host", runner="predicted", out=tmp_path)
    assert p.format == "onnx" and p.runner == "predicted"
    assert [m.name for m in tmp_path.glob("*/*.onnx")] and not list(tmp_path.glob("*/*.mlpackage"))


def test_another_format_is_predicted_with_a_note(coreml):
    """A Core ML artifact on a phone calibrated on TFLite graphs: predicted, and the Profile says how far
    that is from like-with-like (and how to get there)."""
    p = get_runner("predicted").run(BenchRequest(device=load_device("pixel8"), manifest=coreml))
    assert p.format == "coreml" and p.obtained == "predicted" and p.total_ms.median > 0
    [note] = [n for n in p.notes if "calibrated on tflite graphs" in n]
    assert "--to tflite" in note
