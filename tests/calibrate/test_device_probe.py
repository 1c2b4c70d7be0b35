"""A phone's own probe (issue 20): measured through the android-adb runner against a fake `adb` replaying
synthesized benchmark_model outputs (tests/data/bench/README.md), stored by `calibrate --probe` as the fit's
peaks, and used by the predicted runner to rescale to an attached phone."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from fake_adb import DATA, install_fake_adb

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.calibrate import device_probe
from hybridexport.calibrate.device_probe import measure_device_probe, probe_artifacts, probe_record
from hybridexport.calibrate.fit import calibrate_phone
from hybridexport.calibrate.machine import Probe
from hybridexport.errors import InputFileError, RunnerUnavailableError
from hybridexport.optable import OpTable

GEMM_OUT = DATA / "benchmark_model_probe_gemm_synthesized.txt"  # Inference (avg) 10000 us
COPY_OUT = DATA / "benchmark_model_probe_copy_synthesized.txt"  # Inference (avg) 8000 us


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe-arts")
    probe_artifacts("tflite", "int8", out)
    return out


@pytest.fixture
def phone(tmp_path, monkeypatch):
    fake = install_fake_adb(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_ADB_OUTPUTS", json.dumps({"probe-gemm": str(GEMM_OUT), "probe-copy": str(COPY_OUT)}))
    return fake


def test_probe_reads_its_work_from_the_op_tables_and_its_time_from_benchmark_model(arts: Path, phone) -> None:
    probe, source = measure_device_probe(load_device("pixel8"), precision="int8", unit="npu", out=arts)
    made = probe_artifacts("tflite", "int8", arts)  # the same files again (cached conversion)
    gemm_ops, copy_ops = (OpTable.load(made[k].op_table_path()).ops for k in ("gemm", "copy"))
    assert probe.gemm_gflops == pytest.approx(2 * sum(o.macs for o in gemm_ops) / 0.010 / 1e9)
    assert probe.bandwidth_gbs == pytest.approx(sum(o.in_elems + o.out_elems for o in copy_ops) * 1 / 0.008 / 1e9)
    assert 1 < probe.gemm_spread < 1.02 and 1 < probe.bandwidth_spread < 1.03  # from std and count (30 runs)
    assert probe.timer == "wall" and probe.threads == 1
    assert source["runner"] == "android-adb" and source["device_model"] == "Pixel 8" and source["precision"] == "int8"
    runs = [c for c in phone.calls() if any(a.startswith("--graph=") for a in c)]
    assert len(runs) == 2 and all("--use_nnapi=true" in c for c in runs)  # the calibration's unit (npu)
    assert Probe.from_dict({k: v for k, v in probe_record(probe, source).items() if k not in ("version", "source")})


def test_no_phone_is_one_line_before_anything_is_converted(phone, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    monkeypatch.setattr(device_probe, "probe_artifacts", lambda *a, **k: pytest.fail("converted before the check"))
    with pytest.raises(RunnerUnavailableError, match=r"^cannot probe pixel8: no runner measures on it here "
                                                     r"\(android-adb: no adb device attached") as err:
        measure_device_probe(load_device("pixel8"), precision="int8", unit="npu")
    assert "\n" not in str(err.value)


def record(gemm: float = 200.0, bw: float = 5.0, precision: str = "int8") -> dict:
    p = Probe(gemm_gflops=gemm, bandwidth_gbs=bw, gemm_spread=1.01, bandwidth_spread=1.01, timer="wall", repeats=60)
    return probe_record(p, {"runner": "android-adb", "format": "tflite", "precision": precision, "unit": "npu",
                            "device_model": "Pixel 8"})


def test_calibration_takes_its_peaks_from_the_probe_of_its_precision() -> None:
    rec = record()
    lm = calibrate_phone("pixel8", probe=rec)
    assert lm["device"]["peak_macs"] == pytest.approx(200e9 / 2) and lm["device"]["bandwidth"] == pytest.approx(5e9)
    assert lm["provenance"]["peaks"]["peak_macs"].startswith("probe") and lm["provenance"]["probe"] == rec
    other = calibrate_phone("pixel8", probe=record(precision="fp16"))  # another precision's probe: not this unit's
    assert not other["provenance"]["peaks"]["peak_macs"].startswith("probe") and "probe" not in other["provenance"]


def with_model(device: str, lm: dict):
    dev = load_device(device)
    raw = copy.deepcopy(dev.raw)
    raw["latency_model"] = lm
    return dataclasses.replace(dev, raw=raw)


def test_predicted_runner_rescales_to_the_attached_phone(arts: Path, monkeypatch) -> None:
    gemm = probe_artifacts("tflite", "int8", arts)["gemm"]  # a compute-bound model to predict
    stored = copy.deepcopy(load_device("pixel8").raw["latency_model"])
    stored["provenance"]["probe"] = record(gemm=200.0, bw=5.0)
    dev = with_model("pixel8", stored)
    runner = get_runner("predicted")
    base = runner.run(BenchRequest(device=dev, manifest=gemm))
    twice = Probe(gemm_gflops=400.0, bandwidth_gbs=5.0, gemm_spread=1.01, bandwidth_spread=1.01, timer="wall")
    monkeypatch.setattr(device_probe, "measure_device_probe",
                        lambda device, options=None, precision=None, unit=None: (twice, {"runner": "android-adb",
                                                                                      "device_model": "Pixel 8"}))
    fast = runner.run(BenchRequest(device=dev, manifest=gemm, options={"probe_device": True}))
    convs = [(a.ms.median, b.ms.median) for a, b in zip(base.layers, fast.layers, strict=True) if a.macs]
    assert convs and all(f < b for b, f in convs)
    assert fast.total_ms.median < base.total_ms.median
    [note] = [n for n in fast.notes if "rescaled by probe" in n]
    assert "compute x2.00, memory x1.00" in note and "Pixel 8" in note
    assert fast.extra["machine"]["ratios"] == {"gemm": 2.0, "bandwidth": 1.0}
    # a model whose calibration stored no probe: not rescaled, and the note names the way to get one
    plain = runner.run(BenchRequest(device=load_device("pixel8"), manifest=gemm, options={"probe_device": True}))
    assert plain.total_ms.median == pytest.approx(base.total_ms.median)
    assert any("records no probe" in n and "calibrate --device pixel8 --probe" in n for n in plain.notes)


def test_probe_options_are_checked_before_work(tmp_profiles: Path) -> None:
    from hybridexport.cli import main

    assert main(["calibrate", "--device", "host", "--probe", "--dry-run"]) == 2
    assert main(["calibrate", "--device", "pixel8", "--serial", "X", "--dry-run"]) == 2
    with pytest.raises(InputFileError, match="pass it with --probe"):
        import argparse

        from hybridexport.calibrate.command import add_arguments, run

        ap = argparse.ArgumentParser()
        add_arguments(ap)
        run(ap.parse_args(["--device", "pixel8", "--benchmark-binary", "b", "--dry-run"]))


def test_calibrate_probe_end_to_end_and_an_iphone_says_why_here(phone, tmp_path: Path, monkeypatch, capsys) -> None:
    from hybridexport.cli import main

    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path / "cache"))
    assert main(["calibrate", "--device", "pixel8", "--probe", "--dry-run", "--json"]) == 0
    out = capsys.readouterr().out
    lm = json.loads(out[out.index("{"):])
    probe = lm["provenance"]["probe"]
    assert probe["source"]["device_model"] == "Pixel 8" and probe["source"]["precision"] == "int8"
    assert lm["device"]["peak_macs"] == pytest.approx(probe["gemm_gflops"] * 1e9 / 2)
    with pytest.raises(RunnerUnavailableError, match=r"^cannot probe iphone13: no runner measures on it here "
                                                     r"\(ios-coreml: [^;]*macOS"):
        measure_device_probe(load_device("iphone13"))


def test_probe_device_without_a_phone_prediction_is_refused(capsys) -> None:
    from hybridexport.cli import main

    assert main(["bench", "iformer-t", "-d", "host", "-r", "predicted", "--probe-device"]) == 2
    assert "leave out --probe-device" in capsys.readouterr().err
    assert main(["bench", "iformer-t", "-d", "pixel8", "--probe-device"]) == 2
    err = capsys.readouterr().err
    assert "pass it with -r predicted" in err and "(not -r" not in err
