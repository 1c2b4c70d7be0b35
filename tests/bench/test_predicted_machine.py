"""The predicted runner on the host (issue 20): the latency model's peaks rescaled by this machine's probe
against the calibration's, or one note naming the recalibration when that is not possible."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.calibrate import machine, sharing
from hybridexport.calibrate.machine import Probe
from hybridexport.export.api import convert
from hybridexport.latency.predictor import predict_ops
from hybridexport.optable import OpTable, op_table_path

from models import loaded


class Tokens(nn.Module):
    """An image as 4096 tokens of 3 channels, widened (memory-bound), then one 256×256 GEMM (compute-bound)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 256)
        self.mix = nn.Linear(256, 256, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.embed(x.flatten(2).transpose(1, 2)))


@pytest.fixture(scope="module")
def onnx_tokens(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    [m] = convert(loaded(Tokens(), name="tokens", resolution=64), to="onnx", out=tmp_path_factory.mktemp("tok"),
                  rewrite=False, verify_inputs=1)
    return m


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh probe cache, and no core sharing (its stretch is tested below with a stated figure)."""
    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sharing, "stretch", lambda seconds, fresh=False: (1.0, sharing.bucket(seconds)))
    return tmp_path / "cache"


def host_with(record: dict | None):
    """The committed host profile, its latency model's provenance.machine extended by ``record``."""
    dev = load_device("host")
    raw = copy.deepcopy(dev.raw)
    if record is not None:
        raw["latency_model"]["provenance"]["machine"].update(record)
    return dataclasses.replace(dev, raw=raw)


def predict(device, manifest):
    return get_runner("predicted").run(BenchRequest(device=device, manifest=manifest))


def gemm_row(prof):
    return max((r for r in prof.layers if r.macs), key=lambda r: r.macs)


def test_calibration_probe_at_half_this_gemm_speed_halves_the_gemm_time(onnx_tokens, cache: Path) -> None:
    here = machine.probe(timer="cpu")  # measured now, cached for the runner's call (its speed: thread CPU time)
    fp = machine.fingerprint().to_dict()
    same = host_with({"fingerprint": fp, "probe_before": here.to_dict(), "probe_after": here.to_dict()})
    half = Probe(**{**here.to_dict(), "gemm_gflops": here.gemm_gflops / 2})
    slow = host_with({"fingerprint": fp, "probe_before": half.to_dict(), "probe_after": half.to_dict()})
    base, faster = predict(same, onnx_tokens), predict(slow, onnx_tokens)
    g0, g1 = gemm_row(base), gemm_row(faster)
    assert g0.macs == 4096 * 256 * 256
    assert g1.ms.median / g0.ms.median == pytest.approx(0.5, rel=0.01)  # compute-bound: half the time
    mem0 = [r.ms.median for r in base.layers if r.op_type in ("Transpose", "transpose")]
    mem1 = [r.ms.median for r in faster.layers if r.op_type in ("Transpose", "transpose")]
    params = load_device("host").raw["latency_model"]["params"]
    [tr] = [o for o in OpTable.load(op_table_path(Path(onnx_tokens.path))).ops if o.op_type == "Transpose"]
    seconds_ms = (params["dispatch"] + params["row"] * tr.out_elems / tr.last_dim) * 1000
    # bandwidth ratio 1: a memory-bound op changes by its per-op and per-row CPU time only, which halve
    assert mem0 and mem1 == pytest.approx([m - seconds_ms / 2 for m in mem0], rel=1e-6)
    ex = faster.extra["machine"]
    assert ex["ratios"]["gemm"] == pytest.approx(2.0) and ex["ratios"]["bandwidth"] == pytest.approx(1.0)
    assert ex["mismatch"] == [] and ex["probe"] == here.to_dict()
    assert Probe.from_dict(ex["calibration_probe"]).gemm_gflops == pytest.approx(half.gemm_gflops)
    [note] = [n for n in faster.notes if "rescaled" in n]
    assert "compute x2.00, memory x1.00" in note and "calibrate --device host" not in note
    assert load_device("host").raw == host_with({}).raw  # the profile is untouched
    json.dumps(faster.to_dict())  # the record serialises with the Profile


def test_half_the_speed_everywhere_halves_every_row(onnx_tokens, cache: Path) -> None:
    here = machine.probe(timer="cpu")
    fp = machine.fingerprint().to_dict()
    same = host_with({"fingerprint": fp, "probe_before": here.to_dict(), "probe_after": here.to_dict()})
    half = Probe(**{**here.to_dict(), "gemm_gflops": here.gemm_gflops / 2, "bandwidth_gbs": here.bandwidth_gbs / 2})
    slow = host_with({"fingerprint": fp, "probe_before": half.to_dict(), "probe_after": half.to_dict()})
    base, faster = predict(same, onnx_tokens), predict(slow, onnx_tokens)
    assert [r.ms.median for r in faster.layers] == pytest.approx([r.ms.median / 2 for r in base.layers], rel=1e-6)
    assert faster.total_ms.median == pytest.approx(base.total_ms.median / 2, rel=1e-6)  # the per-inference overhead too


def test_a_shared_core_stretches_every_row_by_the_wall_time_runs_of_that_length_take(onnx_tokens, cache: Path,
                                                                                     monkeypatch) -> None:
    here = machine.probe(timer="cpu")
    fp = machine.fingerprint().to_dict()
    dev = host_with({"fingerprint": fp, "probe_before": here.to_dict(), "probe_after": here.to_dict()})
    quiet = predict(dev, onnx_tokens)
    asked: list[float] = []
    monkeypatch.setattr(sharing, "stretch", lambda s, fresh=False: (asked.append(s) or 2.0, sharing.bucket(s)))
    shared = predict(dev, onnx_tokens)
    assert asked == [pytest.approx(quiet.total_ms.median / 1000, rel=1e-6)]  # measured at the run's own length
    assert [r.ms.median for r in shared.layers] == pytest.approx([2 * r.ms.median for r in quiet.layers], rel=1e-9)
    assert shared.total_ms.median == pytest.approx(2 * quiet.total_ms.median, rel=1e-9)
    assert shared.extra["machine"]["stretch"]["wall_over_cpu"] == 2.0
    assert any("x2.00 on the wall clock" in n for n in shared.notes)
    assert not any("wall clock" in n for n in quiet.notes)


def without_probe():
    """The committed host profile with its calibration's machine record (probe, fingerprint) removed."""
    dev = load_device("host")
    raw = copy.deepcopy(dev.raw)
    raw["latency_model"]["provenance"]["machine"] = {"cpu": {"model": "AMD EPYC"}}
    return dataclasses.replace(dev, raw=raw)


def test_fingerprint_mismatch_and_missing_probe_say_to_recalibrate(onnx_tokens, cache: Path) -> None:
    here = machine.probe(timer="cpu")
    fp = machine.fingerprint().to_dict()
    other = {**fp, "onnxruntime": "1.0.0", "flags": [f for f in fp["flags"] if f != "avx2"]}
    prof = predict(host_with({"fingerprint": other, "probe_before": here.to_dict()}), onnx_tokens)
    [note] = [n for n in prof.notes if "calibrate --device host" in n]
    assert "beyond what the probe corrects" in note and "onnxruntime 1.0.0 →" in note and "min" in note
    assert len(prof.extra["machine"]["mismatch"]) == 2
    committed = predict(without_probe(), onnx_tokens)
    [note] = [n for n in committed.notes if "calibrate --device host" in n]
    assert "records no speed probe" in note and f"{here.gemm_gflops:.0f} GFLOP/s" in note
    assert committed.extra["machine"]["calibration_probe"] is None
    unscaled = predict_ops(OpTable.load(op_table_path(Path(onnx_tokens.path))).ops, without_probe().raw["latency_model"],
                           "host")
    assert committed.total_ms.median == pytest.approx(unscaled.total_ms, rel=1e-9)  # predicted as calibrated


def test_phone_predictions_take_no_probe(onnx_tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "measure_probe", lambda *a, **k: pytest.fail("probed for a phone"))
    monkeypatch.setattr(machine, "probe", lambda *a, **k: pytest.fail("probed for a phone"))
    prof = predict(load_device("pixel8"), onnx_tokens)
    assert "machine" not in prof.extra and not any("probe" in n for n in prof.notes)
