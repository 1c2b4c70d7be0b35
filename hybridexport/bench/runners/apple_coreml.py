"""Core ML on real Apple hardware through coremltools' ``MLModelBenchmarker``: an attached iPhone/iPad, or this Mac.

``ios-coreml`` builds, installs and launches coremltools' own ModelRunner app on the device
(``remote_device.Device.prepare_for_model_debugging``, see :mod:`.apple_devices`), then benchmarks the
artifact there; ``mac-coreml`` runs the same benchmarker on this Mac. Both:

* load the model ``LOAD_RUNS`` times (the first load compiles for the device, later ones hit Core ML's
  cache), run ``warmup`` untimed predictions, then ``runs`` timed ones: the Profile's total keeps every
  prediction's duration as timed by Core ML's host (the app on the phone, this process on the Mac);
* per op: ``benchmark_operation_execution`` = Core ML's compute-plan estimated cost × each of those
  measured predictions (estimates, not per-op timers), preferred compute device as the row's unit, and
  the ``nn.Module`` path from the artifact's op table (``OpTable.module_of(output name)``);
* placement: the compute plan's devices beside the static Neural Engine rules (:mod:`.coreml_placement`),
  in ``Profile.extra["placement"]``.

Before any work: the compute units are one of :data:`COMPUTE_UNITS`; the model's deployment target
is not newer than the device's OS (else the ``--coreml-target`` that fits is named); per-op rows need an
ML Program and iOS 17.4 / macOS 14.4 (else the totals are measured and a note says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import LayerRow, Profile, Stats, measured_samples
from hybridexport.bench.runners import BenchRequest, Runner, apple_devices
from hybridexport.bench.runners._common import artifact, ticker, version_of
from hybridexport.bench.runners.apple_devices import (
    COMPUTE_PLAN_MIN,
    Signing,
    describe,
    dotted,
    find_device,
    list_attached,
    platform_of,
    prepare,
    refresh_connection,
    signing,
    version_tuple,
)
from hybridexport.bench.runners.coreml_placement import PlannedOp, placement, static_verdicts
from hybridexport.errors import InputFileError, RunnerUnavailableError

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
LOAD_RUNS = 2
CONVERT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")  # what `hybridexport convert --coreml-target` offers
PER_OP = "per-op time = Core ML compute-plan estimated cost × each measured prediction (estimates, not per-op timers)"


def compute_units_of(options: dict[str, Any], profile: Any) -> str:
    cu = str(options.get("compute_units") or profile.protocol.get("compute_units", "ALL")).upper()
    if cu not in COMPUTE_UNITS:
        raise RunnerUnavailableError(f"unknown compute units '{cu}'; use one of {', '.join(COMPUTE_UNITS)}")
    return cu


# ------------------------------------------------------------------ the model
def target_name(plat: str, spec_version: int) -> str:
    """coremltools' deployment-target name for a Core ML spec version on ``plat`` (``iOS``/``macOS``): 6 → iOS15."""
    import coremltools as ct

    names = [n for n, t in ct.target.__members__.items() if t.value == spec_version and n.startswith(plat)]
    return names[0] if names else ""


def _os_of(plat: str, spec_version: int) -> tuple[int, ...]:
    return version_tuple(target_name(plat, spec_version).removeprefix(plat))


def _spec_of(convert_target: str) -> int:
    import coremltools as ct

    return int(ct.target.__members__[convert_target].value)


@dataclass
class ModelFacts:
    """What the Core ML runners check in a package before running it."""

    spec_type: str  # "mlProgram", "neuralNetwork", ...
    spec_version: int
    image_inputs: list[str] = field(default_factory=list)

    def target(self, plat: str) -> str:
        """The oldest deployment target the spec version allows, e.g. ``iOS15`` / ``macOS12``."""
        return target_name(plat, self.spec_version) or f"{plat} (Core ML spec {self.spec_version})"


