"""``xcrun devicectl list devices --json-output PATH`` (Xcode 15+): the attached Apple devices.

The file is ``{"info": {"outcome": "success", ...}, "result": {"devices": [{"identifier": ...,
"connectionProperties": {...}, "deviceProperties": {"name", "osVersionNumber"}, "hardwareProperties":
{"productType": "iPhone14,5", "marketingName": "iPhone 13", "udid", "platform", "deviceType"}}]}}``;
a failed command has ``"outcome": "failed"`` and an ``error`` with ``userInfo.NSLocalizedDescription``.
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


def parse_devicectl_devices(source: str | Path | dict[str, Any]) -> list[IOSDevice]:
    """Every device in a ``devicectl list devices`` JSON file."""
    data, where = _load(source)
    if not isinstance(data, dict) or "info" not in data:
        raise InputFileError(f"{where} is not devicectl JSON output (no 'info' object)")
    info = data["info"] if isinstance(data["info"], dict) else {}
    if info.get("outcome") != "success":
        raise InputFileError(f"devicectl reported failure in {where}: {_error_text(data.get('error'))}")
    result = data.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("devices"), list):
        raise InputFileError(f"{where}: devicectl output has no result.devices list (truncated?)")
    devices = []
    for i, d in enumerate(result["devices"]):
        if not isinstance(d, dict) or "identifier" not in d:
            raise InputFileError(f"{where}: device {i} has no identifier")
        hw = d.get("hardwareProperties") or {}
        dev = d.get("deviceProperties") or {}
        conn = d.get("connectionProperties") or {}
        devices.append(IOSDevice(
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
        ))
    return devices
