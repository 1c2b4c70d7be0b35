"""Fuzzing ``benchmark_model --enable_op_profiling`` output (``parse_benchmark_model``), from the recorded fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.parsers.benchmark_model import BenchmarkModelOutput, RunStats, parse_benchmark_model
from hybridexport.errors import InputFileError

from fuzzing import examples, finite_ge0, mutated_text, outcome

DATA = Path(__file__).resolve().parents[1] / "data" / "bench"
TEXTS = [p.read_text() for p in sorted(DATA.glob("benchmark_model_*.txt"))]
WHOLE = TEXTS[[i for i, p in enumerate(sorted(DATA.glob("benchmark_model_*.txt"))) if "mobilenet" in p.name][0]]


def check_stats(st_: RunStats | None) -> None:
    if st_ is None:
        return
    assert isinstance(st_.count, int) and st_.count >= 0
    for v in (st_.first_us, st_.curr_us, st_.min_us, st_.max_us, st_.avg_us, st_.std_us):
        assert v is None or finite_ge0(v)
    if st_.avg_us is not None:
        assert st_.min_us <= st_.avg_us <= st_.max_us


def check_output(out: BenchmarkModelOutput) -> None:
    assert out.rows and out.layout in ("with-start", "without-start")
    for r in out.rows:
        assert r.node_type and r.name and isinstance(r.times_called, int) and r.times_called >= 0
        assert all(finite_ge0(v) for v in (r.first_ms, r.avg_ms, r.pct, r.mem_kb, r.ms_per_run))
        assert r.start_ms is None or finite_ge0(r.start_ms)
    check_stats(out.inference)
    check_stats(out.profiled)
    assert out.init_ms is None or finite_ge0(out.init_ms)
    assert out.nodes_executed is None or out.nodes_executed >= 0
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.settings.items())


def test_the_fixtures_parse() -> None:
    for text in TEXTS:
        check_output(parse_benchmark_model(text, require_total=False))


@settings(max_examples=examples(1200))
@given(text=st.sampled_from(TEXTS).flatmap(mutated_text), require_total=st.booleans())
@example(text=WHOLE.replace("count=50 ", "count=" + "1" * 5000 + " ", 1), require_total=True)
def test_parse_benchmark_model(text: str, require_total: bool) -> None:
    out = outcome(parse_benchmark_model, text, "fuzz.txt", require_total=require_total)
    if isinstance(out, BenchmarkModelOutput):
        check_output(out)
        if require_total:
            assert math.isfinite(out.total.curr_us)


@settings(max_examples=examples(300))
@given(text=st.text(max_size=400) | st.sampled_from(TEXTS).map(lambda t: t[: len(t) // 2]))
def test_parse_benchmark_model_text(text: str) -> None:
    out = outcome(parse_benchmark_model, text)
    if isinstance(out, BenchmarkModelOutput):
        check_output(out)


@pytest.mark.parametrize("old", ["count=50 first", "Number of nodes executed: 31"])
def test_an_overlong_count_is_one_error(old: str) -> None:
    """Regression (fuzz): a count of over 4300 digits raised int()'s ValueError."""
    text = WHOLE.replace(old, old.replace("50", "1" * 5000).replace("31", "1" * 5000), 1)
    assert text != WHOLE
    with pytest.raises(InputFileError, match="not a count"):
        parse_benchmark_model(text)
