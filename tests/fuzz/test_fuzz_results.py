"""Fuzzing suite results JSON (``SuiteResult.from_dict`` / ``load``) and compare's ``load_side``, gzip included."""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridexport.bench.results import Side, SuiteResult, load_side
from hybridexport.errors import InputFileError

from fuzzing import VALUES, baseline, check_profile, dumps, examples, finite_ge0, json_text, mutated, outcome

RESULTS = baseline()
WORK = Path(tempfile.mkdtemp(prefix="fuzz-results-"))


def check_result(r: SuiteResult) -> None:
    assert isinstance(r.suite, str) and isinstance(r.created, str) and isinstance(r.source, str)
    assert finite_ge0(r.seconds) and all(isinstance(k, str) and finite_ge0(v) for k, v in r.item_seconds.items())
    for p in r.profiles:
        check_profile(p)
    for f in r.failures:
        assert all(isinstance(getattr(f, k), str) for k in ("model", "device", "format", "reason", "runner", "error"))
    again = SuiteResult.from_dict(json.loads(r.to_json()), source="round trip")
    assert len(again.profiles) == len(r.profiles) and again.failures == r.failures


def write(name: str, data: bytes, gz: bool) -> Path:
    path = WORK / name
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def test_the_fixture_loads() -> None:
    check_result(SuiteResult.from_dict(baseline()))


@settings(max_examples=examples(1000))
@given(doc=mutated(RESULTS, most=5))
def test_results_from_dict(doc: object) -> None:
    r = outcome(SuiteResult.from_dict, doc, "fuzz.json")
    if isinstance(r, SuiteResult):
        check_result(r)


@settings(max_examples=examples(500))
@given(text=json_text(RESULTS) | json_text(RESULTS["profiles"]) | json_text(RESULTS["profiles"][0]),
       gz=st.booleans())
def test_load_side(text: str, gz: bool) -> None:
    side = outcome(load_side, write("side.json", text.encode("utf-8", "surrogatepass"), gz))
    if isinstance(side, Side):
        assert side.profiles or "profiles" in text
        for p in side.profiles:
            check_profile(p)


@settings(max_examples=examples(400))
@given(data=st.binary(max_size=400), gz=st.booleans(), cut=st.integers(0, 400))
def test_results_load_bytes(data: bytes, gz: bool, cut: int) -> None:
    """Random bytes, plain or gzip-compressed, whole or cut short (a truncated download)."""
    path = write("r.json.gz", data, gz)
    path.write_bytes(path.read_bytes()[: max(cut, 1)] if cut < 400 else path.read_bytes())
    assert isinstance(outcome(SuiteResult.load, path), InputFileError)
    assert isinstance(outcome(load_side, path), InputFileError)


@settings(max_examples=examples(200))
@given(doc=VALUES)
def test_results_from_anything(doc: object) -> None:
    r = outcome(SuiteResult.from_dict, doc, "fuzz.json")
    assert isinstance(r, InputFileError) or (isinstance(doc, dict) and not r.profiles)


def test_gzip_of_the_fixture_loads() -> None:
    side = load_side(write("ok.json.gz", dumps(RESULTS).encode(), gz=True))
    assert len(side.profiles) == 2 and side.failures and math.isfinite(side.profiles[0].total_ms.median)
