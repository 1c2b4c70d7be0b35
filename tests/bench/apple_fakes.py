"""Test doubles for what only a Mac has, below coremltools: the Xcode tools and Core ML itself.

* :func:`fake_xcode` puts ``xcrun``, ``devicectl``, ``xcodebuild`` and ``sysctl`` stand-ins first on ``PATH``
  (the subprocess layer coremltools and hybridexport call; ``devicectl`` also plays the phone, see
  ``apple_fake_devicectl.py``), says "this is macOS 15.1" to hybridexport, and points coremltools at a
  stand-in ModelRunner project (its Linux wheel ships none).
* :func:`fake_coreml` replaces ``coremltools.libcoremlpython`` (the Core ML binding: compile, load,
  predict, model structure, compute plan). Everything above it is coremltools' real code: MLModel,
  MLModelBenchmarker, the async wrappers, the remote service and its socket, and the compute-plan
  proxy that maps ModelRunner's JSON to ``MLComputePlan`` (re-executed here with the stand-in binding,
  because coremltools defines it only when the binding imports).

Durations and compute plans are synthesized (``tests/data/apple/README.md``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import platform
import stat
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATA = HERE.parent / "data" / "apple"
BENCH_DATA = HERE.parent / "data" / "bench"

XCRUN = r'''#!{python} -S
import sys
args = sys.argv[1:]
if args[:1] == ["devicectl"]:
    sys.argv = [{devicectl!r}, *args[1:]]
    exec(compile(open({devicectl!r}).read(), {devicectl!r}, "exec"), {{"__name__": "__main__"}})
if args[:2] == ["--find", "devicectl"]:
    print({bindir!r} + "/devicectl")
    sys.exit(0)
print("xcrun: error: unable to find utility " + repr(args[0] if args else ""), file=sys.stderr)
sys.exit(72)
'''
DEVICECTL = '''#!{python} -S
exec(compile(open({devicectl!r}).read(), {devicectl!r}, "exec"), {{"__name__": "__main__"}})
'''
XCODEBUILD = r'''#!{python} -S
"""xcodebuild stand-in: logs its arguments and 'builds' ModelRunner.app under SYMROOT."""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_XCODE_LOG"], "a") as log:
    log.write(json.dumps(["xcodebuild", *args]) + "\n")
kv = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
app = Path(kv["SYMROOT"]) / "Release-iphoneos" / "modelrunner.app"
app.mkdir(parents=True, exist_ok=True)
(app / "bundle_id.txt").write_text(kv.get("PRODUCT_BUNDLE_IDENTIFIER", "com.coremltools.modelrunnerd"))
print("** BUILD SUCCEEDED **")
'''
SYSCTL = r'''#!{python} -S
import os, sys
values = {{"machdep.cpu.brand_string": os.environ.get("FAKE_CHIP", ""), "hw.model": os.environ.get("FAKE_MAC_MODEL", "")}}
print(values.get(sys.argv[-1], ""))
'''


@dataclass
class FakeXcode:
    """Where the stand-ins log and keep the device's files."""

    log: Path
    device_root: Path
    bindir: Path

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def _tool(bindir: Path, name: str, text: str) -> None:
    p = bindir / name
    p.write_text(text)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def fake_xcode(tmp_path: Path, monkeypatch: Any, devices: Path = BENCH_DATA / "devicectl_list_devices_iphone13_synthesized.json",
               details: Path = DATA / "devicectl_info_details_iphone13_synthesized.json", plan: Path | None = None,
               timings: dict[str, list[int]] | None = None, chip: str = "Apple M2", tools: tuple[str, ...] = (
                   "xcrun", "devicectl", "xcodebuild", "sysctl")) -> FakeXcode:
    """Xcode's tools, a phone behind devicectl, and macOS 15.1 as far as hybridexport can tell."""
    from coremltools.models.ml_program.experimental import remote_device

    from hybridexport.bench.runners import apple_devices

    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    devicectl = str(HERE / "apple_fake_devicectl.py")
    texts = {"xcrun": XCRUN, "devicectl": DEVICECTL, "xcodebuild": XCODEBUILD, "sysctl": SYSCTL}
    for name in tools:
        _tool(bindir, name, texts[name].format(python=sys.executable, devicectl=devicectl, bindir=str(bindir)))
    log, root = tmp_path / "xcode.log", tmp_path / "device"
    root.mkdir()
    timing_file = tmp_path / "timings.json"
    timing_file.write_text(json.dumps(timings or {"load_ns": [40_000_000], "predict_ns": [2_000_000]}))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_XCODE_LOG", str(log))
    monkeypatch.setenv("FAKE_DEVICE_ROOT", str(root))
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(devices))
    monkeypatch.setenv("FAKE_DEVICECTL_DETAILS", str(details))
    monkeypatch.setenv("FAKE_MODELRUNNER_TIMINGS", str(timing_file))
    monkeypatch.setenv("FAKE_CHIP", chip)
    monkeypatch.setenv("FAKE_MAC_MODEL", "Mac14,2")
    monkeypatch.setenv("HYBRIDEXPORT_MODELRUNNER_DIR", str(tmp_path / "modelrunner-cache"))
    for var in ("HYBRIDEXPORT_IOS_TEAM", "HYBRIDEXPORT_IOS_PROVISIONING_PROFILE", "HYBRIDEXPORT_IOS_BUNDLE_ID"):
        monkeypatch.delenv(var, raising=False)
    if plan is not None:
        monkeypatch.setenv("FAKE_MODELRUNNER_PLAN", str(plan))
    else:
        monkeypatch.delenv("FAKE_MODELRUNNER_PLAN", raising=False)
    project = tmp_path / "coremltools-modelrunner"
    (project / "ModelRunner.xcworkspace").mkdir(parents=True)
    monkeypatch.setattr(remote_device._ModelRunnerAppBuilder, "_get_project_path", staticmethod(lambda: project))
    monkeypatch.setattr(apple_devices, "is_macos", lambda: True)
    monkeypatch.setattr(apple_devices, "_listing", None)
    monkeypatch.setattr(platform, "mac_ver", lambda: ("15.1", ("", "", ""), "arm64"))
    return FakeXcode(log=log, device_root=root, bindir=bindir)


