"""Fuzzing suite TOML (``parse_suite`` with ``check_models=False``), from the project's own suite file."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.suite.spec import _NAME, _RANGES, SUITE_FORMATS, Suite, parse_suite
from hybridexport.errors import InputFileError

from fuzzing import examples, mutated, outcome

SUITE_TEXT = (Path(__file__).resolve().parents[2] / "benchmarks" / "suite.toml").read_text()
SUITE = tomllib.loads(SUITE_TEXT)


def toml_value(v: Any) -> str | None:
    """``v`` as a TOML value (inline tables and arrays); None (no TOML form) drops the key or element."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**4000 else hex(v)  # TOML takes hex integers of any length
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string (a lone surrogate escape is invalid in both)
    if isinstance(v, list):
        return "[" + ", ".join(x for x in map(toml_value, v) if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {x}" for k, x in ((k, toml_value(x)) for k, x in v.items())
                               if x is not None) + "}"
    return None


def toml_doc(doc: Any) -> str:
    if not isinstance(doc, dict):
        return f"x = {toml_value(doc)}"
    return "\n".join(f"{json.dumps(k)} = {x}" for k, x in ((k, toml_value(v)) for k, v in doc.items()) if x is not None)


def check_suite(s: Suite) -> None:
    assert _NAME.match(s.name) and isinstance(s.description, str) and s.items
    assert s.farm_jobs is None or (isinstance(s.farm_jobs, int) and 1 <= s.farm_jobs <= 256)
    keys = set()
    for it in s.items:
        assert it.format in SUITE_FORMATS and it.model and it.device
        for key, (lo, hi) in _RANGES.items():
            v = getattr(it, key)
            assert v is None or (type(v) is int and lo <= v <= hi), (key, v)
        assert it.input_shapes is None or all(s and all(type(d) is int and d >= 1 for d in s) for s in it.input_shapes)
        assert it.key not in keys
        keys.add(it.key)


def test_the_suite_file_parses() -> None:
    check_suite(parse_suite(toml_doc(SUITE), check_models=False))
    check_suite(parse_suite(SUITE_TEXT, check_models=False))


@settings(max_examples=examples(1200))
@given(doc=mutated(SUITE, most=4))
@example(doc={**SUITE, "defaults": {"runs": 10**5000}})
def test_parse_suite_structured(doc: Any) -> None:
    s = outcome(parse_suite, toml_doc(doc), "fuzz.toml", check_models=False)
    if isinstance(s, Suite):
        check_suite(s)


@settings(max_examples=examples(500))
@given(text=st.text(max_size=300) | st.tuples(st.just(SUITE_TEXT), st.integers(0, len(SUITE_TEXT)), st.text(
    max_size=5)).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]))
def test_parse_suite_text(text: str) -> None:
    s = outcome(parse_suite, text, "fuzz.toml", check_models=False)
    if isinstance(s, Suite):
        check_suite(s)


@pytest.mark.parametrize("number", ["1" * 5000, "0x" + "f" * 5000])
def test_an_overlong_integer_is_one_error(number: str) -> None:
    """Regression (fuzz): tomllib raised a bare ValueError for a decimal integer of over 4300 digits, and the range message raised one formatting a long hex one."""
    with pytest.raises(InputFileError, match="not valid TOML|must be at most 100000"):
        parse_suite(f'name = "x"\n[defaults]\nruns = {number}\n', check_models=False)
