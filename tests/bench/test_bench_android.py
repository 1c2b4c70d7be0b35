"""The android-adb runner against a fake `adb` on PATH that replays recorded benchmark_model outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_adb import install_fake_adb

from hybridexport.bench import bench
from hybridexport.bench.devices import load_device
from hybridexport.bench.parsers import parse_benchmark_model
from hybridexport.bench.runners import BenchRequest
from hybridexport.bench.runners.android_adb import AndroidAdbRunner, map_rows
from hybridexport.errors import RunnerUnavailableError
from hybridexport.export.cache import sha256_path
from hybridexport.export.manifest import Manifest, Parity
from hybridexport.modpath import ROOT

DATA = Path(__file__).resolve().parents[1] / "data" / "bench"

@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    return install_fake_adb(tmp_path, monkeypatch)


def _manifest(path: Path, model: str = "tinynet") -> Manifest:
    return Manifest(model=model, resolution=32, format="tflite", precision="fp32", path=str(path),
                    size_bytes=path.stat().st_size, sha256=sha256_path(path), versions={}, passes=[],
                    parity=Parity(verified=False), ops={}, rank5_tensors=0, seconds=0.0)


def test_end_to_end_newer_layout_maps_xnnpack_rows(fake_adb):
    runner = AndroidAdbRunner().configure({})
    dev = load_device("pixel8")
    assert runner.availability(dev) == (True, "")
    p = runner.run(BenchRequest(device=dev, manifest=_manifest(DATA / "tinynet.tflite"), runs=20, warmup=5, threads=1))
    assert p.obtained == "measured" and p.format == "tflite" and p.device == "pixel8"
    assert [r.module for r in p.layers] == ["stem.conv", "stem", "stem.act", "body", "body.act", ROOT, ROOT, ROOT, ROOT,
                                            "head", "head"]
    assert p.layers[1].compute_unit == "cpu (xnnpack)" and p.layers[-1].compute_unit == "cpu"
    assert p.total_ms.median == pytest.approx(0.0926) and p.total_ms.n == 20
    assert p.total_ms.p10 == pytest.approx(max(0.088, 0.0926 - 1.2816 * 0.004))
    assert p.environment["device_model"] == "Pixel 8" and p.environment["soc"] == "Tensor G3"
    assert p.environment["android"] == "14" and p.environment["cpu_mask"] == "100"
    assert sum(r.share for r in p.layers) == pytest.approx(1.0)
    run = next(c for c in fake_adb.calls() if "--enable_op_profiling=true" in c)
    assert run[:5] == ["-s", "38011FDJH000AB", "shell", "taskset", "100"]
    assert "--enable_op_profiling=true" in run and "--use_xnnpack=true" in run
    assert "--num_runs=20" in run and "--warmup_runs=5" in run and "--num_threads=1" in run
    pushes = [c for c in fake_adb.calls() if "push" in c]
    assert len(pushes) == 2


def test_gpu_delegate_flag_and_older_layout(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(DATA / "benchmark_model_with_start_tinynet_synthesized.txt"))
    runner = AndroidAdbRunner().configure({"android_delegate": "gpu"})
    p = runner.run(BenchRequest(device=load_device("pixel8"), manifest=_manifest(DATA / "tinynet.tflite"), runs=20,
                                warmup=5, threads=1))
    assert [r.module for r in p.layers][:5] == ["stem.conv", "stem", "stem.act", "body", "body.act"]
    assert p.layers[-1].module == "head"  # renamed signature output → op 10 of the local model
    assert p.environment["layout"] == "with-start" and p.environment["delegate"] == "gpu"
    run = next(c for c in fake_adb.calls() if "--enable_op_profiling=true" in c)
    assert "--use_gpu=true" in run


def test_recorded_foreign_output_is_kept_but_marked_unmapped(fake_adb, monkeypatch):
    """A real MobileNet output against the tinynet file: rows and totals are kept, modules honestly empty."""
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(DATA / "benchmark_model_with_start_mobilenet_v1.txt"))
    p = AndroidAdbRunner().run(BenchRequest(device=load_device("pixel8"), manifest=_manifest(DATA / "tinynet.tflite"),
                                            runs=50, warmup=1, threads=4))
    assert len(p.layers) == 31 and p.total_ms.median == pytest.approx(2950.34)
    assert sum(1 for r in p.layers if not r.module) >= 25
    assert any("could not be mapped" in n for n in p.notes)


def test_mapping_through_the_op_table():
    from hybridexport.export.formats import get

    parsed = parse_benchmark_model((DATA / "benchmark_model_without_start_tinynet_synthesized.txt").read_text())
    mods = map_rows(parsed, get("tflite").op_table(DATA / "tinynet.tflite"))
    assert mods[1] == ("stem", "alignment") and mods[3] == ("body", "alignment") and mods[9][0] == "head"
    assert map_rows(parsed, None)[9] == ("", "")  # without an op table, rows keep their runtime names


def test_crafted_artifact_name_cannot_run_commands_on_the_phone(fake_adb, tmp_path):
    """Every word of a remote command is quoted for the phone's shell: a file name is only a name there."""
    art = tmp_path / "m;touch $(id) `x`&& rm -rf .tflite"
    art.write_bytes((DATA / "tinynet.tflite").read_bytes())
    p = AndroidAdbRunner().run(BenchRequest(device=load_device("pixel8"), manifest=_manifest(art), runs=20, warmup=5))
    assert p.layers
    assert not Path(str(fake_adb.log) + ".injected").exists()
    run = next(c for c in fake_adb.calls() if "--enable_op_profiling=true" in c)
    assert f"--graph=/data/local/tmp/hybridexport/{art.name}" in run  # one word, as named