# ------------------------------------------------------------------ Core ML
def _metadata(spec: Any) -> list[dict[str, Any]]:
    """The ``metadata.json`` of a compiled model (the fields the fake app reads)."""
    def schema(features: Any) -> list[dict[str, Any]]:
        out = []
        for f in features:
            shape = list(f.type.multiArrayType.shape) if f.type.WhichOneof("Type") == "multiArrayType" else []
            out.append({"name": f.name, "type": "MultiArray", "shape": json.dumps([int(d) for d in shape])})
        return out

    return [{"inputSchema": schema(spec.description.input), "outputSchema": schema(spec.description.output),
             "specificationVersion": spec.specificationVersion}]


def _structure(spec: Any) -> Any:
    """The ``MLModelStructure`` Core ML would report for an ML Program spec."""
    from coremltools.models import compute_plan as cp

    def block(b: Any) -> Any:
        return cp.MLModelStructureProgramBlock(inputs=[], operations=[op(o) for o in b.operations],
                                               output_names=list(b.outputs))

    def op(o: Any) -> Any:
        return cp.MLModelStructureProgramOperation(
            inputs={}, operator_name=o.type, blocks=[block(b) for b in o.blocks], __proxy__=None,
            outputs=[cp.MLModelStructureProgramNamedValueType(name=v.name, type=None) for v in o.outputs])

    functions = {name: cp.MLModelStructureProgramFunction(inputs=[], block=block(f.block_specializations[f.opset]))
                 for name, f in spec.mlProgram.functions.items()}
    return cp.MLModelStructure(neuralnetwork=None, program=cp.MLModelStructureProgram(functions=functions), pipeline=None)


