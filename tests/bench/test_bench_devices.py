"""Device profiles, runner selection and the `devices` command."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest

from hybridexport.bench import devices as devmod
from hybridexport.bench.devices import list_devices, load_device, save_device
from hybridexport.bench.runners import RUNNERS, BenchRequest, Runner
from hybridexport.bench.select import choose_runner, runner_status
from hybridexport.errors import InputFileError, RunnerUnavailableError, UnknownModelError

REQUIRED_DEVICES = {"iphone12", "iphone13", "iphone14", "pixel6", "pixel7", "pixel8", "galaxy-s23", "host"}


def test_required_profiles_exist_with_facts_and_sources():
    devs = {d.name: d for d in list_devices()}
    assert set(devs) >= REQUIRED_DEVICES
    for name in REQUIRED_DEVICES - {"host"}:
        d = devs[name]
        assert d.soc.get("name") and d.cpu.get("clusters") and d.gpu.get("name") and d.npu.get("name")
        assert d.sources and all(s.get("url", "").startswith("https://") for s in d.sources), name
        assert d.runners[-1] == "predicted"
    assert devs["iphone13"].protocol["format"] == "coreml" and devs["iphone13"].protocol["compute_units"] == "ALL"
    assert devs["iphone13"].runners == ["ios-coreml", "predicted"]
    assert devs["pixel8"].runners == ["android-adb", "qai-hub", "predicted"] and devs["pixel8"].format == "tflite"
    assert devs["iphone14"].gpu["cores"] == 5 and devs["iphone13"].gpu["cores"] == 4
    assert devs["host"].runners == ["host-onnxruntime", "host-executorch", "host-litert", "host-pytorch", "predicted"]
    assert all(r in RUNNERS for d in devs.values() for r in d.runners)


def test_host_facts_are_read_at_run_time():
    facts = load_device("host").facts()
    assert facts["cpu"]["cores"] >= 1 and facts["cpu"]["model"] and facts["os"]


def test_unknown_device_is_one_line_with_near_matches():
    with pytest.raises(UnknownModelError, match="did you mean iphone13") as exc:
        load_device("iphone-13x")
    assert "\n" not in str(exc.value)
    assert load_device("Galaxy_S23").name == "galaxy-s23"


def test_unknown_keys_survive_a_round_trip(tmp_path):
    src = devmod.profiles_dir() / "pixel7.json"
    data = json.loads(src.read_text())
    data["latency_model"] = {"kind": "per-op", "coef": [1.0, 2.0]}
    data["calibration"] = {"rows": ["Pixel 7"]}
    (tmp_path / "pixel7.json").write_text(json.dumps(data))
    d = load_device("pixel7", tmp_path)
    assert d.get("latency_model") == {"kind": "per-op", "coef": [1.0, 2.0]}
    d.protocol["threads"] = 2
    save_device(d, tmp_path)
    again = json.loads((tmp_path / "pixel7.json").read_text())
    assert again["calibration"] == {"rows": ["Pixel 7"]} and again["protocol"]["threads"] == 2


def test_malformed_profile(tmp_path):
    (tmp_path / "bad.json").write_text('{"name": "bad", "kind": "toaster", "protocol": {}, "runners": []}')
    with pytest.raises(InputFileError, match="kind must be one of"):
        load_device("bad", tmp_path)
    (tmp_path / "cut.json").write_text('{"name": "cut", "kind": "ios"')
    with pytest.raises(InputFileError, match="not valid JSON"):
        load_device("cut", tmp_path)


class _Uncalibrated(Runner):
    name = "predicted"
    formats = ("coreml", "tflite", "onnx")
    obtained = "predicted"

    def availability(self, device):
        return False, f"not calibrated yet — run `hybridexport calibrate --device {device.name}`"

    def run(self, request: BenchRequest):
        raise AssertionError("never selected")


def test_no_runner_error_names_every_runner_and_why(monkeypatch):
    mod = types.ModuleType("fake_predict_runner")
    mod.PredictedRunner = _Uncalibrated
    monkeypatch.setitem(sys.modules, "fake_predict_runner", mod)
    monkeypatch.setitem(RUNNERS, "predicted", "fake_predict_runner:PredictedRunner")
    with pytest.raises(RunnerUnavailableError) as exc:
        choose_runner(load_device("iphone13"), "coreml")
    msg = str(exc.value)
    assert msg.startswith("iphone13:") and "\n" not in msg
    assert "ios-coreml: measuring on an iPhone needs macOS with Xcode" in msg or "ios-coreml: no iPhone 13" in msg
    assert "predicted: not calibrated yet — run `hybridexport calibrate --device iphone13`" in msg


@pytest.fixture
def predicted_needs_a_missing_client(tmp_path, monkeypatch):
    """The predicted runner replaced by one whose third-party client is not installed."""
    (tmp_path / "runner_needing_client.py").write_text("import no_such_client_xyz  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(RUNNERS, "predicted", "runner_needing_client:PredictedRunner")


def test_runner_whose_client_is_missing_is_reported(predicted_needs_a_missing_client):
    status = {s.name: s for s in runner_status(load_device("pixel8"))}
    assert not status["predicted"].available
    assert status["predicted"].reason == ("runner 'predicted' needs no_such_client_xyz, which is not installed "
                                          "(pip install no_such_client_xyz)")
    assert not status["android-adb"].available


def test_host_selection_and_explicit_runner():
    host = load_device("host")
    assert choose_runner(host, "onnx").name == "host-onnxruntime"
    assert choose_runner(host, "executorch").name == "host-executorch"
    assert choose_runner(host, None, "host-pytorch").name == "host-pytorch"
    with pytest.raises(RunnerUnavailableError, match="runs onnx artifacts, not coreml"):
        choose_runner(host, "coreml", "host-onnxruntime")
    with pytest.raises(RunnerUnavailableError, match="unknown runner 'nope'"):
        choose_runner(host, None, "nope")
    with pytest.raises(RunnerUnavailableError, match="only"):
        choose_runner(load_device("pixel6"), "tflite", "host-litert")


def test_devices_command_json(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no adb, no xcrun
    from hybridexport.cli import main

    assert main(["devices", "--json"]) == 0
    report = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(report) >= REQUIRED_DEVICES
    host = {r["name"]: r for r in report["host"]["runners"]}
    assert host["host-onnxruntime"]["available"] and host["host-executorch"]["available"]
    adb = {r["name"]: r for r in report["pixel6"]["runners"]}["android-adb"]
    assert not adb["available"] and "adb not found" in adb["reason"]


def test_bench_cli_on_iphone_here_is_a_one_line_error(capsys, tmp_path, predicted_needs_a_missing_client):
    from hybridexport.cli import main

    out = tmp_path / "out"
    (out / "m").mkdir(parents=True)
    shutil.copy(__file__, out / "m" / "unused.txt")
    rc = main(["bench", "iformer-t", "--device", "iphone13", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "iphone13" in err and "ios-coreml" in err and "predicted" in err
