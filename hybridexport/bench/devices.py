"""Device profiles: ``profiles/<name>.json`` — hardware facts with sources, benchmark protocol, runner order.

Bench owns the hardware facts (``soc``, ``cpu``, ``gpu``, ``npu``, ``memory``, ``sources``), the
``protocol`` a device is benchmarked with and the ``runners`` in preference order. Other stages add
their own keys (the predict stage owns ``latency_model`` and ``calibration``); the loader keeps every
key it does not know in ``DeviceProfile.raw`` and :func:`save_device` writes them back unchanged.
"""

from __future__ import annotations

import difflib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError, UnknownModelError
from hybridexport.jsonfile import read_json

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
KINDS = ("ios", "macos", "android", "host")
REQUIRED = ("name", "kind", "protocol", "runners")


class UnknownDeviceError(UnknownModelError):
    """A device name with no profile (subclass of UnknownModelError so callers catch both alike)."""


def profiles_dir() -> Path:
    """``$HYBRIDEXPORT_PROFILES`` when set, else the repository's ``profiles/``."""
    env = os.environ.get("HYBRIDEXPORT_PROFILES")
    return Path(env) if env else PROFILES_DIR


@dataclass
class DeviceProfile:
    """One device: what it is, how it is benchmarked, and which runners can serve it (in order)."""

    name: str
    kind: str  # "ios" | "macos" | "android" | "host"
    display_name: str
    protocol: dict[str, Any]  # format, precision, compute_units, runtime, delegate, threads, cpu_mask
    runners: list[str]
    soc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    npu: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    match: dict[str, Any] = field(default_factory=dict)  # how to recognise the attached device (model names)
    sources: list[dict[str, str]] = field(default_factory=list)
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # the whole file, unknown keys included

    @property
    def format(self) -> str:
        """The artifact format this device is benchmarked with (coreml, tflite, onnx)."""
        return str(self.protocol.get("format", "onnx"))

    @property
    def precision(self) -> str:
        return str(self.protocol.get("precision", "fp32"))

    def get(self, key: str, default: Any = None) -> Any:
        """Any top-level key of the file, including keys owned by other stages."""
        return self.raw.get(key, default)

    def facts(self) -> dict[str, Any]:
        """Hardware facts; for ``host`` they are read from this machine now."""
        facts = {"soc": self.soc, "cpu": self.cpu, "gpu": self.gpu, "npu": self.npu, "memory": self.memory}
        if self.kind == "host":
            facts = {**facts, **host_facts()}
        return facts

    def to_dict(self) -> dict[str, Any]:
        """The file's content: known fields over ``raw`` (so unknown keys survive a round trip)."""
        out = dict(self.raw)
        for key in ("name", "kind", "display_name", "protocol", "runners", "soc", "cpu", "gpu", "npu", "memory",
                    "match", "sources"):
            out[key] = getattr(self, key)
        return out


def host_facts() -> dict[str, Any]:
    """CPU model, core count and OS of this machine (read at run time)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": {"model": model, "cores": os.cpu_count(), "arch": platform.machine()},
        "os": f"{platform.system()} {platform.release()}",
    }


def _from_dict(data: dict[str, Any], source: str) -> DeviceProfile:
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputFileError(f"device profile {source} lacks {', '.join(missing)}; see profiles/iphone13.json for the layout")
    if data["kind"] not in KINDS:
        raise InputFileError(f"device profile {source}: kind must be one of {KINDS}, got {data['kind']!r}")
    if not isinstance(data["runners"], list) or not all(isinstance(r, str) for r in data["runners"]):
        raise InputFileError(f"device profile {source}: 'runners' must be a list of runner names")
    if not isinstance(data["protocol"], dict):
        raise InputFileError(f"device profile {source}: 'protocol' must be an object")
    return DeviceProfile(
        name=str(data["name"]),
        kind=str(data["kind"]),
        display_name=str(data.get("display_name", data["name"])),
        protocol=dict(data["protocol"]),
        runners=list(data["runners"]),
        soc=dict(data.get("soc", {})),
        cpu=dict(data.get("cpu", {})),
        gpu=dict(data.get("gpu", {})),
        npu=dict(data.get("npu", {})),
        memory=dict(data.get("memory", {})),
        match=dict(data.get("match", {})),
        sources=list(data.get("sources", [])),
        path=source,
        raw=dict(data),
    )


def list_devices(directory: str | Path | None = None) -> list[DeviceProfile]:
    """Every device profile, sorted by name."""
    d = Path(directory) if directory else profiles_dir()
    return [_load_file(p) for p in sorted(d.glob("*.json"))]


def _load_file(path: Path) -> DeviceProfile:
    return _from_dict(read_json(path, "device profile", expect_object=True), str(path))


def device_names(directory: str | Path | None = None) -> list[str]:
    d = Path(directory) if directory else profiles_dir()
    return sorted(p.stem for p in d.glob("*.json"))


def load_device(name: str, directory: str | Path | None = None) -> DeviceProfile:
    """Load ``profiles/<name>.json``; unknown names raise a one-line error with the nearest names."""
    key = name.strip().lower().replace("_", "-").replace(" ", "")
    d = Path(directory) if directory else profiles_dir()
    path = d / f"{key}.json"
    if not path.is_file():
        known = device_names(d)
        near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UnknownDeviceError(
            f"unknown device '{name}'{hint} (known: {', '.join(known)}; `hybridexport devices` lists them)"
        )
    return _load_file(path)


def save_device(profile: DeviceProfile, directory: str | Path | None = None) -> Path:
    """Write a profile back atomically, keeping keys other stages own (``latency_model``, ``calibration``)."""
    from hybridexport.atomic import write_json

    d = Path(directory) if directory else profiles_dir()
    return write_json(d / f"{profile.name}.json", profile.to_dict())
