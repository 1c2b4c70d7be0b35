"""Fuzzing what coremltools' MLModelBenchmarker returns from a device (``apple_coreml.rows_and_plan``): per-op
execution infos (output names, compute-plan devices, timing samples) and the prediction times."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from coremltools.models.compute_device import (
    MLCPUComputeDevice,
    MLGPUComputeDevice,
    MLNeuralEngineComputeDevice,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.profile import measured_samples
from hybridexport.bench.runners.apple_coreml import Measured, rows_and_plan
from hybridexport.errors import InputFileError

from fuzzing import WEIRD, examples, finite_ge0, outcome

DEVICES = [object.__new__(c) for c in (MLCPUComputeDevice, MLGPUComputeDevice, MLNeuralEngineComputeDevice)]
TIMES = st.floats(0, 50) | st.integers(0, 10**6) | WEIRD
SAMPLES = st.lists(TIMES, max_size=6) | st.lists(st.floats(0.001, 50), min_size=1, max_size=6)


@st.composite
def op_info(draw: st.DrawFn) -> Any:
    outputs = [SimpleNamespace(name=n) for n in draw(st.lists(st.sampled_from(["conv_0", "relu_1", "x", ""]),
                                                              max_size=2))]
    usage = draw(st.none() | st.builds(lambda p, s: SimpleNamespace(preferred_compute_device=p,
                                                                    supported_compute_devices=s),
                                       st.sampled_from(DEVICES), st.lists(st.sampled_from(DEVICES), max_size=3)))
    return SimpleNamespace(spec=SimpleNamespace(outputs=outputs, type=draw(st.sampled_from(["conv", "relu", "add"]))),
                           compute_device_usage=usage, measurement=SimpleNamespace(samples=draw(SAMPLES)))


@settings(max_examples=examples(400))
@given(ops=st.lists(op_info(), max_size=6), predict=SAMPLES)
@example(ops=[], predict=[-1.0, 2.0])
@example(ops=[SimpleNamespace(spec=SimpleNamespace(outputs=[SimpleNamespace(name="conv_0")], type="conv"),
                              compute_device_usage=SimpleNamespace(preferred_compute_device=DEVICES[0],
                                                                   supported_compute_devices=[]),
                              measurement=SimpleNamespace(samples=[1.0]))], predict=[1e-320])
def test_rows_and_plan(ops: list[Any], predict: list[Any]) -> None:
    got = outcome(rows_and_plan, Measured(load_ms=[1.0], predict_ms=predict, ops=ops), None)
    if isinstance(got, tuple):
        rows, planned = got
        for r in rows:
            assert r.ms.samples and all(finite_ge0(x) for x in r.ms.samples)
            assert r.compute_unit in ("ane", "gpu", "cpu", "?")
        for p in planned:
            assert p.unit in ("ane", "gpu", "cpu") and (p.cost is None or finite_ge0(p.cost))


@settings(max_examples=examples(300))
@given(samples=SAMPLES | WEIRD)
def test_measured_samples(samples: Any) -> None:
    xs = outcome(measured_samples, samples, "fuzz")
    if isinstance(xs, list):
        assert all(type(x) is float and math.isfinite(x) and x >= 0 for x in xs)


@pytest.mark.parametrize("bad", [[-1.0], [math.nan], [math.inf], ["3"], [True]])
def test_a_damaged_op_time_is_one_error(bad: list[Any]) -> None:
    """Regression (fuzz): negative, NaN or infinite op times became Profile rows, and text raised TypeError."""
    op = SimpleNamespace(spec=SimpleNamespace(outputs=[SimpleNamespace(name="conv_0")], type="conv"),
                         compute_device_usage=None, measurement=SimpleNamespace(samples=bad))
    with pytest.raises(InputFileError, match="Core ML op 'conv_0'"):
        rows_and_plan(Measured(load_ms=[1.0], predict_ms=[2.0], ops=[op]), None)
