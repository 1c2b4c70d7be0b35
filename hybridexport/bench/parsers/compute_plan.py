"""Core ML compute-plan dumps and iOS benchmark-app results (hybridexport's own JSON formats).

Core ML exposes per-operation data only through ``MLComputePlan`` (coremltools
``ct.models.compute_plan.MLComputePlan`` on macOS, ``MLComputePlan`` in Swift on iOS 17.4+): for every
ML Program operation its preferred compute device, the devices that support it, and an estimated
cost (its share of the model's work, 0..1). The ios-xcode runner writes that into a dump::

    {"format": "hybridexport.coreml-compute-plan", "version": 1, "compute_units": "ALL",
     "operations": [{"operator": "ios17.conv", "outputs": ["conv_0_cast_fp16"],
                     "preferred_device": "NeuralEngine", "supported_devices": ["CPU", "GPU", "NeuralEngine"],
                     "estimated_cost": 0.0213}, ...]}

An on-phone benchmark app (see the runner's docstring) returns ``runs_ms`` plus the same dump as
``compute_plan``, in a ``hybridexport.ios-bench-result`` file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json

PLAN_FORMAT = "hybridexport.coreml-compute-plan"
RESULT_FORMAT = "hybridexport.ios-bench-result"
DEVICES = {"cpu": "cpu", "gpu": "gpu", "neuralengine": "ane", "ane": "ane", "": ""}


@dataclass
class PlanOp:
    operator: str  # e.g. "ios17.conv"
    outputs: list[str]
    preferred_device: str  # "cpu" | "gpu" | "ane" | "" (unknown, e.g. const ops)
    supported_devices: list[str]
    estimated_cost: float | None

    @property
    def name(self) -> str:
        return self.outputs[0] if self.outputs else self.operator


@dataclass
class ComputePlan:
    compute_units: str
    operations: list[PlanOp]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IOSResult:
    runs_ms: list[float]
    device: dict[str, Any]
    compute_units: str
    plan: ComputePlan | None
    load_ms: float | None = None


def _load(source: str | Path | dict[str, Any], what: str) -> tuple[dict[str, Any], str]:
    if isinstance(source, dict):
        return source, what
    return read_json(source, what, "it may be truncated", expect_object=True), str(Path(source))


def _device(name: Any) -> str:
    key = str(name or "").lower().replace("mlcomputedevice", "").replace(" ", "").replace("_", "")
    if key not in DEVICES:
        raise ValueError(f"unknown Core ML compute device {name!r} (expected CPU, GPU or NeuralEngine)")
    return DEVICES[key]


def parse_compute_plan(source: str | Path | dict[str, Any]) -> ComputePlan:
    data, where = _load(source, "compute-plan dump")
    if data.get("format") != PLAN_FORMAT:
        raise InputFileError(f"{where} is not a {PLAN_FORMAT} dump (format={data.get('format')!r})")
    ops = data.get("operations")
    if not isinstance(ops, list) or not ops:
        raise InputFileError(f"{where}: compute-plan dump has no operations (truncated?)")
    out = []
    for i, op in enumerate(ops):
        try:
            cost = op.get("estimated_cost")
            out.append(PlanOp(
                operator=str(op["operator"]),
                outputs=[str(o) for o in op.get("outputs", [])],
                preferred_device=_device(op.get("preferred_device")),
                supported_devices=[_device(d) for d in op.get("supported_devices", [])],
                estimated_cost=None if cost is None else float(cost),
            ))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputFileError(f"{where}: operation {i} is malformed ({exc})") from None
    costs = [o.estimated_cost for o in out if o.estimated_cost is not None]
    if any(c < 0 or c > 1.0001 for c in costs):
        raise InputFileError(f"{where}: estimated_cost values must lie in [0, 1]")
    return ComputePlan(compute_units=str(data.get("compute_units", "")), operations=out,
                       extra={k: v for k, v in data.items() if k not in ("format", "operations", "compute_units")})


def parse_ios_result(source: str | Path | dict[str, Any]) -> IOSResult:
    """The JSON an on-phone benchmark app writes (runs in ms, device, optional compute plan)."""
    data, where = _load(source, "iOS benchmark result")
    if data.get("format") != RESULT_FORMAT:
        raise InputFileError(f"{where} is not a {RESULT_FORMAT} file (format={data.get('format')!r})")
    runs = data.get("runs_ms")
    if not isinstance(runs, list) or not runs or not all(isinstance(x, (int, float)) and x >= 0 for x in runs):
        raise InputFileError(f"{where}: runs_ms must be a non-empty list of non-negative numbers")
    plan = parse_compute_plan(data["compute_plan"]) if isinstance(data.get("compute_plan"), dict) else None
    load = data.get("load_ms")
    return IOSResult(runs_ms=[float(x) for x in runs], device=dict(data.get("device") or {}),
                     compute_units=str(data.get("compute_units", "")), plan=plan,
                     load_ms=float(load) if isinstance(load, (int, float)) else None)