def model_facts(model: Any) -> ModelFacts:
    spec = model.get_spec()
    images = [f.name for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"]
    return ModelFacts(spec_type=str(spec.WhichOneof("Type")), spec_version=int(spec.specificationVersion),
                      image_inputs=images)


def check_model(facts: ModelFacts, plat: str, os_version: str, where: str, remote: bool) -> tuple[bool, list[str]]:
    """Whether per-op rows can be had, and notes; raises when the model cannot run on ``where`` at all."""
    have = version_tuple(os_version)
    need = _os_of(plat, facts.spec_version)
    if have and need and need > have:
        fits = [t for t in CONVERT_TARGETS if _os_of(plat, _spec_of(t)) <= have]
        fix = (f"re-convert with `--coreml-target {fits[-1]}` (or older)" if fits
               else f"Core ML ML Programs need {plat} {dotted(_os_of(plat, _spec_of(CONVERT_TARGETS[0])))}+")
        raise RunnerUnavailableError(f"the model needs {plat} {dotted(need)} (Core ML spec {facts.spec_version}) but "
                                     f"{where} runs {plat} {os_version}: {fix}")
    if remote and facts.image_inputs:
        from coremltools.models.ml_program.experimental.remote_device import _TensorDescriptor

        if not hasattr(_TensorDescriptor.DataType, "UInt8"):
            raise RunnerUnavailableError(
                f"input {facts.image_inputs[0]} is an image and coremltools {version_of('coremltools')} sends only "
                "float/int32 tensors to its ModelRunner app: convert without --coreml-image-input")
    notes = []
    with_ops = True
    if facts.spec_type != "mlProgram":
        with_ops = False
        notes.append(f"the package is a {facts.spec_type} model (Core ML spec {facts.spec_version}, deployment target "
                     f"{facts.target(plat)}): Core ML's compute plan gives per-op costs for ML Programs only; re-convert "
                     f"with `hybridexport convert MODEL --to coreml --coreml-target {CONVERT_TARGETS[0]}` (or newer) "
                     "for per-op rows")
    plan_min = COMPUTE_PLAN_MIN[plat]
    if have and have < plan_min:
        with_ops = False
        notes.append(f"{where} runs {plat} {os_version}: Core ML's compute plan (per-op rows, placement) needs "
                     f"{plat} {dotted(plan_min)}+; only end-to-end times were measured")
    return with_ops, notes


def inputs_for(model: Any, seed: int = 0) -> dict[str, Any]:
    """Seeded inputs for every model input (multi-arrays at their default shape; images as RGB/grey pictures)."""
    import numpy as np
    from coremltools.proto import FeatureTypes_pb2 as ft

    rng = np.random.default_rng(seed)
    dtypes = {ft.ArrayFeatureType.FLOAT32: np.float32, ft.ArrayFeatureType.FLOAT16: np.float16,
              ft.ArrayFeatureType.DOUBLE: np.float64, ft.ArrayFeatureType.INT32: np.int32}
    out: dict[str, Any] = {}
    for f in model.get_spec().description.input:
        kind = f.type.WhichOneof("Type")
        if kind == "multiArrayType":
            t = f.type.multiArrayType
            shape = tuple(int(d) for d in t.shape) or tuple(int(r.lowerBound) for r in t.shapeRange.sizeRanges)
            dtype = dtypes.get(t.dataType, np.float32)
            out[f.name] = (rng.integers(0, 10, shape) if dtype is np.int32 else rng.standard_normal(shape)).astype(dtype)
        elif kind == "imageType":
            from PIL import Image

            t = f.type.imageType
            grey = t.colorSpace == ft.ImageFeatureType.GRAYSCALE
            pixels = rng.integers(0, 256, (t.height, t.width) if grey else (t.height, t.width, 3), dtype=np.uint8)
            out[f.name] = Image.fromarray(pixels, "L" if grey else "RGB")
        else:
            raise RunnerUnavailableError(f"input {f.name} is a {kind}; the Core ML runners feed tensors and images only")
    return out


# ------------------------------------------------------------------ measuring
@dataclass
class Measured:
    """Raw samples of one benchmark, in milliseconds, as coremltools returned them."""

    load_ms: list[float]
    predict_ms: list[float]
    ops: list[Any]  # MLModelBenchmarker.OperationExecutionInfo
    plan_error: str = ""  # why there are no per-op rows although they were asked for


def _benchmarker_class() -> type:
    from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker

    class RecordingBenchmarker(MLModelBenchmarker):
        """Keeps the last prediction samples, which ``benchmark_operation_execution`` scales but does not return."""

        last_predict: Any = None

        async def benchmark_predict(self, *args: Any, **kwargs: Any) -> Any:
            m = await super().benchmark_predict(*args, **kwargs)
            self.last_predict = m
            return m

    return RecordingBenchmarker


async def measure(model: Any, device: Any, runs: int, warmup: int, inputs: dict[str, Any], with_ops: bool,
                  tick: Any = None) -> Measured:
    """Load ``LOAD_RUNS`` times, ``warmup`` untimed predictions, then ``runs`` timed ones (with the compute plan)."""
    bench = _benchmarker_class()(model, device=device)
    try:
        load = await bench.benchmark_load(iterations=LOAD_RUNS)
        if warmup:
            await bench.benchmark_predict(inputs=inputs, iterations=warmup)
            if tick:
                tick(warmup)
        bench.last_predict = None
        ops: list[Any] = []
        plan_error = ""
        if with_ops:
            try:
                ops = await bench.benchmark_operation_execution(inputs=inputs, iterations=runs)
            except Exception as exc:  # noqa: BLE001 - the compute plan is optional; the timed runs stand
                if bench.last_predict is None:
                    raise
                plan_error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if bench.last_predict is None:
            await bench.benchmark_predict(inputs=inputs, iterations=runs)
        if tick:
            tick(runs)
        return Measured(load_ms=list(load.samples), predict_ms=list(bench.last_predict.samples), ops=ops,
                        plan_error=plan_error)
    finally:
        loaded = getattr(bench, "_loaded_model", None)
        if loaded is not None:
            with contextlib.suppress(Exception):
                await loaded.unload()


def unit_of(device: Any) -> str:
    """coremltools compute-device object → ``ane`` / ``gpu`` / ``cpu``."""
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    if isinstance(device, MLNeuralEngineComputeDevice):
        return "ane"
    if isinstance(device, MLGPUComputeDevice):
        return "gpu"
    if isinstance(device, MLCPUComputeDevice):
        return "cpu"
    return "?"


def rows_and_plan(measured: Measured, table: Any) -> tuple[list[LayerRow], list[PlannedOp]]:
    """Profile rows (ops with a cost) and the planned ops (ops with a device), one per op; every time is
    checked (a finite number ≥ 0, else one InputFileError)."""
    rows: list[LayerRow] = []
    planned: list[PlannedOp] = []
    seen: set[tuple[str, ...]] = set()
    predict = measured_samples(measured.predict_ms, "Core ML prediction times")
    first_run = predict[0] if predict else 0.0
    for info in measured.ops:
        outputs = tuple(o.name for o in info.spec.outputs)
        if outputs in seen:  # coremltools lists a multi-output op once per output
            continue
        seen.add(outputs)
        name = outputs[0] if outputs else info.spec.type
        usage = info.compute_device_usage
        samples = measured_samples(list(info.measurement.samples), f"Core ML op {name!r}")
        module = table.module_of(name) if table is not None else ""
        if usage is not None:
            cost = samples[0] / first_run if samples and first_run > 0 else None
            cost = cost if cost is None or math.isfinite(cost) else None  # a denormal first run overflows it
            planned.append(PlannedOp(name=name, op_type=info.spec.type, unit=unit_of(usage.preferred_compute_device),
                                     supported=[unit_of(d) for d in usage.supported_compute_devices], cost=cost,
                                     module=module))
        if samples:
            rows.append(LayerRow(name=name, op_type=info.spec.type, module=module,
                                 compute_unit=unit_of(usage.preferred_compute_device) if usage else "?",
                                 ms=Stats.from_samples(samples), module_source="op_table" if module else ""))
    return rows, planned


def _op_table(request: BenchRequest, notes: list[str]) -> Any:
    table = request.op_table()
    m = request.manifest
    if table is None:
        return None
    if m is not None and table.artifact_sha256 and m.sha256 and table.artifact_sha256 != m.sha256:
        notes.append(f"the op table beside {m.path} describes another build of it (sha256 differs): not used; re-run "
                     f"`hybridexport convert {m.model} --to coreml --force`")
        return None
    if not table.module_mapping:
        notes.append(f"{request.label} carries no nn.Module paths (no op table written by `hybridexport convert` "
                     "beside it): rows keep Core ML's op names")
    return table


def build_profile(request: BenchRequest, runner: str, measured: Measured, facts: ModelFacts, plat: str,
                  compute_units: str, environment: dict[str, Any], notes: list[str], method: str) -> Profile:
    """The Profile of one measurement: raw totals, per-op rows, placement, provenance."""
    m = request.manifest
    predict = measured_samples(measured.predict_ms, "Core ML prediction times")
    if not predict or min(predict) <= 0:
        raise InputFileError(f"Core ML returned no positive prediction times ({len(predict)} samples); run again")
    load = measured_samples(measured.load_ms, "Core ML load times")
    table = _op_table(request, notes) if measured.ops else None
    rows, planned = rows_and_plan(measured, table)
    extra: dict[str, Any] = {"load_ms": asdict(Stats.from_samples(load)), "warmup": request.warmup}
    if measured.plan_error:
        notes.append(f"Core ML returned no compute plan ({measured.plan_error}): only end-to-end times")
    if planned:
        try:
            verdicts, source = static_verdicts(table, None if table is not None else (m.path if m else None))
        except Exception as exc:  # noqa: BLE001 - the comparison is extra; the measurement stands
            verdicts, source = {}, ""
            notes.append(f"static Neural Engine rules not run on the package ({type(exc).__name__}: {exc})")
        extra["placement"] = placement(planned, verdicts, compute_units, source)
    if not rows:
        rows = [LayerRow(name="prediction", op_type="whole model", module="<root>", compute_unit=compute_units.lower(),
                         ms=Stats.from_samples(predict), module_source="")]
        method = method.split("; per-op")[0] + "; one row for the whole model (no compute plan)"
    else:
        unmapped = sum(1 for r in rows if not r.module)
        if unmapped and table is not None and table.module_mapping:
            notes.append(f"{unmapped} of {len(rows)} ops are not in the op table: unmapped")
    profile = Profile(
        model=request.label, format="coreml", device=request.device.name, runner=runner, obtained="measured",
        total_ms=Stats.from_samples(predict), layers=rows, artifact_sha256=m.sha256 if m else "",
        environment={"runtime": "Core ML", "compute_units": compute_units, "coremltools": version_of("coremltools"),
                     "model_spec_version": facts.spec_version, "deployment_target": facts.target(plat), **environment},
        method=method, notes=notes, extra=extra)
    profile.fill_shares()
    return profile


def load_package(path: Path, compute_units: str) -> Any:
    import coremltools as ct

    return ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units), skip_model_load=True)


