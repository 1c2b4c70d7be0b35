"""The two keys of ``profiles/<device>.json`` calibration owns: ``calibration`` and ``latency_model``.

``calibration`` names the published rows (device + protocol) that calibrate a phone, the format it
runs, the compute unit and precision of that protocol; ``latency_model`` is the fit. Bench owns the rest
of each profile (hardware facts, runner order). We only ever re-read the file, replace our two keys and
write it back atomically, so concurrent edits of other keys survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridexport.atomic import write_json
from hybridexport.bench.devices import load_device, profiles_dir
from hybridexport.errors import RunnerUnavailableError
from hybridexport.jsonfile import read_json

# Starting points of the fit (peak multiply-accumulates per second and DRAM bandwidth) used only when the
# device profile has no hardware facts; the fitted efficiencies absorb any error in them.
PRIOR_HARDWARE: dict[str, dict[str, float]] = {
    "iphone13": {"peak_macs": 7.9e12, "fallback_macs": 0.7e12, "bandwidth": 34e9},
    "iphone12": {"peak_macs": 5.5e12, "fallback_macs": 0.6e12, "bandwidth": 34e9},
    "pixel6": {"peak_macs": 0.18e12, "fallback_macs": 0.18e12, "bandwidth": 25e9},
    "pixel7": {"peak_macs": 1.5e12, "fallback_macs": 0.1e12, "bandwidth": 40e9},
    "pixel8": {"peak_macs": 8.0e12, "fallback_macs": 0.2e12, "bandwidth": 50e9},
    "galaxy-s23": {"peak_macs": 3.5e12, "fallback_macs": 0.15e12, "bandwidth": 50e9},
    "host": {"peak_macs": 40e9, "fallback_macs": 40e9, "bandwidth": 10e9},
}


def profile_path(device: str, directory: Path | None = None) -> Path:
    return (directory or profiles_dir()) / f"{device}.json"


def read_profile(device: str, directory: Path | None = None) -> dict[str, Any]:
    """The raw JSON of a device profile (an unknown device is a one-line error naming the known ones)."""
    load_device(device, directory)
    return read_json(profile_path(device, directory), "device profile", "fix or delete it", expect_object=True)


def calibration_config(device: str, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """The device's ``calibration`` key (which rows, format, unit, precision)."""
    profile = profile if profile is not None else read_profile(device)
    cfg = profile.get("calibration")
    if not isinstance(cfg, dict):
        raise RunnerUnavailableError(
            f"device '{device}' has no calibration data selection: add a 'calibration' key to its profile "
            "(format, unit, precision, match: [{device, runtime_prefix}] naming its rows of published_latency.csv; "
            "see profiles/iphone13.json)")
    missing = [k for k in ("format", "unit", "precision") if k not in cfg]
    if missing:
        raise RunnerUnavailableError(f"the calibration key of '{device}' lacks {', '.join(missing)}; see "
                                     "profiles/iphone13.json")
    return cfg


# multiply-accumulates per cycle of one CPU core with 2 SIMD pipes of 128 bits (int8 via dot-product)
_CPU_MACS_PER_CYCLE = {"int8": 32, "fp16": 16, "fp32": 8}


def hardware(device: str, profile: dict[str, Any], precision: str = "fp16", unit: str = "ane") -> dict[str, Any]:
    """Peak MAC/s of the unit that runs the model and of the fallback unit, and DRAM bandwidth (bytes/s).

    Taken from the bench-owned hardware facts where they exist (``npu.peak_tops``,
    ``memory.bandwidth_gbps``, the fastest CPU cluster's clock); the rest from our priors. The fit's
    efficiencies are relative to these peaks, so an imprecise peak shifts efficiencies, not predictions.
    """
    hw: dict[str, Any] = dict(PRIOR_HARDWARE.get(device, PRIOR_HARDWARE["host"]))
    src = {k: "prior" for k in ("peak_macs", "fallback_macs", "bandwidth")}
    tops = (profile.get("npu") or {}).get("peak_tops")
    if unit in ("ane", "npu") and isinstance(tops, int | float) and tops > 0:
        hw["peak_macs"], src["peak_macs"] = float(tops) * 1e12 / 2, "npu.peak_tops / 2"
    clusters = (profile.get("cpu") or {}).get("clusters") or []
    ghz = max((float(c.get("max_ghz") or 0) for c in clusters), default=0.0)
    if ghz > 0:
        cpu_macs = ghz * 1e9 * _CPU_MACS_PER_CYCLE.get(precision, 8)
        if unit == "cpu":
            hw["peak_macs"], src["peak_macs"] = cpu_macs, "fastest CPU core clock x SIMD width"
        hw["fallback_macs"], src["fallback_macs"] = cpu_macs, "fastest CPU core clock x SIMD width"
    bw = (profile.get("memory") or {}).get("bandwidth_gbps")
    if isinstance(bw, int | float) and bw > 0:
        hw["bandwidth"], src["bandwidth"] = float(bw) * 1e9, "memory.bandwidth_gbps"
    probe = (profile.get("probe") or {}) if isinstance(profile.get("probe"), dict) else {}
    if probe.get("gemm_gflops") and probe.get("bandwidth_gbs") and probe.get("source", {}).get("precision") == precision:
        # the device's own probe (``calibrate --probe``, :mod:`.device_probe`), of the unit the protocol runs on
        hw["peak_macs"], src["peak_macs"] = float(probe["gemm_gflops"]) * 1e9 / 2, "probe: GEMM GFLOP/s / 2"
        hw["bandwidth"], src["bandwidth"] = float(probe["bandwidth_gbs"]) * 1e9, "probe: copy GB/s"
    hw["source"] = src
    return hw


def write_keys(device: str, updates: dict[str, Any], directory: Path | None = None) -> Path:
    """Re-read the profile, replace only our keys (``calibration``/``latency_model``), write atomically."""
    bad = set(updates) - {"calibration", "latency_model"}
    if bad:
        raise ValueError(f"calibration may only write calibration/latency_model, not {sorted(bad)}")
    data = read_profile(device, directory)
    data.update(updates)
    return write_json(profile_path(device, directory), data)
