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
    fix = f"re-run `hybridexport calibrate --device {device}`"
    if not isinstance(lm, dict) or not isinstance(lm.get("params", {}), dict):
        raise InputFileError(f"the latency_model of '{device}' is not an object with params; {fix}")
    missing = [n for n in PARAM_NAMES if n not in lm.get("params", {})]
    if missing or "device" not in lm:
        raise InputFileError(f"the latency_model of '{device}' is incomplete (missing {', '.join(missing) or 'device'}); "
                             f"{fix}")
    _check_numbers(lm, device, fix)
    return lm


def _check_numbers(lm: dict[str, Any], device: str, fix: str) -> None:
    """What :func:`predict_ops` reads, checked: device format/unit/precision (text) and peak figures, every
    parameter and band ratio a positive finite number (a bad file is one line, not a traceback or NaN)."""
    import math

    dev, band = lm.get("device"), lm.get("band", {})
    if not isinstance(dev, dict) or not isinstance(band, dict) or not all(
            isinstance(dev.get(k), str) for k in ("format", "unit", "precision")):
        raise InputFileError(f"the latency_model of '{device}' has no device format/unit/precision; {fix}")
    nums = [dev.get(k) for k in ("peak_macs", "fallback_macs", "bandwidth")] + [lm["params"][n] for n in PARAM_NAMES]
    nums += [v for k, v in band.items() if k.endswith("_ratio")]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in nums):
        raise InputFileError(f"the latency_model of '{device}' holds a parameter that is not a positive number; {fix}")


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
