"""ios-coreml end to end: coremltools' real remote-device machinery against stand-in Xcode tools, phone and Core ML."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from apple_fakes import BENCH_DATA, DATA, copy_fixture, fake_coreml, fake_xcode

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest
from hybridexport.bench.runners.apple_coreml import IOSCoreMLRunner
from hybridexport.bench.runners.apple_devices import prepare_command
from hybridexport.export.manifest import Manifest, manifest_path

PLAN = DATA / "modelrunner_compute_plan_placementnet_synthesized.json"
WARMUP, RUNS = 3, 6
PREDICT_NS = [9_000_000 + 100_000 * i for i in range(WARMUP)] + [2_000_000 + 50_000 * i for i in range(RUNS)]
TIMINGS = {"load_ns": [41_000_000, 12_000_000], "predict_ns": PREDICT_NS}
TEAM = {"ios_team": "ABCDE12345"}


def _placement_net():
    spec = importlib.util.spec_from_file_location("placement_net", DATA / "placement_net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """``convert``-style output folder holding PlacementNet's package, manifest and op table."""
    root = tmp_path_factory.mktemp("out")
    _placement_net().build_artifact(root / "placementnet")
    return root


@pytest.fixture
def manifest(out_dir):
    return Manifest.load(next((out_dir / "placementnet").glob("*.mlpackage.json")))


def _requests(root: Path, method: str) -> list[dict]:
    """The ModelRunner request messages the phone received, of one method."""
    msgs = [json.loads(p.read_text()) for p in root.rglob("requests/messages/*/message.json")]
    return [m for m in msgs if m["method"] == method]


def _launched_app_gone(xcode, within_s: float = 5.0) -> bool:
    """The `devicectl device process launch --console` process coremltools started ends (within a few seconds)."""
    import subprocess
    import time

    deadline = time.monotonic() + within_s
    while True:
        ps = subprocess.run(["ps", "-eww", "-o", "stat=,args="], capture_output=True, text=True, check=True).stdout
        alive = [line for line in ps.splitlines() if "process launch" in line and str(xcode.bindir.parent) in line
                 and not line.lstrip().startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.2)


def test_full_run_on_an_attached_iphone(manifest, tmp_path, monkeypatch):
    xcode = fake_xcode(tmp_path, monkeypatch, plan=PLAN, timings=TIMINGS)
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    runner = IOSCoreMLRunner().configure({**TEAM, "compute_units": "CPU_AND_NE"})
    dev = load_device("iphone13")
    assert runner.availability(dev) == (True, "")
    p = runner.run(BenchRequest(device=dev, manifest=manifest, runs=RUNS, warmup=WARMUP))

    assert (p.runner, p.obtained, p.format, p.device) == ("ios-coreml", "measured", "coreml", "iphone13")
    assert p.total_ms.samples == pytest.approx([ns / 1e6 for ns in PREDICT_NS[WARMUP:]])  # warm-up runs dropped
    assert p.extra["load_ms"]["samples"] == [41.0, 12.0]
    env = p.environment
    assert (env["device_model"], env["os"], env["compute_units"], env["signing"]) == (
        "iPhone14,5", "iOS 17.5.1", "CPU_AND_NE", "team ABCDE12345")
    assert "estimates, not per-op timers" in p.method and p.notes == []
    # per op: the plan's cost × each measured prediction, module from the op table, unit from the plan
    plan = {i["path"]["components"][-1]["programOperation"]["data"]["outputName"]: i
            for i in json.loads(PLAN.read_text())["infos"]}
    rows = {r.name: r for r in p.layers}
    assert set(rows) == set(plan)
    for name, r in rows.items():
        assert r.ms.samples == pytest.approx([plan[name]["estimatedCost"] * s for s in p.total_ms.samples])
    assert p.layer_total().samples == pytest.approx(p.total_ms.samples)  # the synthesized costs add up to 1
    conv = next(r for r in p.layers if r.op_type == "conv")
    assert (conv.module, conv.module_source, conv.compute_unit) == ("stem", "op_table", "ane")  # conv+BN: the pair's parent
    assert {r.op_type: r.compute_unit for r in p.layers if r.op_type in ("reshape", "mul", "softmax")} == {
        "reshape": "ane", "mul": "cpu", "softmax": "gpu"}
    # placement: the plan beside the op table's static findings
    pl = p.extra["placement"]
    assert pl["compared"] and pl["static"] == {"ane": 9, "off-ane": 2, "unknown": 0} and pl["agree"] == 7
    assert [(d["op_type"], d["plan"], d["static"]) for d in pl["disagreements"]] == [
        ("reshape", "ane", "off-ane"), ("cast", "cpu", "ane"), ("softmax", "gpu", "ane"), ("cast", "cpu", "ane")]
    assert pl["by_unit"]["ane"] == {"ops": 7, "cost_share": 0.82}
    # what went to the phone: ModelRunner signed with the team, the model loaded with the compute units asked for
    build = [c for c in xcode.calls() if c[0] == "xcodebuild"]
    assert len(build) == 1 and "DEVELOPMENT_TEAM=ABCDE12345" in build[0] and "-allowProvisioningUpdates" in build[0]
    assert "PRODUCT_BUNDLE_IDENTIFIER=dev.hybridexport.modelrunner.abcde12345" in build[0]
    loads = _requests(xcode.device_root, "MLModelService.Load")
    assert len(loads) == 2 and {m["params"]["computeUnits"] for m in loads} == {"CPU_AND_NE"}
    assert len(_requests(xcode.device_root, "MLModelService.Prediction")) == WARMUP + RUNS
    assert len(_requests(xcode.device_root, "MLModelService.Unload")) == 2  # nothing left loaded
    assert _launched_app_gone(xcode)


