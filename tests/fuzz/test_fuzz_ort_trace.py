"""Fuzzing onnxruntime profiler traces (``parse_ort_trace``), from the recorded TinyNet trace."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.parsers.ort_trace import OrtTrace, parse_ort_trace
from hybridexport.errors import InputFileError

from fuzzing import VALUES, dumps, examples, finite_ge0, json_text, mutated, outcome

TRACE = json.loads((Path(__file__).resolve().parents[1] / "data" / "bench" / "ort_trace_tinynet.json").read_text())
WORK = Path(tempfile.mkdtemp(prefix="fuzz-ort-"))
KERNEL = next(i for i, ev in enumerate(TRACE) if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"))


def with_args(**args: Any) -> list[Any]:
    trace = json.loads(json.dumps(TRACE))
    trace[KERNEL]["args"].update(args)
    return trace


def check_trace(t: OrtTrace) -> None:
    assert t.runs and len(t.runs) == len(t.run_us) and all(finite_ge0(x) for x in t.run_us)
    for run in t.runs:
        assert all(n in t.nodes and finite_ge0(us) for n, us in run.items())
    for name, node in t.nodes.items():
        assert node.name == name and isinstance(node.op_type, str) and isinstance(node.provider, str)
        assert node.node_index is None or (type(node.node_index) is int and node.node_index >= 0)


def test_the_fixture_parses() -> None:
    check_trace(parse_ort_trace(json.loads(json.dumps(TRACE))))


@settings(max_examples=examples(500))
@given(events=mutated(TRACE, most=4))
@example(events=with_args(node_index="1" * 5000))
@example(events=with_args(provider={"name": "CPUExecutionProvider"}))
def test_parse_ort_trace(events: Any) -> None:
    t = outcome(parse_ort_trace, events)
    if isinstance(t, OrtTrace):
        check_trace(t)


@settings(max_examples=examples(250))
@given(text=json_text(TRACE) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")) | VALUES.map(dumps))
def test_parse_ort_trace_file(text: str) -> None:
    path = WORK / "trace.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    t = outcome(parse_ort_trace, path)
    if isinstance(t, OrtTrace):
        check_trace(t)


def test_an_overlong_node_index_is_not_fatal() -> None:
    """Regression (fuzz): a node_index string of over 4300 digits raised int()'s ValueError."""
    t = parse_ort_trace(with_args(node_index="1" * 5000))
    assert t.nodes[TRACE[KERNEL]["name"][: -len("_kernel_time")]].node_index is None


def test_a_provider_that_is_not_text_is_refused() -> None:
    """Regression (fuzz): a provider object was kept as its Python repr."""
    with pytest.raises(InputFileError, match="provider"):
        parse_ort_trace(with_args(provider={"name": "CPUExecutionProvider"}))
