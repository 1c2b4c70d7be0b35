"""Predict per-op and end-to-end latency of an artifact's op table on a calibrated device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridexport.errors import InputFileError, RunnerUnavailableError
from hybridexport.latency.costmodel import PARAM_NAMES, Design, DeviceSpec, theta_from_params
from hybridexport.latency.fallback import rule_for
from hybridexport.latency.features import FeatureTable
from hybridexport.optable import OpRow

FALLBACK_UNIT = {"ane": "cpu/gpu", "gpu": "cpu", "npu": "cpu", "cpu": "cpu"}


@dataclass
class Prediction:
    """Per-op times (ms), the per-inference overhead, and the uncertainty band as ratios."""

    ops: list[OpRow]
    op_ms: list[float]
    overhead_ms: float
    total_ms: float
    band: tuple[float, float]  # (low ratio ≤ 1, high ratio ≥ 1) applied to the point prediction
    units: list[str]
    spec: DeviceSpec


def latency_model_of(device: str, profile: dict[str, Any]) -> dict[str, Any]:
    """The ``latency_model`` of a device profile's JSON (RunnerUnavailableError with the fix when missing)."""
    lm = profile.get("latency_model")
    if not lm:
        raise RunnerUnavailableError(
            f"device '{device}' has no calibrated latency model; run `hybridexport calibrate --device {device}`")
    missing = [n for n in PARAM_NAMES if n not in lm.get("params", {})]
    if missing or "device" not in lm:
        raise InputFileError(f"the latency_model of '{device}' is incomplete (missing {', '.join(missing) or 'device'}); "
                             f"re-run `hybridexport calibrate --device {device}`")
    return lm


def predict_ops(ops: list[OpRow], latency_model: dict[str, Any], device: str) -> Prediction:
    """Apply the calibrated cost model to one model's ops (deterministic)."""
    spec = DeviceSpec.from_dict(device, latency_model["device"])
    theta = theta_from_params(latency_model["params"])
    design = Design([FeatureTable(model="", format=spec.format, resolution=0, ops=ops)], spec)
    op_ms = [float(v) * 1000.0 for v in design.op_times(theta)]
    overhead_ms = float(latency_model["params"]["overhead"]) * 1000.0
    band = latency_model.get("band", {})
    lo = min(float(band.get("p10_ratio", 1.0)), 1.0)
    hi = max(float(band.get("p90_ratio", 1.0)), 1.0)
    fb = rule_for(spec.unit)
    units = [FALLBACK_UNIT.get(spec.unit, "cpu") if fb(o) else spec.unit for o in ops]
    return Prediction(ops=ops, op_ms=op_ms, overhead_ms=overhead_ms, total_ms=float(np.sum(op_ms)) + overhead_ms,
                      band=(lo, hi), units=units, spec=spec)
