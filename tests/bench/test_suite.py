"""Suites: TOML parsing and its errors, running with an injected bench, the results file, the committed suite."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from hybridexport.bench import results as results_mod
from hybridexport.bench.suite import SuiteResult, load_suite, parse_suite, run_suite, run_suite_file
from hybridexport.bench.suite import schedule as schedule_mod
from hybridexport.errors import InputFileError, UnsupportedOpError
from hybridexport.report.compare import compare

from synthetic import measured_profile, predicted_profile

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name = "ci"
description = "small"
[defaults]
runs = 20
warmup = 3

[[run]]
models = ["iformer-t", "mobilevit-xxs"]
devices = ["host"]
formats = ["onnx"]
runner = "host-onnxruntime"

[[run]]
models = ["iformer-t"]
devices = ["iphone13", "pixel8"]
formats = ["coreml", "tflite"]
runs = 1
warmup = 0
"""


def test_parse_cross_product_and_defaults():
    s = parse_suite(GOOD)
    assert s.name == "ci" and s.description == "small"
    assert [i.key for i in s.items] == [
        "iformer-t@host/onnx", "mobilevit-xxs@host/onnx",
        "iformer-t@iphone13/coreml", "iformer-t@iphone13/tflite", "iformer-t@pixel8/coreml", "iformer-t@pixel8/tflite",
    ]
    host = s.items[0]
    assert (host.runs, host.warmup, host.runner, host.precision) == (20, 3, "host-onnxruntime", None)
    assert host.bench_kwargs() == {"device": "host", "format": "onnx", "runs": 20, "warmup": 3,
                                   "runner": "host-onnxruntime"}
    phone = s.items[-1]
    assert (phone.runs, phone.warmup, phone.runner, phone.threads) == (1, 0, None, None)


@pytest.mark.parametrize(("text", "message"), [
    ("name = ", "not valid TOML"),
    ("[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']", "missing 'name"),
    ("name='x'", "at least one [[run]]"),
    ("name='x'\nbogus=1\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']", "unknown top-level"),
    ("name='x'\n[[run]]\nmodels=[]\ndevices=['host']\nformats=['onnx']", "'models' must be a non-empty list"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\nformats=['onnx']", "'devices' must be a non-empty list"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']\nruns='10'", "'runs' must be a int"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']\nruns=0", "at least 1"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']\nrunz=3", "unknown key(s) ['runz']"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['pdf']", "unknown format 'pdf'"),
    ("name='x'\n[[run]]\nmodels=['iformer-q']\ndevices=['host']\nformats=['onnx']", "iformer-q"),
    ("name='x'\n[defaults]\nthreads=true\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']",
     "'threads' must be a int"),
    ("name='x'\n[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']\n"
     "[[run]]\nmodels=['iformer-t']\ndevices=['host']\nformats=['onnx']", "already listed in [[run]] #1"),
])
def test_parse_errors_are_one_line_input_file_errors(text, message):
    with pytest.raises(InputFileError) as info:
        parse_suite(text, source="s.toml")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("s.toml")


def test_missing_suite_file():
    with pytest.raises(InputFileError, match="does not exist"):
        load_suite("/nonexistent/suite.toml")


def _fake_bench(item):
    if item.format == "tflite":
        raise UnsupportedOpError("op 'aten.foo' at stages.1 cannot be expressed in TFLite")
    if item.device == "host":
        return measured_profile(item.model, item.device, item.format, seed=hash(item.model) % 100, n=item.runs)
    return predicted_profile(item.model, item.device, item.format)


def test_run_suite_records_profiles_and_failures(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD, encoding="utf-8")
    out = tmp_path / "res" / "ci.json"
    result = run_suite_file(path, out=out, bench_fn=_fake_bench)
    assert len(result.profiles) == 4 and len(result.failures) == 2
    f = result.failures[0]
    assert (f.format, f.error) == ("tflite", "UnsupportedOpError") and "aten.foo" in f.reason
    data = json.loads(out.read_text())
    assert data["kind"] == "hybridexport-suite-results" and data["suite"] == "ci" and data["created"]
    assert len(data["profiles"]) == 4 and data["failures"][0]["reason"]
    loaded = SuiteResult.load(out)
    # raw samples round-trip (6 significant digits); the statistics are derived from them again
    for a, b in zip(loaded.profiles, result.profiles, strict=True):
        assert a.total_ms.samples == results_mod._round_floats(b.total_ms.samples)
        assert a.total_ms.median == pytest.approx(b.total_ms.median, rel=1e-5)
        assert [r.module for r in a.layers] == [r.module for r in b.layers]
    # compared with itself: nothing changes; the failures are listed as missing
    cmp = compare(out, out)
    assert {e.verdict for e in cmp.entries} == {"unchanged"} and len(cmp.entries) == 4
    assert {m.key for m in cmp.missing} == {"iformer-t@iphone13/tflite", "iformer-t@pixel8/tflite"}
    only = run_suite_file(path, bench_fn=_fake_bench, only=["pixel8"])
    assert {p.device for p in only.profiles} == {"pixel8"}


