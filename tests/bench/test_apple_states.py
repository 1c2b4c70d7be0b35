"""Every state in which the Apple runners cannot measure, each with its exact one-line reason."""

from __future__ import annotations

import json
import platform

import pytest
from apple_fakes import BENCH_DATA, DATA, copy_fixture, fake_coreml, fake_xcode

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import apple_devices
from hybridexport.bench.runners.apple_coreml import (
    IOSCoreMLRunner,
    MacCoreMLRunner,
    ModelFacts,
    check_model,
    compute_units_of,
)
from hybridexport.bench.runners.apple_devices import (
    find_device,
    list_attached,
    prepare_command,
    refresh_connection,
)
from hybridexport.bench.runners.coreml_placement import PlannedOp, placement, summary_line
from hybridexport.errors import RunnerUnavailableError

IPHONES = BENCH_DATA / "devicectl_list_devices_iphone13_synthesized.json"
TEAM = {"ios_team": "ABCDE12345"}


def ios_why(options=None, device="iphone13"):
    ok, why = IOSCoreMLRunner().configure(options or {}).availability(load_device(device))
    assert not ok
    return why


def test_not_macos(monkeypatch):
    monkeypatch.setattr(apple_devices, "is_macos", lambda: False)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert ios_why(TEAM) == "measuring on an iPhone needs macOS with Xcode 15+ (this is Linux)"
    assert MacCoreMLRunner().availability(load_device("mac")) == (
        False, "needs macOS: it measures the Mac it runs on (this is Linux)")
    with pytest.raises(RunnerUnavailableError, match=r"^preparing an iPhone needs macOS with Xcode 15\+ \(this is Linux\)$"):
        prepare_command(load_device("iphone13"), TEAM)


def test_wrong_kind_of_profile(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch)
    assert ios_why(TEAM, "mac-m2") == "serves iPhones and iPads only ('mac-m2' is a macOS profile)"
    assert MacCoreMLRunner().availability(load_device("iphone13")) == (
        False, "measures this Mac only ('iphone13' is an iOS profile)")
    with pytest.raises(RunnerUnavailableError, match="the Mac runner needs no app"):
        prepare_command(load_device("mac"), TEAM)


@pytest.mark.parametrize("tools, why", [
    ((), "no Xcode command-line tools (xcrun not found): install Xcode 15+ and run `xcode-select --install`"),
    (("xcrun", "xcodebuild"), "devicectl is not on PATH (coremltools runs it by name): install Xcode 15+, and if "
                              "`xcrun --find devicectl` prints a path, add its folder to PATH"),
    (("xcrun", "devicectl"), "xcodebuild not found: install Xcode 15+ and select it with "
                             "`sudo xcode-select -s /Applications/Xcode.app`"),
])
def test_no_xcode_tools(tools, why, tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, tools=tools)
    assert ios_why(TEAM) == why


def test_modelrunner_project_missing(tmp_path, monkeypatch):
    from coremltools.models.ml_program.experimental import remote_device

    fake_xcode(tmp_path, monkeypatch)
    gone = tmp_path / "site-packages" / "coremltools" / "modelrunner"
    monkeypatch.setattr(remote_device._ModelRunnerAppBuilder, "_get_project_path", staticmethod(lambda: gone))
    assert ios_why(TEAM) == (f"coremltools' ModelRunner app project is missing ({gone}/ModelRunner.xcworkspace); the "
                             "macOS wheels ship it: `pip install --force-reinstall coremltools==9.0` on this Mac")


def test_paths_coremltools_cannot_quote(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch)
    monkeypatch.setenv("HYBRIDEXPORT_MODELRUNNER_DIR", str(tmp_path / "My Runner"))
    assert ios_why(TEAM) == (f"coremltools passes paths to devicectl and xcodebuild unquoted, and {tmp_path}/My Runner "
                             "contains ' ': set HYBRIDEXPORT_MODELRUNNER_DIR to a folder without it")


def test_which_device_is_attached(tmp_path, monkeypatch):
    empty = tmp_path / "none.json"
    data = json.loads(IPHONES.read_text())
    data["result"]["devices"] = []
    empty.write_text(json.dumps(data))
    fake_xcode(tmp_path, monkeypatch, devices=empty)
    assert ios_why(TEAM) == "no iPhone 13 (iPhone14,5) attached (devicectl lists: none)"
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(BENCH_DATA / "devicectl_list_devices_qtcreator_ipad.json"))
    with pytest.raises(RunnerUnavailableError) as exc:
        find_device(load_device("iphone13"), list_attached(refresh=True))
    assert str(exc.value) == ("no iPhone 13 (iPhone14,5) attached (devicectl lists: iPad mini (5th generation) "
                              "'Some iOS device' (iPad11,2, iOS 17.3, disconnected))")
    monkeypatch.setenv("FAKE_DEVICECTL_LIST", str(IPHONES))
    with pytest.raises(RunnerUnavailableError) as exc:
        find_device(load_device("iphone12"), list_attached(refresh=True))
    assert str(exc.value) == ("iPhone 12 'Old iPhone 12' (iPhone13,2, iOS 17.5.1, unavailable) is paired but not "
                              "reachable: unlock it and connect it by USB (or the same Wi-Fi), then retry")


