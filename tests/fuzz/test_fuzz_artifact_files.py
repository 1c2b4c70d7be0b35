"""Fuzzing the files ``convert`` writes beside an artifact: manifests (``Manifest.from_dict`` / ``load``) and op
tables (``OpTable.from_dict`` / ``load``, gzip-compressed JSON), from the real TinyNet TFLite artifact's."""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.errors import InputFileError
from hybridexport.export.cache import sha256_path
from hybridexport.export.formats import get
from hybridexport.export.manifest import Manifest, Parity
from hybridexport.optable import OpTable

from fuzzing import VALUES, dumps, examples, finite_ge0, json_text, mutated, outcome

TFLITE = Path(__file__).resolve().parents[1] / "data" / "bench" / "tinynet.tflite"
WORK = Path(tempfile.mkdtemp(prefix="fuzz-artifact-"))
_table = get("tflite").op_table(TFLITE)
_table.ops = _table.ops[:3]
TABLE = _table.to_dict()
MANIFEST = Manifest(
    model="tinynet", resolution=32, format="tflite", precision="fp32", path=str(TFLITE),
    size_bytes=TFLITE.stat().st_size, sha256=sha256_path(TFLITE), versions={"torch": "2.x"}, passes=["fuse_bn"],
    parity=Parity(verified=True, max_abs_err=1e-6, rel_l2_err=1e-7, top1_agreement=1.0, n_inputs=4, tolerance=1e-3,
                  method="litert"),
    ops={"CONV_2D": 2, "GELU": 2}, rank5_tensors=0, seconds=1.5, input_shapes=[[1, 3, 32, 32]],
    op_table="tinynet.tflite.ops.json.gz").to_dict()


def check_manifest(m: Manifest) -> None:
    assert all(isinstance(getattr(m, k), str) for k in ("model", "format", "precision", "path", "sha256", "op_table"))
    assert type(m.resolution) is int and m.resolution >= 0 and type(m.size_bytes) is int and m.size_bytes >= 0
    assert type(m.rank5_tensors) is int and m.rank5_tensors >= 0 and finite_ge0(m.seconds)
    assert all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in m.ops.items())
    assert all(s and all(type(d) is int and d >= 1 for d in s) for s in m.input_shapes)
    p = m.parity
    assert isinstance(p.verified, bool) and type(p.n_inputs) is int and p.n_inputs >= 0
    for v in (p.max_abs_err, p.rel_l2_err):  # inf or NaN: outputs that overflowed (verify records the worst)
        assert v is None or not v < 0, v
    assert p.top1_agreement is None or 0 <= p.top1_agreement <= 1
    assert p.tolerance is None or p.tolerance >= 0
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert json.dumps(again.to_dict()) == json.dumps(m.to_dict())


def check_table(t: OpTable) -> None:
    for r in t.ops:
        assert all(type(getattr(r, k)) is int and getattr(r, k) >= 0 for k in (
            "macs", "w_elems", "in_elems", "out_elems", "rank", "erank", "max_dim", "last_dim", "bytes"))
        assert all(isinstance(x, str) for x in (r.name, r.op_type, r.kind, r.module, *r.inputs, *r.dtypes, *r.findings))
    assert all(type(x) is int and x >= 0 for s in (*t.inputs, *t.outputs) for x in s.shape)
    again = OpTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert json.dumps(again.to_dict()) == json.dumps(t.to_dict())


def test_the_fixtures_load() -> None:
    check_manifest(Manifest.from_dict(json.loads(json.dumps(MANIFEST))))
    check_table(OpTable.from_dict(json.loads(json.dumps(TABLE))))


@settings(max_examples=examples(800))
@given(d=mutated(MANIFEST))
@example(d={**MANIFEST, "seconds": -1.0})
@example(d={**MANIFEST, "input_shapes": [[1, 3, 0, 32]]})
@example(d={**MANIFEST, "parity": {**MANIFEST["parity"], "max_abs_err": -1.0}})
def test_manifest_from_dict(d: Any) -> None:
    m = outcome(Manifest.from_dict, d, "fuzz.json")
    if isinstance(m, Manifest):
        check_manifest(m)


@settings(max_examples=examples(300))
@given(text=json_text(MANIFEST) | VALUES.map(dumps) | st.text(max_size=100))
def test_manifest_load(text: str) -> None:
    path = WORK / "tinynet.tflite.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    m = outcome(Manifest.load, path)
    if isinstance(m, Manifest):
        check_manifest(m)


@settings(max_examples=examples(800))
@given(d=mutated(TABLE))
def test_op_table_from_dict(d: Any) -> None:
    t = outcome(OpTable.from_dict, d, "fuzz.ops.json.gz")
    if isinstance(t, OpTable):
        check_table(t)


@settings(max_examples=examples(300))
@given(text=json_text(TABLE) | st.text(max_size=100), gz=st.booleans())
def test_op_table_load(text: str, gz: bool) -> None:
    path = WORK / "t.ops.json.gz"
    raw = text.encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    t = outcome(OpTable.load, path)
    if isinstance(t, OpTable):
        check_table(t)


@pytest.mark.parametrize("change", [{"seconds": -1.0}, {"seconds": math.inf}, {"input_shapes": [[1, 3, 0, 32]]},
                                    {"rank5_tensors": -2}, {"ops": {"CONV_2D": -1}},
                                    {"parity": {**MANIFEST["parity"], "max_abs_err": -1.0}},
                                    {"parity": {**MANIFEST["parity"], "top1_agreement": 1.5}},
                                    {"parity": {**MANIFEST["parity"], "n_inputs": -1}}])
def test_manifest_garbage_is_refused(change: dict[str, Any]) -> None:
    """Regression (fuzz): these manifests loaded (a parity error of inf or NaN still does: verify writes it)."""
    with pytest.raises(InputFileError):
        Manifest.from_dict({**json.loads(json.dumps(MANIFEST)), **change})


def test_an_overflowed_parity_still_loads() -> None:
    d = {**json.loads(json.dumps(MANIFEST)), "parity": {**MANIFEST["parity"], "max_abs_err": math.inf,
                                                      "rel_l2_err": math.nan, "verified": False}}
    assert math.isnan(Manifest.from_dict(json.loads(dumps(d))).parity.rel_l2_err)