def _fail(where: str, exc: Exception) -> RunnerUnavailableError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return RunnerUnavailableError(f"Core ML benchmark on {where} failed ({type(exc).__name__}: {first})")


# ------------------------------------------------------------------ iPhone / iPad
class IOSCoreMLRunner(Runner):
    """An attached iPhone or iPad, through coremltools' ModelRunner app."""

    name = "ios-coreml"
    formats = ("coreml",)

    def availability(self, device: Any) -> tuple[bool, str]:
        from hybridexport.bench.runners.apple_devices import ios_problem

        why = ios_problem(device, self.options)
        return (not why), why

    def run(self, request: BenchRequest) -> Profile:
        self.configure({**self.options, **request.options})
        profile = request.device
        if platform_of(profile) != "iOS" or profile.kind != "ios":
            raise RunnerUnavailableError(f"serves iPhones and iPads only ('{profile.name}' is a {platform_of(profile)} "
                                         "profile)")
        why = apple_devices.host_problem("measuring on an iPhone")
        if why:
            raise RunnerUnavailableError(why)
        path = artifact(request, "coreml")
        cu = compute_units_of(self.options, profile)
        dev = find_device(profile, list_attached(refresh=True))
        sign = signing(self.options)
        model = load_package(path, cu)
        facts = model_facts(model)
        with_ops, notes = check_model(facts, "iOS", dev.os_version, apple_devices.label(dev), remote=True)
        inputs = inputs_for(model)
        dev = refresh_connection(dev)
        measured = asyncio.run(self._on_device(dev, sign, model, request, inputs, with_ops))
        env = {"device_model": dev.product_type, "device_name": dev.marketing_name, "device_label": dev.name,
               "os": f"iOS {dev.os_version}", "os_build": dev.os_build, "transport": dev.transport,
               "host": f"macOS {platform.mac_ver()[0]}", "signing": sign.describe(),
               "modelrunner_bundle": sign.bundle,
               "via": "coremltools MLModelBenchmarker + its ModelRunner app over devicectl"}
        method = (f"Core ML on the device via coremltools' MLModelBenchmarker and ModelRunner app ({cu}): total = "
                  f"prediction durations timed by the app on the device ({request.warmup} warm-up runs discarded); "
                  f"{PER_OP}; unit = the compute plan's preferred device")
        return build_profile(request, self.name, measured, facts, "iOS", cu, env, notes, method)

    @staticmethod
    async def _on_device(dev: Any, sign: Signing, model: Any, request: BenchRequest, inputs: dict[str, Any],
                         with_ops: bool) -> Measured:
        prepared = await prepare(dev, sign)
        try:
            return await measure(model, prepared, request.runs, request.warmup, inputs, with_ops, ticker(request))
        except RunnerUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - devicectl transfers fail with several coremltools error types
            raise _fail(describe(dev), exc) from None
        finally:
            prepared.session.stop()