def test_no_device_attached(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    ok, why = AndroidAdbRunner().availability(load_device("pixel8"))
    assert not ok and "no adb device attached" in why


def test_unauthorized_device(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "38011FDJH000AB:unauthorized")
    ok, why = AndroidAdbRunner().availability(load_device("pixel8"))
    assert not ok and "accept USB debugging" in why


def test_wrong_phone_is_refused_unless_named(fake_adb):
    fake_adb.set_props(**{"ro.product.model": "Pixel 6", "ro.soc.model": "GS101", "ro.board.platform": "gs101"})
    ok, why = AndroidAdbRunner().availability(load_device("pixel8"))
    assert not ok and "'Pixel 6'" in why and "not a Google Pixel 8" in why
    runner = AndroidAdbRunner().configure({"serial": "38011FDJH000AB"})
    assert runner.availability(load_device("pixel8"))[0]
    p = runner.run(BenchRequest(device=load_device("pixel8"), manifest=_manifest(DATA / "tinynet.tflite"), runs=20,
                                warmup=5))
    assert any("not a Google Pixel 8" in n for n in p.notes)
    assert AndroidAdbRunner().availability(load_device("pixel6"))[0]


def test_missing_binary_and_adb(fake_adb, monkeypatch, tmp_path):
    monkeypatch.delenv("HYBRIDEXPORT_BENCHMARK_MODEL")
    ok, why = AndroidAdbRunner().availability(load_device("pixel8"))
    assert not ok and "HYBRIDEXPORT_BENCHMARK_MODEL" in why
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    ok, why = AndroidAdbRunner().availability(load_device("pixel8"))
    assert not ok and "adb not found" in why


def test_bench_api_routes_to_android_and_errors_when_unplugged(fake_adb, monkeypatch, tmp_path):
    out = tmp_path / "out"
    (out / "tinynet").mkdir(parents=True)
    art = out / "tinynet" / "tinynet.int8.tflite"
    art.write_bytes((DATA / "tinynet.tflite").read_bytes())
    m = _manifest(art)
    m.precision = "int8"
    (out / "tinynet" / "tinynet.int8.tflite.json").write_text(json.dumps(m.to_dict()))
    profiles = bench(device="pixel8", out=out, runs=20, warmup=5)
    assert len(profiles) == 1 and profiles[0].runner == "android-adb"
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    profiles_dir = tmp_path / "profiles"  # a pixel8 without a latency model: no runner can serve it here
    profiles_dir.mkdir()
    pixel8 = json.loads((Path(load_device("pixel8").path)).read_text())
    pixel8.pop("latency_model")
    (profiles_dir / "pixel8.json").write_text(json.dumps(pixel8))
    monkeypatch.setenv("HYBRIDEXPORT_PROFILES", str(profiles_dir))
    with pytest.raises(RunnerUnavailableError, match="android-adb: no adb device attached"):
        bench(device="pixel8", out=out, runs=20, warmup=5)


def test_a_hung_adb_costs_one_probe_timeout_for_every_android_profile(fake_adb, monkeypatch):
    """`devices` probes the profiles in parallel and shares one `adb devices`, with the probe timeout."""
    import time

    from hybridexport.bench.devices_command import device_report

    monkeypatch.setenv("FAKE_ADB_HANG", "30")
    monkeypatch.setenv("HYBRIDEXPORT_PROBE_TIMEOUT", "2")
    t0 = time.monotonic()
    report = device_report()
    took = time.monotonic() - t0
    android = [r for d in report if d["kind"] == "android" for r in d["runners"] if r["name"] == "android-adb"]
    assert len(android) >= 2
    assert all(not r["available"] and "gave no answer in 2 s" in r["reason"] for r in android), android
    assert Path(str(fake_adb.log) + ".devices").read_text().count("devices") == 1
    assert took < 2 * 2 + 10, took  # one timeout (2 s) and the rest of the report, not one per profile


def test_probes_are_not_cached_outside_a_report(fake_adb, monkeypatch):
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners.android_adb import AndroidAdbRunner

    runner = AndroidAdbRunner()
    assert runner.availability(load_device("pixel8"))[0]
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")  # unplugged: the next check must see it
    ok, why = runner.availability(load_device("pixel8"))
    assert not ok and "no adb device attached" in why


@pytest.mark.parametrize(("options", "env", "expect"), [
    ({}, {}, 120 + 5 * 60), ({"bench_timeout": 900}, {}, 900), ({}, {"HYBRIDEXPORT_BENCH_TIMEOUT": "30"}, 30)])
def test_benchmark_timeout_scales_with_the_runs_unless_given(options, env, expect, monkeypatch):
    from hybridexport.bench.probing import bench_timeout, transfer_timeout

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert bench_timeout(50, 10, options) == expect
    assert transfer_timeout(20_000_000, {}) == pytest.approx(10 + 10)


@pytest.mark.parametrize("value", ["0", "-3", "nan", "soon"])
def test_bad_timeout_setting_is_one_line(value, monkeypatch):
    from hybridexport.bench.probing import probe_timeout
    from hybridexport.errors import HybridExportError

    monkeypatch.setenv("HYBRIDEXPORT_PROBE_TIMEOUT", value)
    with pytest.raises(HybridExportError, match=r"HYBRIDEXPORT_PROBE_TIMEOUT must be a positive number of seconds"):
        probe_timeout()


def test_the_benchmark_gets_its_proportional_timeout(fake_adb):
    """The benchmark_model call waits 120 s + 5 s per run (not a fixed 600 s); pushes scale with the file."""
    from unittest import mock

    from hybridexport.bench.runners import android_adb

    seen = []
    real = android_adb.Adb.__call__

    def spy(self, *args, timeout=None):
        seen.append((args[:2], timeout or self.timeout))
        return real(self, *args, timeout=timeout)

    dev = load_device("pixel8")
    with mock.patch.object(android_adb.Adb, "__call__", spy):
        AndroidAdbRunner().run(BenchRequest(device=dev, manifest=_manifest(DATA / "tinynet.tflite"), runs=7, warmup=3,
                                            threads=1))
    assert any(a[0] == "shell" and t == 120 + 5 * 10 for a, t in seen), seen
    assert all(t <= 10 + 1 for a, t in seen if a[0] == "devices")
