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
    if not isinstance(d, dict) or "identifier" not in d:
        raise InputFileError(f"{where}: {what} has no identifier")
    hw = d.get("hardwareProperties") or {}
    dev = d.get("deviceProperties") or {}
    conn = d.get("connectionProperties") or {}
    return IOSDevice(
        identifier=str(d["identifier"]),
        udid=str(hw.get("udid", "")),
        name=str(dev.get("name", "")),
        product_type=str(hw.get("productType", "")),
        marketing_name=str(hw.get("marketingName", "")),
        device_type=str(hw.get("deviceType", "")),
        os_version=str(dev.get("osVersionNumber", "")),
        tunnel_state=str(conn.get("tunnelState", "")),
        transport=str(conn.get("transportType", "")),
        developer_mode=str(dev.get("developerModeStatus", "")),
        reality=str(hw.get("reality", "physical")),
        os_build=str(dev.get("osBuildUpdate", "")),
        pairing_state=str(conn.get("pairingState", "")),
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