def fake_coreml(monkeypatch: Any, plan: Path | None, timings: dict[str, list[int]]) -> types.ModuleType:
    """Install a stand-in ``coremltools.libcoremlpython`` (Core ML) under coremltools' real Python layers."""
    import coremltools.models.compute_device as cd
    import coremltools.models.compute_plan as cp
    import coremltools.models.model as ct_model
    import coremltools.models.utils as ct_utils
    from coremltools.models.ml_program.experimental import compute_plan_utils as cpu
    from coremltools.models.ml_program.experimental.remote_device import ComputePlan

    loads, predicts = itertools.cycle(timings["load_ns"]), iter(timings["predict_ns"])

    class PlanProxy:
        pass

    class CPUProxy:
        pass

    class GPUProxy:
        pass

    class NEProxy:
        def get_total_core_count(self) -> int:
            return 16

    class ModelProxy:
        """Core ML's model object: compiles at load, predicts zeros, reports the synthesized durations."""

        def __init__(self, path: str, compute_units: str, function_name: str, hints: dict, asset: Any) -> None:
            self.spec = ct_utils.load_spec(path)
            self.compute_units = compute_units
            self.compiled = ModelProxy.compileModel(path)
            self.load_ns, self.last_ns = next(loads), None

        @staticmethod
        def maximum_supported_specification_version() -> int:
            return 10

        @staticmethod
        def compileModel(path: str) -> str:
            out = Path(tempfile.mkdtemp(prefix="fake-coreml-")) / (Path(path).stem + ".mlmodelc")
            out.mkdir()
            spec = ct_utils.load_spec(path)
            (out / "model.spec").write_bytes(spec.SerializeToString())
            (out / "metadata.json").write_text(json.dumps(_metadata(spec)))
            return str(out)

        @staticmethod
        def get_model_structure(compiled: str) -> Any:
            from coremltools.proto import Model_pb2

            spec = Model_pb2.Model()
            spec.ParseFromString((Path(compiled) / "model.spec").read_bytes())
            return _structure(spec)

        @staticmethod
        def get_compute_plan(compiled: str, compute_units: str) -> Any:
            if plan is None:
                raise RuntimeError("MLComputePlan is not available")
            data = json.loads(plan.read_text())
            proxy = fresh._MLComputePlanRemoteProxy(device=None, compute_plan=ComputePlan.from_dict(data),
                                                    model_structure=ModelProxy.get_model_structure(compiled))
            return cp.MLComputePlan(proxy=proxy)

        def predict(self, data: dict, state: Any = None) -> dict:
            import numpy as np

            self.last_ns = next(predicts)
            return {o.name: np.zeros([int(d) for d in o.type.multiArrayType.shape], dtype=np.float32)
                    for o in self.spec.description.output}

        def get_load_duration_in_nano_seconds(self) -> int:
            return self.load_ns

        def get_last_predict_duration_in_nano_seconds(self) -> int | None:
            return self.last_ns

        def get_compiled_model_path(self) -> str:
            return self.compiled

    lib = types.ModuleType("coremltools.libcoremlpython")
    lib._MLModelProxy, lib._MLComputePlanProxy = ModelProxy, PlanProxy
    lib._MLCPUComputeDeviceProxy, lib._MLGPUComputeDeviceProxy, lib._MLNeuralEngineComputeDeviceProxy = (
        CPUProxy, GPUProxy, NEProxy)
    monkeypatch.setitem(sys.modules, "coremltools.libcoremlpython", lib)
    monkeypatch.setattr(ct_model, "_MLModelProxy", ModelProxy)
    monkeypatch.setattr(cp, "_MLModelProxy", ModelProxy)
    monkeypatch.setattr(cp, "_MLComputePlanProxy", PlanProxy)
    monkeypatch.setattr(cd, "_MLCPUComputeDeviceProxy", CPUProxy)
    monkeypatch.setattr(cd, "_MLGPUComputeDeviceProxy", GPUProxy)
    monkeypatch.setattr(cd, "_MLNeuralEngineComputeDeviceProxy", NEProxy)
    monkeypatch.setattr(ct_utils, "_macos_version", lambda: (15, 1))
    # coremltools defines its remote compute-plan proxy only when the binding imports: run that module again
    monkeypatch.setattr(cp.MLComputePlan, "load_from_path_on_device", cp.MLComputePlan.load_from_path_on_device,
                        raising=False)
    spec = importlib.util.spec_from_file_location(cpu.__name__ + "_with_fake_binding", cpu.__file__)
    fresh = importlib.util.module_from_spec(spec)
    fresh.__package__ = cpu.__package__
    spec.loader.exec_module(fresh)
    monkeypatch.setattr(cpu, "_MLComputePlanRemoteProxy", fresh._MLComputePlanRemoteProxy)
    return lib


def copy_fixture(src: Path, dst: Path, **changes: Any) -> Path:
    """A copy of a devicectl JSON fixture with device fields changed (``tunnelState=...`` etc.)."""
    data = json.loads(src.read_text())
    devices = data["result"]["devices"] if "devices" in data.get("result", {}) else [data["result"]]
    for d in devices:
        for key, value in changes.items():
            for part in ("connectionProperties", "deviceProperties", "hardwareProperties"):
                if key in d.get(part, {}):
                    d[part][key] = value
    dst.write_text(json.dumps(data))
    return dst

