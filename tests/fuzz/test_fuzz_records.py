"""Fuzzing the shared loaders every JSON reader goes through: ``jsonfile.parse_json`` (text and bytes),
``records.structure`` (typed dataclasses), and one user of both, device profiles (``profiles/*.json``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridexport.bench.devices import KINDS, NAME, DeviceProfile, _from_dict, load_device
from hybridexport.bench.runners import RUNNERS
from hybridexport.errors import HybridExportError, InputFileError
from hybridexport.jsonfile import parse_json
from hybridexport.records import structure

from fuzzing import JSON, VALUES, dumps, examples, mutated, outcome

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
DEVICES = {p.stem: json.loads(p.read_text()) for p in sorted(PROFILES.glob("*.json"))}


@dataclass
class Inner:
    x: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Record:
    """Every kind of field the loaders use."""

    name: str
    count: int
    ratio: float
    on: bool
    inner: Inner
    sizes: list[int] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None
    rows: list[Inner] = field(default_factory=list)
    anything: dict[str, Any] = field(default_factory=dict)


GOOD = {"name": "n", "count": 3, "ratio": 0.5, "on": True, "inner": {"x": 1.0, "tags": ["a"]}, "sizes": [1, 2],
        "table": {"a": 1.5}, "maybe": None, "rows": [{"x": 2}], "anything": {"k": [1, None]}}


def check_record(r: Record) -> None:
    assert type(r.name) is str and type(r.count) is int and type(r.ratio) is float and type(r.on) is bool
    assert type(r.inner) is Inner and type(r.inner.x) is float and all(type(t) is str for t in r.inner.tags)
    assert all(type(s) is int for s in r.sizes) and all(type(k) is str and type(v) is float for k, v in r.table.items())
    assert r.maybe is None or type(r.maybe) is int
    assert all(type(x) is Inner and type(x.x) is float for x in r.rows)


def test_the_good_record_loads() -> None:
    check_record(structure(json.loads(json.dumps(GOOD)), Record, "fuzz", "fix it"))


@settings(max_examples=examples(1000))
@given(d=mutated(GOOD, most=3), extra_ok=st.booleans())
def test_structure(d: Any, extra_ok: bool) -> None:
    r = outcome(structure, d, Record, "fuzz.json", "fix it", extra_ok=extra_ok)
    if isinstance(r, Record):
        check_record(r)
    else:
        assert str(r).startswith("fuzz.json: ") and str(r).endswith("; fix it"), str(r)


@settings(max_examples=examples(200))
@given(d=VALUES)
def test_structure_of_anything(d: Any) -> None:
    r = outcome(structure, d, Record, "fuzz.json", "fix it")
    assert isinstance(r, InputFileError)


@settings(max_examples=examples(800))
@given(text=JSON.map(dumps) | st.text(max_size=200) | st.binary(max_size=200)
       | st.sampled_from(['"\\ud800"', "[" * 100000, "1" * 5000, "-" + "1" * 5000 + "e1", '{"a": NaN}', "\ufeff{}",
                          '"\\u0000"', "[1,]", "{\"a\" 1}"]))
def test_parse_json(text: str | bytes) -> None:
    v = outcome(parse_json, text, "fuzz.json", "fix it")
    if not isinstance(v, HybridExportError):
        json.dumps(v)  # whatever it returns can be written back


@settings(max_examples=examples(800))
@given(d=st.sampled_from(sorted(DEVICES)).flatmap(lambda n: mutated(DEVICES[n])))
def test_device_profile(d: Any) -> None:
    p = outcome(_from_dict, d, "fuzz")
    if isinstance(p, DeviceProfile):
        assert NAME.match(p.name) and p.kind in KINDS and set(p.runners) <= set(RUNNERS)
        threads = p.protocol.get("threads", 1)
        assert type(threads) is int and threads >= 1
        for key in ("cpu", "npu", "memory"):
            for k in ("peak_tops", "bandwidth_gbps", "size_gb"):
                v = getattr(p, key).get(k)
                assert v is None or (math.isfinite(v) and v > 0), (key, k, v)


@settings(max_examples=examples(300))
@given(name=st.text(max_size=20) | st.sampled_from(["../pyproject", "host\0", "HOST", " pixel_8 ", "a/b", ".."]))
def test_load_device_by_name(name: str) -> None:
    p = outcome(load_device, name)
    if isinstance(p, DeviceProfile):
        assert p.name in DEVICES
