"""Passes judged by latency on the target: a verified pass that makes the target slower is skipped."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from hybridexport.rewrite import base, pipeline
from hybridexport.rewrite.base import PassOutcome, RewritePass
from hybridexport.rewrite.judge import JudgeError, MeasuredHostJudge, PredictedJudge, judge_for
from hybridexport.rewrite.pipeline import run_pipeline


def identity_conv(channels: int) -> nn.Conv2d:
    """A 3×3 convolution that returns its input exactly (centre tap 1, zero padding)."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(channels):
            conv.weight[c, c, 1, 1] = 1.0
    return conv


class SlowerPass(RewritePass):
    """Before: ``conv``. After: ``conv → 4 identity 3×3 convs`` (same outputs, five times the work)."""

    name: ClassVar[str] = "test-slower"
    summary: ClassVar[str] = "adds identity convolutions"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        n = 0
        for name, child in list(model.named_children()):
            if isinstance(child, nn.Conv2d):
                c = child.out_channels
                setattr(model, name, nn.Sequential(child, *(identity_conv(c) for _ in range(4))))
                n += 1
        return PassOutcome(matched=n, changes=[f"padded {n} conv(s) with identity convs"])


class SamePass(RewritePass):
    """Before: ``ReLU``. After: a new ``ReLU`` (the same graph)."""

    name: ClassVar[str] = "test-same"
    summary: ClassVar[str] = "replaces ReLU by ReLU"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        n = 0
        for name, child in list(model.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(model, name, nn.ReLU())
                n += 1
        return PassOutcome(matched=n, changes=[f"replaced {n} ReLU"])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.fixture
def test_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    base.load_passes()
    monkeypatch.setitem(base.PASSES, SlowerPass.name, SlowerPass)
    monkeypatch.setitem(base.PASSES, SamePass.name, SamePass)


def test_a_pass_predicted_slower_is_skipped_and_a_neutral_one_kept(test_passes) -> None:
    x = torch.randn(1, 3, 32, 32)
    judge = PredictedJudge("iphone13", "coreml")
    model, report = run_pipeline(Net(), x, passes=["fuse-bn", "test-slower", "test-same"], count=False, judge=judge)
    rec = {p.name: p for p in report.passes}
    slow, same = rec["test-slower"], rec["test-same"]
    assert not slow.applied and not slow.failed and slow.latency["slower"]
    assert slow.latency["after_ms"] > slow.latency["before_ms"] * 1.005
    assert slow.reason.startswith("skipped: predicted on iphone13 (coreml latency model) slower after it")
    assert same.applied and not same.latency["slower"] and same.latency["ratio"] == pytest.approx(1.0, abs=0.005)
    assert rec["fuse-bn"].latency is None  # the deploy form is not judged
    assert not any(isinstance(m, nn.Sequential) for m in model.modules())  # the slower rewrite is not in the model
    assert report.judge == judge.how and report.to_dict()["passes"][1]["latency"]["slower"] is True


def test_without_a_judge_the_verified_pass_stays(test_passes) -> None:
    model, report = run_pipeline(Net(), torch.randn(1, 3, 32, 32), passes=["test-slower"], count=False)
    assert report.passes[0].applied and report.passes[0].latency is None and report.judge == ""
    assert any(isinstance(m, nn.Sequential) for m in model.modules())


def test_the_host_judge_measures_both_sides_alternately() -> None:
    x = torch.randn(1, 3, 64, 64)
    before = Net().eval()
    slow = Net().eval()
    slow.load_state_dict(before.state_dict())
    SlowerPass().apply(slow, x)
    judge = MeasuredHostJudge("onnx", runs=20)
    v = judge.judge(before, slow, (x,))
    assert v.slower and v.after_ms > v.before_ms and v.how.startswith("measured on host (ONNX Runtime")


def test_judge_choice_per_format() -> None:
    assert isinstance(judge_for("coreml")[0], PredictedJudge) and judge_for("coreml")[0].device == "iphone13"
    assert isinstance(judge_for("tflite")[0], PredictedJudge) and judge_for("tflite")[0].device == "pixel8"
    assert isinstance(judge_for("onnx")[0], PredictedJudge) and judge_for("onnx")[0].device == "host"
    assert isinstance(judge_for("onnx", how="measured")[0], MeasuredHostJudge)
    judge, why = judge_for("executorch")
    assert judge is None and why == "not judged: no latency model prices executorch graphs"
    with pytest.raises(JudgeError, match="'iphone13' is not this machine; use --judge predicted"):
        judge_for("coreml", how="measured")


def test_convert_skips_a_slower_default_pass_and_says_so(test_passes, tmp_path, monkeypatch) -> None:
    from hybridexport.export.api import convert
    from hybridexport.export.summary import artifact_line

    monkeypatch.setitem(pipeline.TARGET_PASSES, "coreml", ("fuse-bn", "test-slower"))
    kw = {"to": "coreml", "example_inputs": (torch.randn(1, 3, 32, 32),), "name": "judged-net", "verify_inputs": 1}
    (m,) = convert(Net(), out=tmp_path / "a", **kw)
    rw = {p["name"]: p for p in m.extra["rewrite"]["passes"]}
    assert not rw["test-slower"]["applied"] and rw["test-slower"]["latency"]["slower"]
    assert m.passes == ["fuse-bn"] or m.passes == []
    assert "skipped test-slower" in artifact_line(m) and "iphone13" in artifact_line(m)
    # the judge's conversion of the final model is the artifact (not converted a third time), and it verifies
    assert m.extra["converted_by"].startswith("the rewrite judge") and m.parity.n_inputs == 1
    # forced passes and --judge none keep it
    (forced,) = convert(Net(), out=tmp_path / "b", passes=["test-slower"], **kw)
    assert forced.passes == ["test-slower"]
    (unjudged,) = convert(Net(), out=tmp_path / "c", judge=False, **kw)
    assert "test-slower" in unjudged.passes and not unjudged.extra["rewrite"]["judge"]


def test_cli_names_a_bad_device_before_building(capsys) -> None:
    from hybridexport.cli import main

    assert main(["convert", "tinynet", "--to", "coreml", "--device", "iphone99"]) == 2
    assert "unknown device 'iphone99'" in capsys.readouterr().err
    assert main(["convert", "tinynet", "--to", "coreml", "--judge", "measured"]) == 2
    assert "--judge measured times passes here" in capsys.readouterr().err


class _Converted(Exception):
    """Raised by the stand-in converter once it has seen what bench asked for."""


@pytest.mark.parametrize(("device", "fmt", "judged_on"), [
    ("pixel6", "tflite", "pixel6"),  # its latency model prices TFLite graphs: judged on the phone benchmarked
    ("iphone12", "coreml", "iphone12"),
    ("pixel6", "onnx", None),  # no ONNX latency model for pixel6: the format's own device (host)
    ("host", "onnx", "host"),
])
def test_bench_judges_a_missing_artifact_on_the_benchmarked_device(monkeypatch, tmp_path, device, fmt,
                                                                   judged_on) -> None:
    import hybridexport.export
    from hybridexport.bench import bench

    seen: dict[str, object] = {}

    def convert(model: object, **kw: object) -> list[object]:
        seen.update(kw)
        raise _Converted

    monkeypatch.setattr(hybridexport.export, "convert", convert)
    with pytest.raises(_Converted):
        bench("iformer-t", device=device, fmt=fmt, runner="predicted", out=tmp_path)
    assert seen["to"] == fmt and seen["device"] == judged_on


def test_target_device_and_one_profile_read_per_target(monkeypatch) -> None:
    from hybridexport.bench import devices
    from hybridexport.export.api import _Rewrites
    from hybridexport.rewrite.judge import target_device

    assert (target_device("coreml"), target_device("tflite"), target_device("onnx")) == ("iphone13", "pixel8", "host")
    assert target_device("coreml", "iphone12") == "iphone12"
    reads: list[str] = []
    real = devices.load_device
    monkeypatch.setattr(devices, "load_device", lambda name: reads.append(name) or real(name))
    rw = _Rewrites(loaded=None, enabled=True, passes=None)  # type: ignore[arg-type]
    keys = {rw.judge_key("coreml") for _ in range(3)}
    assert len(keys) == 1 and keys.pop().startswith("iphone13:") and reads == ["iphone13"]
    assert rw.judge_key("tflite").startswith("pixel8:") and reads == ["iphone13", "pixel8"]
