"""Fuzzing Profile JSON (``Profile.from_dict`` / ``Profile.load``, over ``records.structure``)."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.bench.profile import Profile
from hybridexport.errors import InputFileError

from fuzzing import VALUES, baseline, check_profile, examples, json_text, mutated, outcome

DOCS = baseline()["profiles"]
MEASURED, PREDICTED = DOCS
WORK = Path(tempfile.mkdtemp(prefix="fuzz-profile-"))


def load_text(text: str | bytes) -> Profile | InputFileError:
    path = WORK / "p.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return outcome(Profile.load, path)


def test_the_fixtures_load() -> None:
    for d in DOCS:
        check_profile(Profile.from_dict(copy.deepcopy(d)))


@settings(max_examples=examples(1500))
@given(doc=st.sampled_from(DOCS).flatmap(mutated))
@example(doc={**MEASURED, "layers": [{**MEASURED["layers"][0], "share": -0.5}]})
@example(doc={**PREDICTED, "total_ms": {"median": math.nan, "p10": 1.0, "p90": 2.0, "n": 1}})
def test_profile_from_dict(doc: object) -> None:
    p = outcome(Profile.from_dict, doc, "fuzz.json")
    if isinstance(p, Profile):
        check_profile(p)


@settings(max_examples=examples(600))
@given(text=st.sampled_from(DOCS).flatmap(json_text))
def test_profile_load_text(text: str) -> None:
    p = load_text(text)
    if isinstance(p, Profile):
        check_profile(p)


@settings(max_examples=examples(400))
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_profile_load_bytes(data: bytes) -> None:
    assert isinstance(load_text(data), InputFileError)


@settings(max_examples=examples(300))
@given(doc=VALUES)
def test_profile_from_anything(doc: object) -> None:
    assert isinstance(outcome(Profile.from_dict, doc, "fuzz.json"), InputFileError)


def test_negative_share_is_refused() -> None:
    """Regression (fuzz): a layer's share of -0.5 loaded although the check's message says it is refused."""
    doc = {**MEASURED, "layers": [{**MEASURED["layers"][0], "share": -0.5}]}
    with pytest.raises(InputFileError, match=r"\$\.layers\[0\] has a negative or non-finite share"):
        Profile.from_dict(doc)
