"""A connected iPhone through Xcode's ``devicectl``: Core ML timing on the phone, per-op data from MLComputePlan.

Needs macOS with Xcode 15+ (``xcrun devicectl``), a phone matching the device profile
(``match.product_types``, e.g. ``iPhone14,5`` for iPhone 13) with Developer Mode on, and a small
benchmark app installed on it, named by ``--ios-app BUNDLE_ID`` or ``$HYBRIDEXPORT_IOS_BENCH_APP``.
The app's contract (any app that honours it works):

* launched as ``BUNDLE -- --model <path> --runs N --warmup W --compute-units ALL --out <path>``
  (paths relative to its data container);
* loads the model with ``MLModelConfiguration.computeUnits``, runs ``prediction(from:)`` W times
  untimed then N times timed, and (iOS 17.4+) reads ``MLComputePlan`` for every ML Program
  operation: preferred device, supported devices, estimated cost;
* writes ``{"format": "hybridexport.ios-bench-result", "version": 1, "runs_ms": [...],
  "device": {...}, "compute_units": "ALL", "load_ms": ..., "compute_plan": {compute-plan dump}}``
  (see :mod:`hybridexport.bench.parsers.compute_plan`) and exits.

A run is then::

    xcrun devicectl list devices --json-output LIST.json
    xcrun devicectl device copy to --device ID --domain-type appDataContainer --domain-identifier BUNDLE \\
        --source model.mlpackage --destination Documents/hybridexport/model.mlpackage
    xcrun devicectl device process launch --device ID --terminate-existing --console BUNDLE -- --model ...
    xcrun devicectl device copy from --device ID --domain-type appDataContainer --domain-identifier BUNDLE \\
        --source Documents/hybridexport/result.json --destination RESULT.json

When the app sends no compute plan (iOS before 17.4), the plan of the same model on the Mac is
used instead (:func:`mac_compute_plan`: coremltools compiles the ``.mlpackage`` and loads
``ct.models.compute_plan.MLComputePlan``); the profile's notes say so.

Rows: one per compute-plan operation with a cost; its time is ``estimated_cost × measured run``
(Core ML gives relative costs, not per-op times — ``method`` says so), its compute unit the
preferred device, its module the source FX node that coremltools named the op after.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hybridexport.bench.parsers.compute_plan import ComputePlan, IOSResult, parse_ios_result
from hybridexport.bench.parsers.devicectl import IOSDevice, parse_devicectl_devices
from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import artifact
from hybridexport.errors import RunnerUnavailableError
from hybridexport.modpath import ROOT
from hybridexport.modpath import from_module_stack as module_from_stack

REMOTE_DIR = "Documents/hybridexport"
_CAST = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32)$")


def is_macos() -> bool:
    return platform.system() == "Darwin"


def app_bundle(options: dict[str, Any]) -> str | None:
    return options.get("ios_app") or os.environ.get("HYBRIDEXPORT_IOS_BENCH_APP") or None


def xcrun(*args: str, timeout: float = 600.0) -> str:
    exe = shutil.which("xcrun")
    if not exe:
        raise RunnerUnavailableError("xcrun not found: install Xcode 15+ and run `xcode-select --install`")
    try:
        res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RunnerUnavailableError(f"`xcrun {' '.join(args[:3])}` timed out after {timeout:.0f} s") from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise RunnerUnavailableError(f"`xcrun {' '.join(args[:3])}` failed: {msg[-1] if msg else res.returncode}")
    return res.stdout


def list_devices() -> list[IOSDevice]:
    with tempfile.TemporaryDirectory(prefix="hx-devicectl-") as td:
        out = Path(td) / "devices.json"
        xcrun("devicectl", "list", "devices", "--json-output", str(out), timeout=60)
        return parse_devicectl_devices(out)


def node_modules(loaded: Any) -> dict[str, str]:
    """FX node name → module path of the source model's exported graph (what coremltools names ops after)."""
    import torch

    ep = torch.export.export(loaded.module.eval(), (loaded.example_input(),)).run_decompositions({})
    out = {}
    for n in ep.graph.nodes:
        if n.op == "call_function":
            mod = module_from_stack(n.meta.get("nn_module_stack"))
            if "batch_norm" in str(n.target) and "." in mod:
                mod = mod.rsplit(".", 1)[0]  # conv+BN: Core ML's conv is named after the BN node
            out[n.name] = mod
    return out


