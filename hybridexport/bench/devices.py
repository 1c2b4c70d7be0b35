"""Device profiles: ``profiles/<name>.json`` — hardware facts with sources, benchmark protocol, runner order.

Bench owns the hardware facts (``soc``, ``cpu``, ``gpu``, ``npu``, ``memory``, ``sources``), the
``protocol`` a device is benchmarked with and the ``runners`` in preference order. Other stages add
their own keys (the predict stage owns ``latency_model`` and ``calibration``); the loader keeps every
key it does not know in ``DeviceProfile.raw`` and :func:`save_device` writes them back unchanged.
"""

from __future__ import annotations

import difflib
import math
import os
import platform
import re
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

    @property
    def priced_format(self) -> str | None:
        """The artifact format its calibrated latency model prices (None: no latency model)."""
        return ((self.raw.get("latency_model") or {}).get("device") or {}).get("format")

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


FIX = "see profiles/iphone13.json for the layout"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass
class _Protocol:
    """The typed part of ``protocol`` (other keys are free-form notes)."""

    format: str = "onnx"
    precision: str = ""
    threads: int = 1
    delegate: str = ""
    cpu_mask: str = ""
    compute_units: str = ""
    runtime: str = ""


@dataclass
class _Match:
    """How the attached device is recognised: lists of names, and the Apple platform."""

    models: list[str] = field(default_factory=list)
    soc_models: list[str] = field(default_factory=list)
    board_platforms: list[str] = field(default_factory=list)
    product_types: list[str] = field(default_factory=list)
    marketing_names: list[str] = field(default_factory=list)
    chips: list[str] = field(default_factory=list)
    qai_hub_devices: list[str] = field(default_factory=list)
    platform: str = "iOS"


@dataclass
class _Cluster:
    name: str = ""
    count: int = 0
    max_ghz: float | None = None
    cpus: list[int] = field(default_factory=list)


@dataclass
class _Facts:
    """The hardware facts other stages compute with (calibration priors, cost-model peaks)."""

    clusters: list[_Cluster] = field(default_factory=list)
    cores: int | None = None
    peak_tops: float | None = None
    bandwidth_gbps: float | None = None
    size_gb: float | None = None


@dataclass
class _Shape:
    """The keys bench owns, typed (keys other stages own pass through)."""

    name: str
    kind: str
    protocol: dict[str, Any]
    runners: list[str]
    display_name: str = ""
    soc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    npu: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    match: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)


def _from_dict(data: dict[str, Any], source: str) -> DeviceProfile:
    """A device profile, every key bench reads checked (types, names, the protocol, the latency model)."""
    from hybridexport.records import structure

    if not isinstance(data, dict):
        raise InputFileError(f"device profile {source} is not a JSON object; {FIX}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputFileError(f"device profile {source} lacks {', '.join(missing)}; {FIX}")
    if data["kind"] not in KINDS:
        raise InputFileError(f"device profile {source}: kind must be one of {KINDS}, got {data['kind']!r}")
    if not isinstance(data["runners"], list) or not all(isinstance(r, str) for r in data["runners"]):
        raise InputFileError(f"device profile {source}: 'runners' must be a list of runner names")
    if not isinstance(data["protocol"], dict):
        raise InputFileError(f"device profile {source}: 'protocol' must be an object")
    where = f"device profile {source}"
    shape = structure({k: v for k, v in data.items() if k in _Shape.__dataclass_fields__}, _Shape, where, FIX)
    proto = structure(shape.protocol, _Protocol, f"{where}: protocol", FIX, extra_ok=True)
    structure(shape.match, _Match, f"{where}: match", FIX, extra_ok=True)
    for key in ("cpu", "npu", "memory"):
        facts = structure(getattr(shape, key), _Facts, f"{where}: {key}", FIX, extra_ok=True)
        nums = [facts.peak_tops, facts.bandwidth_gbps, facts.size_gb, *(c.max_ghz for c in facts.clusters)]
        if any(x is not None and not (math.isfinite(x) and x > 0) for x in nums):
            raise InputFileError(f"{where}: {key} has a figure ≤ 0 or not finite (use null when unknown); {FIX}")
    if not NAME.match(shape.name) or (source.endswith(".json") and Path(source).stem != shape.name):
        raise InputFileError(f"{where}: name {shape.name!r} must be the file's name without .json (lower-case "
                             "letters, digits, '-', '_', '.')")
    from hybridexport.bench.runners import RUNNERS
    from hybridexport.export.formats import NAMES

    unknown = [r for r in shape.runners if r not in RUNNERS]
    if unknown:
        raise InputFileError(f"{where}: unknown runner(s) {unknown}; known runners: {', '.join(RUNNERS)}")
    if proto.format not in (*NAMES, "pytorch") or proto.threads < 1 or (
            proto.cpu_mask and not re.fullmatch(r"[0-9a-fA-F]{1,16}", proto.cpu_mask)):
        raise InputFileError(f"{where}: protocol needs a known format ({', '.join(NAMES)}), threads ≥ 1 and a hex "
                             f"cpu_mask (got {proto.format!r}, {proto.threads!r}, {proto.cpu_mask!r})")
    return DeviceProfile(
        name=shape.name,
        kind=shape.kind,
        display_name=shape.display_name or shape.name,
        protocol=dict(shape.protocol),
        runners=list(shape.runners),
        soc=shape.soc,
        cpu=shape.cpu,
        gpu=shape.gpu,
        npu=shape.npu,
        memory=shape.memory,
        match=shape.match,
        sources=shape.sources,
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
