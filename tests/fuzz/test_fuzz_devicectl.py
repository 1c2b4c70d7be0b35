"""Fuzzing ``xcrun devicectl`` JSON (``parse_devicectl_devices`` / ``parse_devicectl_details``), from the fixtures."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridexport.bench.parsers.devicectl import IOSDevice, parse_devicectl_details, parse_devicectl_devices

from fuzzing import VALUES, dumps, examples, json_text, mutated, outcome

TESTS = Path(__file__).resolve().parents[1] / "data"
LISTS = [json.loads(p.read_text()) for p in sorted((TESTS / "bench").glob("devicectl_*.json"))]
DETAILS = json.loads((TESTS / "apple" / "devicectl_info_details_iphone13_synthesized.json").read_text())
WORK = Path(tempfile.mkdtemp(prefix="fuzz-devicectl-"))


def check_device(d: IOSDevice) -> None:
    assert d.identifier and all(isinstance(v, str) for v in dataclasses.asdict(d).values())
    assert isinstance(d.usable, bool)


def test_the_fixtures_parse() -> None:
    assert any(parse_devicectl_devices(json.loads(json.dumps(d))) for d in LISTS if d["info"]["outcome"] == "success")
    check_device(parse_devicectl_details(json.loads(json.dumps(DETAILS))))


@settings(max_examples=examples(700))
@given(doc=st.sampled_from(LISTS).flatmap(mutated))
def test_parse_devices(doc: Any) -> None:
    devices = outcome(parse_devicectl_devices, doc)
    if isinstance(devices, list):
        for d in devices:
            check_device(d)


@settings(max_examples=examples(400))
@given(doc=mutated(DETAILS))
def test_parse_details(doc: Any) -> None:
    d = outcome(parse_devicectl_details, doc)
    if isinstance(d, IOSDevice):
        check_device(d)


@settings(max_examples=examples(300))
@given(text=st.sampled_from(LISTS).flatmap(json_text) | VALUES.map(dumps) | st.text(max_size=200))
def test_parse_devices_file(text: str) -> None:
    path = WORK / "devices.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    devices = outcome(parse_devicectl_devices, path)
    if isinstance(devices, list):
        for d in devices:
            check_device(d)