def _device_name(dev: Any) -> str | None:
    """coremltools compute-device object → "CPU" / "GPU" / "NeuralEngine"."""
    if dev is None:
        return None
    name = type(dev).__name__  # MLCPUComputeDevice, MLGPUComputeDevice, MLNeuralEngineComputeDevice
    for key, out in (("NeuralEngine", "NeuralEngine"), ("GPU", "GPU"), ("CPU", "CPU")):
        if key in name:
            return out
    return None


def compute_plan_dump(plan: Any, compute_units: str = "ALL", function: str = "main") -> dict[str, Any]:
    """A ``hybridexport.coreml-compute-plan`` dump from a coremltools ``MLComputePlan`` (any object with its API)."""
    program = plan.model_structure.program
    if program is None:
        raise RunnerUnavailableError("the compute plan is not an ML Program's (convert with convert_to='mlprogram')")
    ops = []

    def walk(block: Any) -> None:
        for op in block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            cost = plan.get_estimated_cost_for_mlprogram_operation(op)
            ops.append({
                "operator": op.operator_name,
                "outputs": [o.name for o in op.outputs],
                "preferred_device": _device_name(usage.preferred_compute_device) if usage else None,
                "supported_devices": [d for d in (_device_name(x) for x in (usage.supported_compute_devices if usage else []))
                                      if d],
                "estimated_cost": None if cost is None else float(cost.weight),
            })
            for inner in getattr(op, "blocks", []) or []:
                walk(inner)

    walk(program.functions[function].block)
    return {"format": "hybridexport.coreml-compute-plan", "version": 1, "compute_units": compute_units, "operations": ops}


def mac_compute_plan(model: Path, compute_units: str = "ALL") -> dict[str, Any]:
    """The compute plan of ``model`` on this Mac (coremltools, macOS 14.4+): compile, load MLComputePlan, dump."""
    if not is_macos():
        raise RunnerUnavailableError(f"MLComputePlan needs macOS (this is {platform.system()})")
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    compiled = ct.models.MLModel(str(model), compute_units=getattr(ct.ComputeUnit, compute_units)).get_compiled_model_path()
    plan = MLComputePlan.load_from_path(compiled, compute_units=getattr(ct.ComputeUnit, compute_units))
    return compute_plan_dump(plan, compute_units)


def plan_rows(plan: ComputePlan, result_runs: list[float], modules: dict[str, str]) -> list[LayerRow]:
    """Rows from a compute plan: cost × each measured run, preferred device, module via the op's output name."""
    rows = []
    for op in plan.operations:
        if op.estimated_cost is None or op.operator.endswith("const"):
            continue
        name = op.name
        base = _CAST.sub("", name)  # coremltools: "<fx node>[_<output index>][_cast_fp16]"
        module = next((modules[c] for c in (name, base, re.sub(r"_\d+$", "", base)) if c in modules), "")
        rows.append(LayerRow(name=name, op_type=op.operator, module=module, compute_unit=op.preferred_device or "?",
                             ms=Stats.from_samples([op.estimated_cost * r for r in result_runs])))
    return rows