@pytest.mark.parametrize("change, why", [
    ({"developerModeStatus": "disabled"}, "iPhone 13 'Bench iPhone 13' (iPhone14,5, iOS 17.5.1, disconnected) has "
     "Developer Mode disabled: turn it on in Settings › Privacy & Security › Developer Mode"),
    ({"osVersionNumber": "16.7.2"}, "iPhone 13 'Bench iPhone 13' (iPhone14,5, iOS 16.7.2, disconnected) runs iOS 16.7.2; "
     "coremltools' ModelRunner app needs iOS 17.0+: update the device"),
])
def test_device_not_ready(change, why, tmp_path, monkeypatch):
    listing = copy_fixture(IPHONES, tmp_path / "l.json", **change)
    fake_xcode(tmp_path, monkeypatch, devices=listing)
    assert ios_why(TEAM) == why


def test_devicectl_failure_is_one_line(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch, devices=BENCH_DATA / "devicectl_error_device_gone_qtcreator.json")
    why = ios_why(TEAM)
    assert why.startswith("devicectl reported failure in ") and "\n" not in why
    assert why.endswith(": Internal logic error: Connection was invalidated; Transport error")


def test_signing_identity(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch)
    assert ios_why() == ("no signing identity for coremltools' ModelRunner app: pass --ios-team TEAMID (or set "
                         "HYBRIDEXPORT_IOS_TEAM), or --ios-provisioning-profile UUID with --ios-bundle-id")
    assert ios_why({"ios_provisioning_profile": "1234-ABCD"}) == (
        "a provisioning profile needs the bundle id it was made for: add --ios-bundle-id (or set "
        "HYBRIDEXPORT_IOS_BUNDLE_ID)")
    assert IOSCoreMLRunner().configure({"ios_provisioning_profile": "1234-ABCD", "ios_bundle_id": "org.x.mr"}
                                       ).availability(load_device("iphone13")) == (True, "")
    monkeypatch.setenv("HYBRIDEXPORT_IOS_TEAM", "ZYXWV98765")
    assert IOSCoreMLRunner().configure({}).availability(load_device("iphone13")) == (True, "")


def test_tunnel_that_does_not_come_up(tmp_path, monkeypatch):
    details = copy_fixture(DATA / "devicectl_info_details_iphone13_synthesized.json", tmp_path / "d.json",
                           tunnelState="disconnected")
    xcode = fake_xcode(tmp_path, monkeypatch, details=details)
    dev = find_device(load_device("iphone13"), list_attached())
    with pytest.raises(RunnerUnavailableError) as exc:
        refresh_connection(dev)
    assert str(exc.value) == ("the connection to iPhone 13 'Bench iPhone 13' (iPhone14,5, iOS 17.5.1, disconnected) did "
                              "not come up: unlock it, tap Trust if asked, and check the cable")
    monkeypatch.setenv("FAKE_DEVICECTL_DETAILS", str(DATA / "devicectl_info_details_iphone13_synthesized.json"))
    assert refresh_connection(dev).tunnel_state == "connected"
    assert [c[1:4] for c in xcode.calls()] == [["list", "devices", "--json-output"],
                                               ["device", "info", "details"], ["device", "info", "details"]]


def test_deployment_targets():
    phone = "iPhone 13 'Bench iPhone 13' (iPhone14,5)"
    with pytest.raises(RunnerUnavailableError) as exc:
        check_model(ModelFacts("mlProgram", 9), "iOS", "17.5.1", phone, remote=True)
    assert str(exc.value) == (f"the model needs iOS 18 (Core ML spec 9) but {phone} runs iOS 17.5.1: re-convert with "
                              "`--coreml-target iOS17` (or older)")
    with pytest.raises(RunnerUnavailableError) as exc:
        check_model(ModelFacts("mlProgram", 8), "macOS", "13.6", "this Mac", remote=False)
    assert str(exc.value) == ("the model needs macOS 14 (Core ML spec 8) but this Mac runs macOS 13.6: re-convert with "
                              "`--coreml-target iOS16` (or older)")
    with pytest.raises(RunnerUnavailableError) as exc:
        check_model(ModelFacts("mlProgram", 6), "macOS", "11.7", "this Mac", remote=False)
    assert str(exc.value) == ("the model needs macOS 12 (Core ML spec 6) but this Mac runs macOS 11.7: Core ML ML "
                              "Programs need macOS 12+")
    assert check_model(ModelFacts("mlProgram", 6), "iOS", "17.5.1", phone, remote=True) == (True, [])
    with_ops, notes = check_model(ModelFacts("neuralNetwork", 5), "iOS", "17.5.1", phone, remote=True)
    assert not with_ops and notes == [
        "the package is a neuralNetwork model (Core ML spec 5, deployment target iOS14): Core ML's compute plan gives "
        "per-op costs for ML Programs only; re-convert with `hybridexport convert MODEL --to coreml --coreml-target "
        "iOS15` (or newer) for per-op rows"]
    with_ops, notes = check_model(ModelFacts("mlProgram", 7), "macOS", "14.2", "this Mac", remote=False)
    assert not with_ops and notes == ["this Mac runs macOS 14.2: Core ML's compute plan (per-op rows, placement) needs "
                                      "macOS 14.4+; only end-to-end times were measured"]