def test_run_suite_command_writes_json(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text(GOOD, encoding="utf-8")
    monkeypatch.setattr(schedule_mod, "_default_bench", lambda item, artifacts=None: _fake_bench(item))
    out = tmp_path / "r.json"
    args = argparse.Namespace(suite=str(path), json=str(out), only=None)
    assert run_suite(args) == 1  # two items failed; the file is still written
    assert len(SuiteResult.load(out).profiles) == 4
    args = argparse.Namespace(suite=str(path), json=str(out), only=["host"])
    assert run_suite(args) == 0


def test_bad_results_file(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"kind": "hybridexport-suite-results", "schema_version": 99, "profiles": []}))
    with pytest.raises(InputFileError, match="schema_version"):
        SuiteResult.load(p)


def test_committed_suite_covers_the_three_families_on_host_and_phones():
    s = load_suite(REPO / "benchmarks" / "suite.toml")
    models = {i.model for i in s.items}
    assert {"iformer-t", "mobilevit-xxs", "mobileformer-26m"} <= models
    host = [i for i in s.items if i.device == "host"]
    phones = {i.device for i in s.items if i.device != "host"}
    assert host and all(i.format == "onnx" for i in host)
    assert {"iphone13", "pixel8"} <= phones


def test_failures_gate_only_when_new(tmp_path):
    """An item that failed in the baseline too is not a regression; one that used to work is."""
    def failing(fmt):
        def fn(item):
            if item.format == fmt:
                raise UnsupportedOpError(f"cannot run {fmt}")
            return _fake_bench(item) if item.format != "tflite" else predicted_profile(item.model, item.device, "tflite")
        return fn

    path = tmp_path / "s.toml"
    path.write_text(GOOD, encoding="utf-8")
    base = run_suite_file(path, out=tmp_path / "base.json", bench_fn=failing("tflite"))
    same = run_suite_file(path, out=tmp_path / "same.json", bench_fn=failing("tflite"))
    worse = run_suite_file(path, out=tmp_path / "worse.json", bench_fn=failing("coreml"))
    assert len(worse.failures) == 2
    assert len(base.failures) == len(same.failures) == 2
    cmp = compare(tmp_path / "base.json", tmp_path / "same.json")
    assert {m.label for m in cmp.missing} == {"failed in both"}
    assert cmp.exit_code(fail_on_missing=True) == 0
    cmp = compare(tmp_path / "base.json", tmp_path / "worse.json")
    labels = {m.key: m.label for m in cmp.missing}
    assert labels["iformer-t@iphone13/coreml"] == "missing in new"
    assert labels["iformer-t@iphone13/tflite"] == "missing in base"
    assert cmp.exit_code() == 0 and cmp.exit_code(fail_on_missing=True) == 1
    reasons = {m.key: m.reason for m in cmp.missing}
    assert reasons["iformer-t@iphone13/coreml"] == "cannot run coreml"


def test_parallel_phase_then_measured_items_one_at_a_time(tmp_path):
    """jobs>1: predicted items and conversions first (in parallel), then measured items alone, in suite order."""
    import threading

    path = tmp_path / "s.toml"
    path.write_text(GOOD.replace('runs = 1\nwarmup = 0', 'runs = 1\nwarmup = 0\nrunner = "predicted"'),
                    encoding="utf-8")
    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    measuring = threading.Event()

    def prepare(item):
        assert not measuring.is_set(), "a conversion ran while a measured item was being timed"
        with lock:
            log.append(("prepare", item.key))
        if item.model == "mobilevit-xxs":
            raise UnsupportedOpError("aten.unfold cannot be exported")

    def bench_fn(item):
        if item.runner != "predicted":
            measuring.set()
        with lock:
            log.append(("bench", item.key))
        return _fake_bench(item) if item.format != "tflite" else predicted_profile(item.model, item.device, "tflite")

    seen = []
    result = run_suite_file(path, bench_fn=bench_fn, prepare_fn=prepare, jobs=2,
                            on_item=lambda item, p, f, s: seen.append((item.key, p is not None, s >= 0)))
    assert [p.device for p in result.profiles] == ["host", "iphone13", "iphone13", "pixel8", "pixel8"]
    assert [(f.model, f.error) for f in result.failures] == [("mobilevit-xxs", "UnsupportedOpError")]
    assert ("prepare", "iformer-t@host/onnx") in log and ("bench", "mobilevit-xxs@host/onnx") not in log
    assert log[-1] == ("bench", "iformer-t@host/onnx")  # the measured item ran last, after the parallel phase
    assert len(seen) == 6 and set(result.item_seconds) == {i.key for i in load_suite(path).items}
    serial = run_suite_file(path, bench_fn=bench_fn, jobs=1)  # no prepare step: mobilevit-xxs works here
    assert [p.to_dict() for p in serial.profiles if p.model != "mobilevit-xxs"] == [p.to_dict() for p in result.profiles]


def test_results_gzip_round_trip(tmp_path):
    r = SuiteResult(suite="z", created="now", profiles=[predicted_profile(), measured_profile(n=10)])
    gz = r.save(tmp_path / "r.json.gz")
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert r.save(tmp_path / "again.json.gz").read_bytes() == gz.read_bytes()  # reproducible bytes
    assert [p.model for p in SuiteResult.load(gz).profiles] == ["iformer-t", "iformer-t"]
    assert {e.verdict for e in compare(gz, gz).entries} == {"unchanged"}
    (tmp_path / "bad.json.gz").write_bytes(gz.read_bytes()[:40])
    with pytest.raises(InputFileError):
        compare(tmp_path / "bad.json.gz", gz)
