"""The ios-xcode runner: a clear message on Linux, and a full run against a fake `xcrun devicectl`."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from hybridexport.bench.devices import load_device
from hybridexport.bench.mapping import ROOT
from hybridexport.bench.parsers import parse_compute_plan
from hybridexport.bench.runners import BenchRequest, ios_xcode
from hybridexport.bench.runners.ios_xcode import IOSXcodeRunner, plan_rows
from hybridexport.export.manifest import Manifest, Parity

DATA = Path(__file__).parent / "data" / "bench"

FAKE_XCRUN = r'''#!{python}
"""Fake xcrun devicectl: list devices from a recorded file, accept copies/launch, return a recorded result."""
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_XCRUN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:3] == ["devicectl", "list", "devices"]:
    shutil.copy(os.environ["FAKE_DEVICECTL_LIST"], args[args.index("--json-output") + 1])
elif args[:4] == ["devicectl", "device", "copy", "from"]:
    shutil.copy(os.environ["FAKE_IOS_RESULT"], args[args.index("--destination") + 1])
elif args[:4] in (["devicectl", "device", "copy", "to"], ["devicectl", "device", "process", "launch"]):
    pass
else:
    print("unexpected: " + " ".join(args), file=sys.stderr)
    sys.exit(1)
'''


def _tinynet():
    spec = importlib.util.spec_from_file_location("tinynet", DATA / "tinynet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Loaded:
    """The slice of LoadedModel the runner uses (module + example input)."""

    def __init__(self) -> None:
        mod = _tinynet()
        self.module, self._x, self.name = mod.build(), mod.example(), "tinynet"

    def example_input(self):
        return self._x


@pytest.fixture
def fake_xcrun(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    x = bindir / "xcrun"
    x.write_text(FAKE_XCRUN.format(python=sys.executable))
    x.chmod(x.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_XCRUN_LOG", str(tmp_path / "xcrun.log"))
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(DATA / "devicectl_list_devices_iphone13_synthesized.json"))
    monkeypatch.setenv("FAKE_IOS_RESULT", str(DATA / "ios_bench_result_tinynet_synthesized.json"))
    monkeypatch.setenv("HYBRIDEXPORT_IOS_BENCH_APP", "org.example.coremlbench")
    monkeypatch.setattr(ios_xcode, "is_macos", lambda: True)
    return tmp_path / "xcrun.log"


def _manifest(tmp_path: Path) -> Manifest:
    pkg = tmp_path / "tinynet.fp16.mlpackage"
    pkg.mkdir()
    return Manifest(model="tinynet", resolution=32, format="coreml", precision="fp16", path=str(pkg), size_bytes=0,
                    sha256="1" * 64, versions={}, passes=[], parity=Parity(verified=False), ops={}, rank5_tensors=0,
                    seconds=0.0)


def test_linux_says_what_is_needed(monkeypatch):
    monkeypatch.setattr(ios_xcode, "is_macos", lambda: False)
    ok, why = IOSXcodeRunner().availability(load_device("iphone13"))
    assert not ok and why.startswith("needs macOS with Xcode 15+ (this is ")


def test_full_run_through_devicectl(fake_xcrun, tmp_path):
    runner = IOSXcodeRunner().configure({})
    dev = load_device("iphone13")
    assert runner.availability(dev) == (True, "")
    req = BenchRequest(device=dev, manifest=_manifest(tmp_path), model=_Loaded(), runs=10, warmup=3)
    p = runner.run(req)
    assert p.runner == "ios-xcode" and p.obtained == "measured" and p.format == "coreml"
    assert p.total_ms.n == 10 and p.total_ms.median == pytest.approx(0.2055)
    assert p.environment["device_model"] == "iPhone14,5" and p.environment["ios"] == "17.5.1"
    mods = {r.name: r.module for r in p.layers}
    assert mods["_native_batch_norm_legit_no_training_cast_fp16"] == "stem"  # conv named after its folded BN
    assert mods["_native_batch_norm_legit_no_training_1_cast_fp16"] == "body"
    assert mods["gelu_cast_fp16"] == "stem.act" and mods["linear_0_cast_fp16"] == "head"
    assert mods["softmax"] == ROOT
    assert {r.compute_unit for r in p.layers} == {"ane", "cpu"}
    # estimated cost × each run: the rows add up to the measured runs
    assert p.layer_total().median == pytest.approx(p.total_ms.median, rel=1e-3)
    calls = [json.loads(x) for x in fake_xcrun.read_text().splitlines()]
    launch = next(c for c in calls if c[:4] == ["devicectl", "device", "process", "launch"])
    assert "org.example.coremlbench" in launch and launch[launch.index("--runs") + 1] == "10"
    assert launch[launch.index("--compute-units") + 1] == "ALL"
    copy_to = next(c for c in calls if c[:4] == ["devicectl", "device", "copy", "to"])
    assert copy_to[copy_to.index("--domain-identifier") + 1] == "org.example.coremlbench"


def test_no_matching_iphone(fake_xcrun, monkeypatch):
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(DATA / "devicectl_list_devices_qtcreator_ipad.json"))
    ok, why = IOSXcodeRunner().availability(load_device("iphone13"))
    assert not ok and "no iPhone 13 attached" in why and "iPad mini (5th generation)" in why
    ok, why = IOSXcodeRunner().availability(load_device("iphone12"))  # listed, but unreachable
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(DATA / "devicectl_list_devices_iphone13_synthesized.json"))
    ok, why = IOSXcodeRunner().availability(load_device("iphone12"))
    assert not ok and "iPhone 12 (unavailable)" in why


def test_no_app_configured(fake_xcrun, monkeypatch):
    monkeypatch.delenv("HYBRIDEXPORT_IOS_BENCH_APP")
    ok, why = IOSXcodeRunner().availability(load_device("iphone13"))
    assert not ok and "--ios-app" in why


def test_plan_rows_without_source_model():
    plan = parse_compute_plan(DATA / "coreml_compute_plan_tinynet_synthesized.json")
    rows = plan_rows(plan, [1.0, 2.0], {})
    assert len(rows) == 10 and all(r.module == "" for r in rows)
    assert sum(r.ms.samples[1] for r in rows) == pytest.approx(2.0, rel=1e-3)


def test_compute_plan_dump_from_coremltools_objects():
    """compute_plan_dump walks coremltools' MLComputePlan API (faked here: it needs macOS)."""
    from types import SimpleNamespace as NS

    from hybridexport.bench.parsers.compute_plan import parse_compute_plan
    from hybridexport.bench.runners.ios_xcode import compute_plan_dump

    class MLNeuralEngineComputeDevice:  # the names coremltools uses
        pass

    class MLCPUComputeDevice:
        pass

    conv = NS(operator_name="ios17.conv", outputs=[NS(name="conv_0_cast_fp16")], blocks=[])
    const = NS(operator_name="ios17.const", outputs=[NS(name="w")], blocks=[])
    usage = {id(conv): NS(preferred_compute_device=MLNeuralEngineComputeDevice(),
                          supported_compute_devices=[MLCPUComputeDevice(), MLNeuralEngineComputeDevice()])}
    plan = NS(
        model_structure=NS(program=NS(functions={"main": NS(block=NS(operations=[const, conv]))})),
        get_compute_device_usage_for_mlprogram_operation=lambda op: usage.get(id(op)),
        get_estimated_cost_for_mlprogram_operation=lambda op: NS(weight=1.0) if op is conv else None,
    )
    parsed = parse_compute_plan(compute_plan_dump(plan))
    assert [(o.operator, o.preferred_device, o.estimated_cost) for o in parsed.operations] == [
        ("ios17.const", "", None), ("ios17.conv", "ane", 1.0)]
    assert parsed.operations[1].supported_devices == ["cpu", "ane"]
