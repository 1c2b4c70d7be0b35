"""Fuzzing the parsers of command-line values: numeric options and shapes (``cliargs``), compare's thresholds
and statistics, and the keyword arguments of model references (``zoo.refs.parse_kwargs``)."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.cliargs import ranged, ranged_float, shape
from hybridexport.errors import HybridExportError, InputFileError
from hybridexport.report.command import parse_threshold
from hybridexport.report.compare import _quantiles_of
from hybridexport.report.stats import parse_statistic
from hybridexport.zoo.refs import ModelFileError, canonical, parse_kwargs

from fuzzing import examples, outcome

NUMBERISH = st.one_of(
    st.integers().map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.-+eE%x_ ×\n\t١²", max_size=12), st.text(max_size=12),
    st.sampled_from(["1" * 5000, "0x10", "1e999", "nan", "-0", "  7 ", "5%", "1_000"]))


def argparse_outcome(parse, text: str):  # noqa: ANN001, ANN201 - an argparse type: ArgumentTypeError is its error
    try:
        return outcome(parse, text)
    except argparse.ArgumentTypeError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
        return exc


@settings(max_examples=examples(600))
@given(text=NUMBERISH, lo=st.integers(-5, 5), span=st.integers(0, 10**6))
def test_ranged(text: str, lo: int, span: int) -> None:
    v = argparse_outcome(ranged(lo, lo + span), text)
    if not isinstance(v, Exception):
        assert type(v) is int and lo <= v <= lo + span


@settings(max_examples=examples(600))
@given(text=NUMBERISH, closed=st.booleans())
def test_ranged_float(text: str, closed: bool) -> None:
    v = argparse_outcome(ranged_float(0.0, 1.0, closed_hi=closed), text)
    if not isinstance(v, Exception):
        assert math.isfinite(v) and 0 <= v <= 1 and (closed or v < 1)


@settings(max_examples=examples(600))
@given(text=st.lists(NUMBERISH, max_size=10).map("x".join) | NUMBERISH)
@example(text="1x3x\n224x224")
def test_shape(text: str) -> None:
    v = argparse_outcome(shape, text)
    if not isinstance(v, Exception):
        assert 1 <= len(v) <= 8 and all(type(d) is int and 1 <= d <= 1 << 20 for d in v)


@settings(max_examples=examples(600))
@given(text=NUMBERISH)
@example(text="5\n%")
def test_parse_threshold(text: str) -> None:
    v = outcome(parse_threshold, text)
    if not isinstance(v, HybridExportError):
        assert math.isfinite(v) and 0 <= v < 10


@settings(max_examples=examples(600))
@given(text=st.text(alphabet="pmedian0123456789+١²P \n", max_size=12) | st.text(max_size=8))
@example(text="p²")
@example(text="p١٢")
def test_statistics(text: str) -> None:
    for parse in (parse_statistic, _quantiles_of):
        v = outcome(parse, text)
        if not isinstance(v, HybridExportError):
            assert all(0 < q < 1 for q in (v if isinstance(v, list) else [v]))


PY_BITS = st.sampled_from(["a=", "b=", "(", ")", "[", "]", "{", "}", ",", ":", "1", "0x" + "f" * 5000, "'s'", "**",
                           "*", "-", "not ", "lambda: 0", "None", "1e999", "{[]: 1}", "{{1}}", "\\x00", "#", "\n",
                           "=", " ", "j", "f(", "a=1)(b=2", "a=1), g("])


@settings(max_examples=examples(1000))
@given(text=st.lists(PY_BITS, max_size=12).map("".join) | st.text(max_size=30))
@example(text="a=1), g(")
@example(text="a=1)(b=2")
@example(text="a={[]: 1}")
@example(text="a=" + "-" * 100000 + "1")
def test_parse_kwargs(text: str) -> None:
    v = outcome(parse_kwargs, text, "file.py:make")
    if isinstance(v, dict):
        assert all(isinstance(k, str) and k.isidentifier() for k in v)
        assert canonical("make", v).startswith("make")


@pytest.mark.parametrize("text", ["a=1), g(", "a=1)(b=2", "a={[]: 1}", "a={{1}}", "a=0x" + "f" * 5000,
                                  "a=" + "-" * 100000 + "1", "a=1" + "+1" * 100000])
def test_parse_kwargs_refuses_as_one_error(text: str) -> None:
    """Regression (fuzz): these raised AssertionError, TypeError, MemoryError or RecursionError, or (a=1)(b=2)
    silently dropped a=1; an over-long hex integer parsed but could not be named by canonical()."""
    with pytest.raises(ModelFileError):
        parse_kwargs(text, "file.py:make")


@pytest.mark.parametrize("text", ["p²", "p١٢"])
def test_a_non_ascii_percentile_is_one_error(text: str) -> None:
    """Regression (fuzz): 'p²' passed isdigit() and raised int()'s ValueError (with its own message)."""
    with pytest.raises(InputFileError, match="is not 'median' or pNN"):
        parse_statistic(text)


def test_a_message_quoting_a_line_break_stays_one_line() -> None:
    """Regression (fuzz): "threshold '1\\n2' is not a number" was two lines; HybridExportError now escapes breaks."""
    with pytest.raises(InputFileError) as info:
        parse_threshold("1\n\u20282")
    assert str(info.value) == "threshold '1\\n\\u20282' is not a number; write e.g. 5% or 0.05"
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'1\\nx' is not a whole number$"):
        ranged(1)("1\nx")
