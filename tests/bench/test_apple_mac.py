"""mac-coreml: coremltools' MLModelBenchmarker on this Mac, with Core ML (libcoremlpython) stood in for."""

from __future__ import annotations

import importlib.util

import pytest
from apple_fakes import DATA, fake_coreml, fake_xcode

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest
from hybridexport.bench.runners.apple_coreml import MacCoreMLRunner
from hybridexport.errors import RunnerUnavailableError

PLAN = DATA / "modelrunner_compute_plan_placementnet_synthesized.json"
PREDICT_NS = [5_000_000, 4_000_000, 1_500_000, 1_600_000, 1_400_000]
TIMINGS = {"load_ns": [30_000_000, 8_000_000], "predict_ns": PREDICT_NS}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("placement_net", DATA / "placement_net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m, _, _ = mod.build_artifact(tmp_path_factory.mktemp("mac") / "placementnet")
    return m


def test_this_mac_with_the_neural_engine(manifest, tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, chip="Apple M2")
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    runner = MacCoreMLRunner().configure({})
    assert runner.availability(load_device("mac")) == (True, "")
    assert runner.availability(load_device("mac-m2")) == (True, "")
    p = runner.run(BenchRequest(device=load_device("mac-m2"), manifest=manifest, runs=3, warmup=2))
    assert (p.runner, p.obtained, p.device) == ("mac-coreml", "measured", "mac-m2")
    assert p.total_ms.samples == pytest.approx([1.5, 1.6, 1.4])
    assert p.extra["load_ms"]["samples"] == [30.0, 8.0]
    assert (p.environment["chip"], p.environment["device_model"], p.environment["os"]) == ("Apple M2", "Mac14,2",
                                                                                          "macOS 15.1")
    assert p.layer_total().samples == pytest.approx(p.total_ms.samples)
    mul = next(r for r in p.layers if r.op_type == "mul")
    assert (mul.module, mul.compute_unit) == ("groups", "cpu")
    assert p.extra["placement"]["agree"] == 7 and p.extra["placement"]["compared"]


def test_cpu_only_is_measured_but_not_compared(manifest, tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch)
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    import coremltools.models.model as ct_model

    seen = []
    real = ct_model._MLModelProxy

    class Spy(real):
        def __init__(self, path, compute_units, *rest):
            seen.append(compute_units)
            super().__init__(path, compute_units, *rest)

    monkeypatch.setattr(ct_model, "_MLModelProxy", Spy)
    p = MacCoreMLRunner().configure({"compute_units": "CPU_ONLY"}).run(
        BenchRequest(device=load_device("mac"), manifest=manifest, runs=2, warmup=0))
    assert set(seen) == {"CPU_ONLY"} and p.environment["compute_units"] == "CPU_ONLY"
    pl = p.extra["placement"]
    assert not pl["compared"] and pl["why_not_compared"] == (
        "compute units CPU_ONLY exclude the Neural Engine; the rules predict placement for ALL / CPU_AND_NE")


def test_a_generation_profile_on_another_chip(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, chip="Apple M2 Pro")
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    ok, why = MacCoreMLRunner().availability(load_device("mac-m1"))
    assert not ok and why == ("this Mac has an Apple M2 Pro; profile mac-m1 is for Apple M1, Apple M1 Pro, Apple M1 Max: "
                              "use --device mac-m2")
    with pytest.raises(RunnerUnavailableError, match="use --device mac-m2"):
        MacCoreMLRunner().run(BenchRequest(device=load_device("mac-m1"), manifest=None))
    monkeypatch.setenv("FAKE_CHIP", "Apple M1 Ultra")
    assert MacCoreMLRunner().availability(load_device("mac-m1"))[1].endswith("use --device mac")
