"""Fuzzing the calibration data CSV (``calibrate --data``: ``catalog.read_csv``), in published_latency.csv's layout."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridexport.calibrate.catalog import read_csv

from fuzzing import examples, mutated_text, outcome

WORK = Path(tempfile.mkdtemp(prefix="fuzz-csv-"))
#: published_latency.csv's header and three rows of its kind (quoted commas, an empty resolution, a backbone)
CSV = """model,params_M,gmacs,resolution,device,runtime/compute_unit,latency_ms,top1,source
MobileNetV2 1.0x,3.4,0.3,224,iPhone 13,"CoreML (mlprogram FP16; compute units ALL, incl. ANE)",0.73,72.0,arXiv:2501.15369v2 Table 3
iFormer-M (backbone),8.9,1.1,,Pixel 8,TFLite (XNNPACK; backbone),4.25,,"vendor blog, 2024"
MNV4-Conv-S,3.8,0.2,256,Galaxy S24,QNN (NPU),0.6,73.8,paper
"""


def read(data: bytes) -> object:
    path = WORK / "published_latency.csv"
    path.write_bytes(data)
    return outcome(read_csv, path)


def check(result: object) -> None:
    if isinstance(result, tuple):
        rows, sha = result
        assert len(sha) == 64
        for r in rows:
            assert math.isfinite(r.latency_ms) and r.latency_ms > 0 and r.model and r.device
            assert r.resolution is None or (type(r.resolution) is int and 1 <= r.resolution <= 16384)
            assert isinstance(r.runtime, str) and isinstance(r.source, str) and isinstance(r.backbone, bool)


def test_the_sample_reads() -> None:
    rows, _ = read(CSV.encode())
    assert [r.resolution for r in rows] == [224, None, 256] and rows[1].backbone


@settings(max_examples=examples(500))
@given(text=mutated_text(CSV), bom=st.booleans())
@example(text=CSV.replace(",224,", "," + "1" * 5000 + ",", 1), bom=False)
def test_read_csv(text: str, bom: bool) -> None:
    check(read(("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogatepass")))


@settings(max_examples=examples(300))
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_read_csv_bytes(data: bytes) -> None:
    check(read(data))


def test_an_overlong_resolution_is_skipped() -> None:
    """Regression (fuzz): a resolution of over 4300 digits raised int()'s ValueError; it reads as unknown now."""
    rows, _ = read(CSV.replace(",224,", "," + "1" * 5000 + ",", 1).encode())
    assert [r.resolution for r in rows] == [None, None, 256]