# ------------------------------------------------------------------ this Mac
def mac_identity() -> tuple[str, str]:
    """(chip, model identifier) of this Mac, e.g. ``("Apple M1 Pro", "MacBookPro18,3")``."""
    exe = shutil.which("sysctl") or "/usr/sbin/sysctl"
    out = []
    for key in ("machdep.cpu.brand_string", "hw.model"):
        try:
            res = subprocess.run([exe, "-n", key], capture_output=True, text=True, timeout=5, check=False)
            out.append(res.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            out.append("")
    return out[0], out[1]


def _profile_for_chip(chip: str) -> str:
    from hybridexport.bench.devices import list_devices

    for d in list_devices():
        if platform_of(d) == "macOS" and chip in d.match.get("chips", []):
            return d.name
    return "mac"


def mac_problem(profile: Any, compute_units: str | None = None) -> str:
    """Why this Mac cannot serve ``profile`` ("" when it can)."""
    if platform_of(profile) != "macOS":
        return f"measures this Mac only ('{profile.name}' is an {platform_of(profile)} profile)"
    if not apple_devices.is_macos():
        return f"needs macOS: it measures the Mac it runs on (this is {platform.system()})"
    from coremltools.models import model as ct_model

    if ct_model._MLModelProxy is None:
        return ("coremltools here cannot load Core ML (its libcoremlpython did not import): "
                "`pip install --force-reinstall coremltools==9.0`")
    mac_os = version_tuple(platform.mac_ver()[0])
    if mac_os and mac_os < (12,):
        return f"this Mac runs macOS {platform.mac_ver()[0]}; Core ML ML Programs need macOS 12+"
    if compute_units == "CPU_AND_NE" and mac_os and mac_os < (13,):
        return f"compute units CPU_AND_NE need macOS 13+ (this Mac runs {platform.mac_ver()[0]}): use ALL"
    chips = [str(c) for c in profile.match.get("chips", [])]
    if chips:
        chip, _ = mac_identity()
        if chip not in chips:
            return (f"this Mac has an {chip or 'unknown chip'}; profile {profile.name} is for {', '.join(chips)}: use "
                    f"--device {_profile_for_chip(chip)}")
    return ""


class MacCoreMLRunner(Runner):
    """This Mac (its CPU, GPU and Neural Engine), through coremltools' MLModelBenchmarker."""

    name = "mac-coreml"
    formats = ("coreml",)

    def availability(self, device: Any) -> tuple[bool, str]:
        why = mac_problem(device, self.options.get("compute_units"))
        return (not why), why

    def run(self, request: BenchRequest) -> Profile:
        self.configure({**self.options, **request.options})
        profile = request.device
        cu = compute_units_of(self.options, profile)
        why = mac_problem(profile, cu)
        if why:
            raise RunnerUnavailableError(why)
        path = artifact(request, "coreml")
        model = load_package(path, cu)
        facts = model_facts(model)
        mac_os = platform.mac_ver()[0]
        with_ops, notes = check_model(facts, "macOS", mac_os, "this Mac", remote=False)
        inputs = inputs_for(model)
        try:
            measured = asyncio.run(measure(model, None, request.runs, request.warmup, inputs, with_ops, ticker(request)))
        except Exception as exc:  # noqa: BLE001 - Core ML load/predict errors come as several exception types
            raise _fail("this Mac", exc) from None
        chip, ident = mac_identity()
        env = {"device_model": ident, "chip": chip, "os": f"macOS {mac_os}", "arch": platform.machine(),
               "via": "coremltools MLModelBenchmarker on this Mac"}
        method = (f"Core ML on this Mac via coremltools' MLModelBenchmarker ({cu}): total = prediction durations Core ML "
                  f"reported ({request.warmup} warm-up runs discarded); {PER_OP}; unit = the compute plan's preferred "
                  "device")
        return build_profile(request, self.name, measured, facts, "macOS", cu, env, notes, method)