def test_image_inputs_cannot_reach_modelrunner():
    with pytest.raises(RunnerUnavailableError) as exc:
        check_model(ModelFacts("mlProgram", 6, image_inputs=["input"]), "iOS", "17.5.1", "x", remote=True)
    assert str(exc.value) == ("input input is an image and coremltools 9.0 sends only float/int32 tensors to its "
                              "ModelRunner app: convert without --coreml-image-input")
    assert check_model(ModelFacts("mlProgram", 6, image_inputs=["input"]), "macOS", "15.1", "this Mac", remote=False)[0]


def test_compute_units():
    dev = load_device("iphone13")
    assert compute_units_of({}, dev) == "ALL" and compute_units_of({"compute_units": "cpu_only"}, dev) == "CPU_ONLY"
    with pytest.raises(RunnerUnavailableError, match=r"^unknown compute units 'NPU'; use one of ALL, CPU_AND_NE, "
                                                     r"CPU_AND_GPU, CPU_ONLY$"):
        compute_units_of({"compute_units": "npu"}, dev)


def test_mac_without_core_ml_binding(tmp_path, monkeypatch):
    fake_xcode(tmp_path, monkeypatch)
    assert MacCoreMLRunner().availability(load_device("mac")) == (False, (
        "coremltools here cannot load Core ML (its libcoremlpython did not import): "
        "`pip install --force-reinstall coremltools==9.0`"))


def test_devices_command_lists_states_without_waiting(tmp_path, monkeypatch, capsys):
    from hybridexport.cli import main

    xcode = fake_xcode(tmp_path, monkeypatch, chip="Apple M2")
    fake_coreml(monkeypatch, None, {"load_ns": [1], "predict_ns": [1]})
    assert main(["devices", "--json"]) == 0
    report = {d["name"]: {r["name"]: r for r in d["runners"]} for d in json.loads(capsys.readouterr().out)}
    assert report["iphone13"]["ios-coreml"]["reason"].startswith("no signing identity for coremltools' ModelRunner app")
    assert report["iphone12"]["ios-coreml"]["reason"].endswith("is paired but not reachable: unlock it and connect it "
                                                               "by USB (or the same Wi-Fi), then retry")
    assert report["iphone14"]["ios-coreml"]["reason"].startswith("no iPhone 14 (iPhone14,7) attached (devicectl lists: ")
    assert report["mac-m2"]["mac-coreml"]["available"] and report["mac"]["mac-coreml"]["available"]
    assert report["mac-m1"]["mac-coreml"]["reason"].endswith("use --device mac-m2")
    # one listing for every profile; no `device info details`, nothing that waits on a device
    assert [c[1:3] for c in xcode.calls() if c[0] == "devicectl"] == [["list", "devices"]]
    assert main(["devices", "--json", "--ios-team", "ABCDE12345"]) == 0
    report = {d["name"]: {r["name"]: r for r in d["runners"]} for d in json.loads(capsys.readouterr().out)}
    assert report["iphone13"]["ios-coreml"]["available"]


def test_prepare_on_linux_is_one_line(monkeypatch, capsys):
    from hybridexport.cli import main

    monkeypatch.setattr(apple_devices, "is_macos", lambda: False)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert main(["devices", "--prepare", "iphone13", "--ios-team", "ABCDE12345"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("preparing an iPhone needs macOS with Xcode 15+ (this is Linux)") and "\n" not in err


def test_placement_without_static_verdicts():
    ops = [PlannedOp("a", "conv", "ane", ["ane", "cpu"], 0.75), PlannedOp("b", "softmax", "cpu", ["cpu"], 0.25)]
    p = placement(ops, {}, "ALL", "")
    assert p["by_unit"]["ane"] == {"ops": 1, "cost_share": 0.75} and not p["compared"]
    assert summary_line(p) == ("placement (ALL): 2 ops — Neural Engine 1 (75% of cost), CPU 1 (25% of cost); not "
                               "compared with the static rules: no static verdicts (no op table, and the package could "
                               "not be read back)")
    p = placement(ops, {"a": [], "b": ["off-ane:dtype"]}, "CPU_AND_NE", "op table")
    assert p["agree"] == 2 and p["disagreements"] == [] and p["static"] == {"ane": 1, "off-ane": 1, "unknown": 0}
