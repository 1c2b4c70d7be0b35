"""The two keys of ``profiles/<device>.json`` the predict stage owns: ``calibration`` and ``latency_model``.

Bench owns the rest of each profile (hardware facts, runner order). We only ever re-read the file,
replace our two keys and write it back atomically, so concurrent edits of other keys survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridexport.atomic import write_json
from hybridexport.errors import RunnerUnavailableError
from hybridexport.jsonfile import read_json


def _profiles_dir() -> Path:
    """Bench's profile directory (``$HYBRIDEXPORT_PROFILES`` or the repository's ``profiles/``)."""
    try:
        from hybridexport.bench.devices import profiles_dir
    except ImportError:
        import os

        env = os.environ.get("HYBRIDEXPORT_PROFILES")
        return Path(env) if env else Path(__file__).resolve().parents[2] / "profiles"
    return profiles_dir()

# Which published rows (device + protocol) calibrate each phone, the exported format the phone
# runs, the compute unit the protocol used, and the precision that sets bytes per element.
DEFAULT_CALIBRATION: dict[str, dict[str, Any]] = {
    "iphone13": {
        "format": "coreml", "unit": "ane", "precision": "fp16",
        "protocol": "Core ML ML Program FP16 (coremltools default), compute units ALL, Xcode performance report "
                    "median (iFormer paper protocol)",
        "match": [
            {"device": "iPhone 13", "runtime_prefix": "CoreML (coremltools ct.convert default->mlprogram FP16"},
            {"device": "iPhone 13 (iOS 17.7.1)", "runtime_prefix": "CoreML ML Program via Xcode Performance tab"},
        ],
    },
    "iphone12": {
        "format": "coreml", "unit": "ane", "precision": "fp16",
        "protocol": "Core ML, batch 1 (MobileViTv2 paper protocol)",
        "match": [{"device": "iPhone 12", "runtime_prefix": "CoreML (batch 1)"}],
    },
    "pixel6": {
        "format": "tflite", "unit": "cpu", "precision": "int8",
        "protocol": "TFLite INT8, XNNPACK, fastest CPU core (MobileNetV4 paper protocol)",
        "match": [{"device": "Pixel 6", "runtime_prefix": "TFLite INT8, XNNPACK CPU, fastest core"}],
    },
    "pixel7": {
        "format": "tflite", "unit": "gpu", "precision": "fp16",
        "protocol": "TFLite FP16 on the Mali GPU (MobileNetV4 paper protocol)",
        "match": [{"device": "Pixel 7", "runtime_prefix": "TFLite FP16 GPU (Mali)"}],
    },
    "pixel8": {
        "format": "tflite", "unit": "npu", "precision": "int8",
        "protocol": "TFLite INT8 on the EdgeTPU (MobileNetV4 paper protocol)",
        "match": [{"device": "Pixel 8", "runtime_prefix": "TFLite INT8 EdgeTPU"}],
    },
    "galaxy-s23": {
        "format": "tflite", "unit": "cpu", "precision": "int8",
        "protocol": "TFLite INT8, XNNPACK, one CPU core (MobileNetV4 paper protocol)",
        "match": [{"device": "Samsung S23", "runtime_prefix": "TFLite INT8 CPU (XNNPACK)"}],
    },
    "host": {
        "format": "onnx", "unit": "cpu", "precision": "fp32",
        "protocol": "ONNX Runtime CPU, 1 thread, on this machine (measured by `hybridexport calibrate --device host`)",
        "match": [],
    },
}

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


def profile_path(device: str, profiles_dir: Path | None = None) -> Path:
    return (profiles_dir or _profiles_dir()) / f"{device}.json"


def read_profile(device: str, profiles_dir: Path | None = None) -> dict[str, Any]:
    """The raw JSON of a device profile ({} when bench has not written it yet)."""
    p = profile_path(device, profiles_dir)
    if not p.exists():
        return {}
    return read_json(p, "device profile", "fix or delete it", expect_object=True)


def known_devices(profiles_dir: Path | None = None) -> list[str]:
    d = profiles_dir or _profiles_dir()
    on_disk = {p.stem for p in d.glob("*.json")} if d.exists() else set()
    return sorted(on_disk | set(DEFAULT_CALIBRATION))


def calibration_config(device: str, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """The device's ``calibration`` key, or our default for a known device."""
    profile = profile if profile is not None else read_profile(device)
    cfg = profile.get("calibration") or DEFAULT_CALIBRATION.get(device)
    if not cfg:
        raise RunnerUnavailableError(
            f"device '{device}' has no calibration data selection: add a 'calibration' key to its profile "
            "(format, unit, precision, match: [{device, runtime_prefix}] naming its rows of published_latency.csv); "
            f"devices with one: {', '.join(sorted(DEFAULT_CALIBRATION))}"
        )
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
    hw["source"] = src
    return hw


def write_keys(device: str, updates: dict[str, Any], profiles_dir: Path | None = None) -> Path:
    """Re-read the profile, replace only our keys (``calibration``/``latency_model``), write atomically."""
    bad = set(updates) - {"calibration", "latency_model"}
    if bad:
        raise ValueError(f"predict may only write calibration/latency_model, not {sorted(bad)}")
    p = profile_path(device, profiles_dir)
    data = read_profile(device, profiles_dir)
    if not data:
        data = {"name": device}
    data.update(updates)
    return write_json(p, data)