def test_prepare_once_then_bench_reuses_the_build(manifest, tmp_path, monkeypatch):
    xcode = fake_xcode(tmp_path, monkeypatch, plan=PLAN, timings=TIMINGS)
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    said = prepare_command(load_device("iphone13"), TEAM)
    assert said == ("coremltools' ModelRunner (dev.hybridexport.modelrunner.abcde12345) is installed on iPhone 13 "
                    "'Bench iPhone 13' (iPhone14,5, iOS 17.5.1, connected), signed with team ABCDE12345; `hybridexport "
                    "bench --device iphone13` launches it")
    IOSCoreMLRunner().configure(TEAM).run(BenchRequest(device=load_device("iphone13"), manifest=manifest, runs=2,
                                                       warmup=0))
    calls = xcode.calls()
    assert sum(c[0] == "xcodebuild" for c in calls) == 1  # built once, for this signing identity
    assert sum(c[1:4] == ["device", "install", "app"] for c in calls) == 2


def test_ios_before_17_4_measures_totals_only(manifest, tmp_path, monkeypatch):
    devices = copy_fixture(BENCH_DATA / "devicectl_list_devices_iphone13_synthesized.json", tmp_path / "l.json",
                           osVersionNumber="17.2")
    details = copy_fixture(DATA / "devicectl_info_details_iphone13_synthesized.json", tmp_path / "d.json",
                           osVersionNumber="17.2")
    xcode = fake_xcode(tmp_path, monkeypatch, devices=devices, details=details, plan=PLAN, timings=TIMINGS)
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    p = IOSCoreMLRunner().configure(TEAM).run(BenchRequest(device=load_device("iphone13"), manifest=manifest,
                                                           runs=2, warmup=1))
    assert p.notes == ["iPhone 13 'Bench iPhone 13' (iPhone14,5) runs iOS 17.2: Core ML's compute "
                       "plan (per-op rows, placement) needs iOS 17.4+; only end-to-end times were measured"]
    assert [(r.name, r.module) for r in p.layers] == [("prediction", "<root>")]
    assert p.layers[0].ms.samples == p.total_ms.samples and "placement" not in p.extra
    assert not _requests(xcode.device_root, "MLModelService.ComputePlan")


def test_app_without_a_compute_plan_keeps_the_timed_runs(manifest, tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, plan=None, timings=TIMINGS)
    fake_coreml(monkeypatch, None, TIMINGS)
    p = IOSCoreMLRunner().configure(TEAM).run(BenchRequest(device=load_device("iphone13"), manifest=manifest,
                                                           runs=2, warmup=1))
    assert p.total_ms.samples == pytest.approx([ns / 1e6 for ns in PREDICT_NS[1:3]])
    assert p.notes == ["Core ML returned no compute plan (_DeviceCtlError: [Error Code -32001] Unsupported request: "
                       "MLComputePlan is not supported on this platform.): only end-to-end times"]
    assert len(p.layers) == 1 and p.layers[0].op_type == "whole model"


def test_package_without_op_table_runs_the_rules_on_it(out_dir, tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, plan=PLAN, timings=TIMINGS)
    fake_coreml(monkeypatch, PLAN, TIMINGS)
    src = next((out_dir / "placementnet").glob("*.mlpackage"))
    pkg = tmp_path / "bare" / src.name
    shutil.copytree(src, pkg)
    m = Manifest.load(manifest_path(src))
    m.path = str(pkg)
    p = IOSCoreMLRunner().configure(TEAM).run(BenchRequest(device=load_device("iphone13"), manifest=m, runs=2,
                                                           warmup=0))
    assert p.notes == ["placementnet carries no nn.Module paths (no op table written by `hybridexport convert` beside "
                       "it): rows keep Core ML's op names"]
    assert all(r.module == "" and r.module_source == "" for r in p.layers)
    pl = p.extra["placement"]  # the op table read from the package: the rules ran on it
    assert pl["static_source"] == "the op table's Neural Engine findings"
    assert pl["static"] == {"ane": 9, "off-ane": 2, "unknown": 0} and len(pl["disagreements"]) == 4


def test_bench_on_linux_predicts_and_says_what_a_measurement_needs(out_dir, capsys):
    from hybridexport.cli import main

    assert main(["bench", "--device", "iphone13", "--out", str(out_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "iphone13 · predicted (predicted)" in out
    assert ("not measured: ios-coreml: measuring on an iPhone needs macOS with Xcode 15+ (this is "
            f"{__import__('platform').system()})") in out

