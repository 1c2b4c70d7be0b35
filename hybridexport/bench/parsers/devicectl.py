"""``xcrun devicectl list devices`` / ``device info details`` JSON (Xcode 15+): the attached Apple devices.

``list devices --json-output PATH`` writes ``{"info": {"outcome": "success", ...}, "result": {"devices":
[{"identifier": ..., "connectionProperties": {"tunnelState", "transportType", "pairingState"},
"deviceProperties": {"name", "osVersionNumber", "osBuildUpdate", "developerModeStatus"},
"hardwareProperties": {"productType": "iPhone14,5", "marketingName": "iPhone 13", "udid", "platform",
"deviceType"}}]}}``; ``device info details --device ID`` writes the same object for one device as
``result``. A failed command has ``"outcome": "failed"`` and an ``error`` with
``userInfo.NSLocalizedDescription``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json


@dataclass
class IOSDevice:
    identifier: str  # CoreDevice identifier (what --device accepts)
    udid: str
    name: str
    product_type: str  # e.g. "iPhone14,5"
    marketing_name: str  # e.g. "iPhone 13"
    device_type: str  # "iPhone", "iPad", ...
    os_version: str
    tunnel_state: str  # "connected" when usable right now
    transport: str  # "wired", "localNetwork", ...
    developer_mode: str
    reality: str  # "physical" | "virtual"
    os_build: str = ""
    pairing_state: str = ""  # "paired" once the device trusts this Mac

    @property
    def usable(self) -> bool:
        """Attached and reachable now (a paired device that is away reads 'unavailable')."""
        return self.tunnel_state in ("connected", "disconnected") and self.reality != "virtual" and bool(self.transport)


def _load(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(source, dict):
        return source, "devicectl output"
    return read_json(source, "devicectl output", "it may be truncated"), str(Path(source))


def _error_text(err: Any) -> str:
    msgs = []
    while isinstance(err, dict):
        info = err.get("userInfo", {}) if isinstance(err.get("userInfo"), dict) else {}
        desc = info.get("NSLocalizedDescription", {})
        if isinstance(desc, dict) and desc.get("string"):
            msgs.append(str(desc["string"]))
        nxt = info.get("NSUnderlyingError", {})
        err = nxt.get("error") if isinstance(nxt, dict) else None
    return "; ".join(msgs) or "unknown error"


def _result(source: str | Path | dict[str, Any]) -> tuple[Any, str]:
    data, where = _load(source)
    if not isinstance(data, dict) or "info" not in data:
        raise InputFileError(f"{where} is not devicectl JSON output (no 'info' object)")
    info = data["info"] if isinstance(data["info"], dict) else {}
    if info.get("outcome") != "success":
        raise InputFileError(f"devicectl reported failure in {where}: {_error_text(data.get('error'))}")
    return data.get("result"), where


def _device(d: Any, where: str, what: str) -> IOSDevice:
    """One device entry; each property present must be text (a number is taken as its text)."""
    if not isinstance(d, dict) or not isinstance(d.get("identifier"), str) or not d["identifier"]:
        raise InputFileError(f"{where}: {what} has no identifier")
    parts = {}
    for key in ("hardwareProperties", "deviceProperties", "connectionProperties"):
        part = d.get(key) or {}
        if not isinstance(part, dict):
            raise InputFileError(f"{where}: {what}: '{key}' is not an object (truncated or not devicectl output?)")
        parts[key] = part

    def text(key: str, name: str, default: str = "") -> str:
        value = parts[key].get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InputFileError(f"{where}: {what}: {key}.{name} is not text")
        return str(value)

    hw, dev, conn = "hardwareProperties", "deviceProperties", "connectionProperties"
    return IOSDevice(
        identifier=d["identifier"],
        udid=text(hw, "udid"),
        name=text(dev, "name"),
        product_type=text(hw, "productType"),
        marketing_name=text(hw, "marketingName"),
        device_type=text(hw, "deviceType"),
        os_version=text(dev, "osVersionNumber"),
        tunnel_state=text(conn, "tunnelState"),
        transport=text(conn, "transportType"),
        developer_mode=text(dev, "developerModeStatus"),
        reality=text(hw, "reality", "physical"),
        os_build=text(dev, "osBuildUpdate"),
        pairing_state=text(conn, "pairingState"),
    )


def parse_devicectl_devices(source: str | Path | dict[str, Any]) -> list[IOSDevice]:
    """Every device in a ``devicectl list devices`` JSON file."""
    result, where = _result(source)
    if not isinstance(result, dict) or not isinstance(result.get("devices"), list):
        raise InputFileError(f"{where}: devicectl output has no result.devices list (truncated?)")
    return [_device(d, where, f"device {i}") for i, d in enumerate(result["devices"])]


def parse_devicectl_details(source: str | Path | dict[str, Any]) -> IOSDevice:
    """The device in a ``devicectl device info details --device ID`` JSON file."""
    result, where = _result(source)
    return _device(result, where, "the device")