class IOSXcodeRunner(Runner):
    name = "ios-xcode"
    formats = ("coreml",)

    def _find(self, device: Any) -> IOSDevice:
        if device.kind != "ios":
            raise RunnerUnavailableError(f"serves iPhones only ('{device.name}' is {device.kind})")
        if not is_macos():
            raise RunnerUnavailableError(f"needs macOS with Xcode 15+ (this is {platform.system()})")
        devices = list_devices()
        wanted = set(device.match.get("product_types", []))
        usable = [d for d in devices if d.usable and d.device_type in ("iPhone", "")]
        hits = [d for d in usable if d.product_type in wanted]
        if not hits:
            seen = ", ".join(f"{d.marketing_name or d.product_type} ({d.tunnel_state})" for d in devices) or "none"
            raise RunnerUnavailableError(f"no {device.display_name} attached (devicectl lists: {seen})")
        return hits[0]

    def availability(self, device: Any) -> tuple[bool, str]:
        try:
            self._find(device)
        except RunnerUnavailableError as exc:
            return False, str(exc)
        if not app_bundle(self.options):
            return False, ("no benchmark app: install one on the phone and pass --ios-app BUNDLE_ID or set "
                           "HYBRIDEXPORT_IOS_BENCH_APP (see hybridexport/bench/runners/ios_xcode.py)")
        return True, ""

    def run(self, request: BenchRequest) -> Profile:
        self.configure({**self.options, **request.options})
        phone = self._find(request.device)
        bundle = app_bundle(self.options)
        if not bundle:
            raise RunnerUnavailableError("no benchmark app: pass --ios-app BUNDLE_ID or set HYBRIDEXPORT_IOS_BENCH_APP")
        model = artifact(request, "coreml")
        units = str(request.device.protocol.get("compute_units", "ALL"))
        remote_model, remote_out = f"{REMOTE_DIR}/{model.name}", f"{REMOTE_DIR}/result.json"
        container = ["--device", phone.identifier, "--domain-type", "appDataContainer", "--domain-identifier", bundle]
        xcrun("devicectl", "device", "copy", "to", *container, "--source", str(model), "--destination", remote_model)
        xcrun("devicectl", "device", "process", "launch", "--device", phone.identifier, "--terminate-existing",
              "--console", bundle, "--", "--model", remote_model, "--runs", str(request.runs),
              "--warmup", str(request.warmup), "--compute-units", units, "--out", remote_out)
        with tempfile.TemporaryDirectory(prefix="hx-ios-") as td:
            local = Path(td) / "result.json"
            xcrun("devicectl", "device", "copy", "from", *container, "--source", remote_out, "--destination", str(local))
            result = parse_ios_result(local)
        return self.profile_from_result(result, request, phone)

    def profile_from_result(self, result: IOSResult, request: BenchRequest, phone: IOSDevice | None) -> Profile:
        notes = []
        if result.plan is None and request.manifest is not None and is_macos():
            try:  # the app had no MLComputePlan (iOS < 17.4): take this Mac's plan of the same model
                from hybridexport.bench.parsers.compute_plan import parse_compute_plan

                units = str(request.device.protocol.get("compute_units", "ALL"))
                result.plan = parse_compute_plan(mac_compute_plan(Path(request.manifest.path), units))
                notes.append("per-op costs and preferred units come from this Mac's MLComputePlan of the model "
                             "(the phone sent none): op costs are relative, unit choices may differ on the phone")
            except Exception as exc:  # noqa: BLE001 - best effort; the end-to-end row stays
                notes.append(f"no compute plan: {type(exc).__name__}: {exc}")
        modules: dict[str, str] = {}
        if result.plan is not None:
            try:
                from hybridexport.bench.runners._common import source_model

                modules = node_modules(source_model(request))
            except Exception as exc:  # noqa: BLE001 - mapping is best effort; say why it is missing
                notes.append(f"module paths unavailable: the source model could not be exported ({type(exc).__name__})")
            rows = plan_rows(result.plan, result.runs_ms, modules)
            method = ("on-phone Core ML: total = timed prediction(from:) runs; per-op = MLComputePlan estimated cost "
                      "× each run (Core ML exposes relative costs, not per-op times), unit = preferred device")
        else:
            rows = [LayerRow(name="prediction", op_type="whole model", module=ROOT, compute_unit=result.compute_units,
                             ms=Stats.from_samples(result.runs_ms))]
            method = "on-phone Core ML: end-to-end prediction(from:) runs only (the app sent no compute plan)"
            notes.append("no compute plan in the app's result (needs iOS 17.4+): one row for the whole model")
        unmapped = sum(1 for r in rows if not r.module)
        if unmapped:
            notes.append(f"{unmapped} of {len(rows)} operations could not be mapped to a module")
        m = request.manifest
        profile = Profile(
            model=m.model if m else "",
            format="coreml",
            device=request.device.name,
            runner=self.name,
            obtained="measured",
            total_ms=Stats.from_samples(result.runs_ms),
            layers=rows,
            artifact_sha256=m.sha256 if m else "",
            environment={
                "runtime": "Core ML",
                "compute_units": result.compute_units,
                "device_model": (phone.product_type if phone else result.device.get("model", "")),
                "device_name": phone.marketing_name if phone else result.device.get("name", ""),
                "ios": phone.os_version if phone else result.device.get("os", ""),
                "load_ms": result.load_ms,
                **{f"app_{k}": v for k, v in result.device.items()},
            },
            method=method,
            notes=notes,
        )
        profile.fill_shares()
        return profile
