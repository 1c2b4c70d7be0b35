"""Fuzzing Qualcomm AI Hub profiles (``profile_from_hub`` on ``job.download_profile()`` dicts), from the fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.devices import load_device
from hybridexport.bench.profile import Profile
from hybridexport.bench.runners import BenchRequest
from hybridexport.bench.runners.qai_hub import FarmJobError, profile_from_hub
from hybridexport.export.manifest import Manifest, Parity

from fuzzing import VALUES, check_profile, examples, mutated, outcome

DATA = Path(__file__).resolve().parents[1] / "data"
HUB = json.loads((DATA / "qai_hub" / "download_profile_qai_hub_test_client.json").read_text())
TFLITE = DATA / "bench" / "tinynet.tflite"
REQUEST = BenchRequest(
    device=load_device("galaxy-s24"), runs=2, warmup=0,
    manifest=Manifest(model="tinynet", resolution=32, format="tflite", precision="fp32", path=str(TFLITE),
                      size_bytes=TFLITE.stat().st_size, sha256="0" * 64, versions={}, passes=[],
                      parity=Parity(verified=False), ops={}, rank5_tensors=0, seconds=0.0))


def from_hub(d: Any) -> Profile | FarmJobError:
    return outcome(profile_from_hub, d, REQUEST, "tflite", runner="qai-hub", environment={"qai_hub_job_id": "j1"})


def with_summary(**kw: Any) -> dict[str, Any]:
    d = json.loads(json.dumps(HUB))
    d["execution_summary"].update(kw)
    return d


def test_the_fixture_maps() -> None:
    p = from_hub(json.loads(json.dumps(HUB)))
    assert isinstance(p, Profile)
    check_profile(p)


@settings(max_examples=examples(400))
@given(d=mutated(HUB, most=4))
@example(d=with_summary(all_inference_times=[-5, 4205]))
@example(d=with_summary(all_inference_times=["10003"]))
@example(d=with_summary(first_load_time=10**400))
@example(d={**HUB, "execution_detail": [{"name": {"x": 1}, "execution_time": 3}]})
def test_profile_from_hub(d: Any) -> None:
    p = from_hub(d)
    if isinstance(p, Profile):
        check_profile(p)
        assert all(x is None or (math.isfinite(x) and x >= 0) for x in (p.extra["first_load_ms"], p.extra["warm_load_ms"]))


@settings(max_examples=examples(200))
@given(d=VALUES | st.fixed_dictionaries({"execution_summary": VALUES, "execution_detail": VALUES}))
def test_profile_from_anything(d: Any) -> None:
    p = from_hub(d)
    if isinstance(p, Profile):
        check_profile(p)


@pytest.mark.parametrize("d", [with_summary(all_inference_times=[-5, 4205]), with_summary(all_inference_times=["1"]),
                               with_summary(all_inference_times=[0]), {"execution_summary": [1], "execution_detail": []},
                               {**HUB, "execution_detail": [{"name": {"x": 1}, "execution_time": 3}]},
                               {**HUB, "execution_detail": ["layer"]}])
def test_garbage_from_the_farm_is_one_error(d: dict[str, Any]) -> None:
    """Regression (fuzz): a negative or zero time loaded, a time as text and a summary that is not an object raised
    ValueError/AttributeError, and a layer name object was kept as its Python repr."""
    with pytest.raises(FarmJobError):
        profile_from_hub(d, REQUEST, "tflite", runner="qai-hub", environment={})
