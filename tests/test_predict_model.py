"""The calibrated cost model: deterministic predictions, a consistent Profile, stored fits reproduce,
and clear errors for devices that were never calibrated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.errors import RunnerUnavailableError
from hybridexport.predict.calibrate import fit, fit_dataset, metrics, phone_dataset
from hybridexport.predict.catalog import DEFAULT_CSV, read_csv
from hybridexport.predict.costmodel import PARAM_NAMES, Design, DeviceSpec, params_from_theta
from hybridexport.predict.predictor import latency_model_of, predict_ops
from hybridexport.predict.profiles import read_profile, write_keys
from hybridexport.predict.runner import build_profile
from hybridexport.predict.store import tables

REPO = Path(__file__).resolve().parents[1]
PHONES = ("iphone13", "iphone12", "pixel6", "pixel7", "pixel8", "galaxy-s23")


def calibrated() -> list[str]:
    return [d for d in PHONES if read_profile(d).get("latency_model")]


def some_table(fmt: str = "coreml", name: str = "iformer-m"):
    return next(t for k, t in sorted(tables(fmt).items()) if name in k)


def test_committed_profiles_are_calibrated() -> None:
    assert "iphone13" in calibrated()
    lm = latency_model_of("iphone13")
    assert set(PARAM_NAMES) <= set(lm["params"])
    prov = lm["provenance"]
    assert prov["rows_used"] >= 20 and prov["rows_skipped"] == len(prov["skipped"])
    for k in ("mape", "within10", "within20", "spearman"):
        assert k in lm["heldout"] and k in lm["fit"]


@pytest.mark.parametrize("device", ["iphone13"])
def test_prediction_is_deterministic_and_consistent(device: str) -> None:
    lm = latency_model_of(device)
    table = some_table(lm["device"]["format"])
    a = predict_ops(table.ops, lm, device)
    b = predict_ops(table.ops, lm, device)
    assert a.op_ms == b.op_ms and a.total_ms == b.total_ms
    prof = build_profile(a, lm, model="iformer-m", device=device)
    assert prof.obtained == "predicted" and prof.runner == "predicted"
    assert len(prof.layers) == len(table.ops) + 1  # + the per-inference overhead row
    assert sum(r.ms.median for r in prof.layers) == pytest.approx(prof.total_ms.median, rel=1e-12)
    assert prof.total_ms.p10 <= prof.total_ms.median <= prof.total_ms.p90
    assert all(r.ms.p10 <= r.ms.median <= r.ms.p90 for r in prof.layers)
    assert prof.extra["heldout_error_pct"] == lm["heldout"]["mape"]
    assert any("held-out error" in n for n in prof.notes)
    # a bigger model of the same family is predicted slower
    small = predict_ops(some_table(lm["device"]["format"], "iformer-t").ops, lm, device)
    assert small.total_ms < a.total_ms


def test_calibration_reproduces_stored_parameters() -> None:
    """Refitting on the committed feature cache and the CSV gives the parameters stored in each profile."""
    if not DEFAULT_CSV.exists():
        pytest.fail(f"calibration data {DEFAULT_CSV} is missing: the tests need ../shared/data/latency beside the repository")
    _, sha = read_csv()
    for device in calibrated():
        lm = latency_model_of(device)
        assert sha == lm["provenance"]["data_sha256"], f"{device}: the CSV changed since calibration"
        ds, _ = phone_dataset(device)
        assert len(ds.y_ms) == lm["provenance"]["rows_used"]
        design = Design(ds.tables, DeviceSpec.from_dict(device, lm["device"]))
        theta = fit(design, np.asarray(ds.table_of), np.asarray(ds.y_ms))
        refit = params_from_theta(theta)
        for name in PARAM_NAMES:
            assert refit[name] == pytest.approx(lm["params"][name], rel=1e-5), (device, name)


def test_heldout_error_reproduces() -> None:
    """The stated held-out error (leave-one-family-out) is what a fresh calibration computes."""
    if not DEFAULT_CSV.exists():
        pytest.fail(f"calibration data {DEFAULT_CSV} is missing: the tests need ../shared/data/latency beside the repository")
    lm = latency_model_of("iphone13")
    ds, _ = phone_dataset("iphone13")
    refit = fit_dataset(ds, DeviceSpec.from_dict("iphone13", lm["device"]))
    assert refit["heldout"]["mape"] == pytest.approx(lm["heldout"]["mape"], rel=1e-5)
    assert refit["band"] == lm["band"]


def test_metrics() -> None:
    m = metrics(np.array([1.0, 2.1, 3.0, 5.0]), np.array([1.0, 2.0, 3.3, 4.0]))
    assert m["n"] == 4
    assert m["within10"] == 0.75 and m["within20"] == 0.75
    assert m["spearman"] == pytest.approx(1.0)


@pytest.fixture()
def tmp_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for p in (REPO / "profiles").glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setenv("HYBRIDEXPORT_PROFILES", str(tmp_path))
    return tmp_path


def test_uncalibrated_device_is_a_clear_error(tmp_profiles: Path) -> None:
    data = json.loads((tmp_profiles / "iphone14.json").read_text())
    data.pop("latency_model", None)
    (tmp_profiles / "iphone14.json").write_text(json.dumps(data))
    dev = load_device("iphone14")
    runner = get_runner("predicted")
    ok, why = runner.availability(dev)
    assert not ok and "hybridexport calibrate --device iphone14" in why
    with pytest.raises(RunnerUnavailableError, match="calibrate --device iphone14"):
        runner.run(BenchRequest(device=dev))
    assert runner.availability(load_device("iphone13"))[0]


def test_write_keys_keeps_bench_keys(tmp_profiles: Path) -> None:
    before = json.loads((tmp_profiles / "pixel6.json").read_text())
    write_keys("pixel6", {"latency_model": {"x": 1}}, profiles_dir=tmp_profiles)
    after = json.loads((tmp_profiles / "pixel6.json").read_text())
    assert after["latency_model"] == {"x": 1}
    assert {k: v for k, v in after.items() if k != "latency_model"} == {
        k: v for k, v in before.items() if k != "latency_model"}
    with pytest.raises(ValueError):
        write_keys("pixel6", {"hardware": {}}, profiles_dir=tmp_profiles)


def test_catalog_maps_rows_or_says_why() -> None:
    from hybridexport.predict.catalog import CsvRow, resolve_row

    def row(model: str, res: int | None = 224) -> CsvRow:
        return CsvRow(0, model, res, "iPhone 13", "CoreML", 1.0, "")

    assert resolve_row(row("RepViT-M1.5 (* distill)"))[:2] == ("timm:repvit_m1_5", "repvit")
    assert resolve_row(row("iFormer-M"))[:2] == ("iformer-m", "iformer")
    assert "ablation" in resolve_row(row("iFormer ablation: reduce #blocks"))[2]
    assert "no definition" in resolve_row(row("SBCFormer-XS"))[2]
    assert "resolution" in resolve_row(row("MobileOne-S0", None))[2]


def _tiny_table(reshape_erank: int):
    """conv → reshape changing the innermost axis (rank ``reshape_erank``) → conv, and a concat."""
    from hybridexport.predict.features import FeatureTable, OpFeature

    ops = [
        OpFeature("c0", "conv", "conv_pw", macs=10**6, w_elems=64, in_elems=4096, out_elems=4096, rank=4, erank=3,
                  max_dim=64, last_dim=8),
        OpFeature("r", "reshape", "relayout", in_elems=4096, out_elems=4096, rank=reshape_erank,
                  erank=reshape_erank, max_dim=64, last_dim=64, inputs=["c0"]),
        OpFeature("c1", "conv", "conv_pw", macs=10**6, w_elems=64, in_elems=4096, out_elems=4096, rank=4, erank=3,
                  max_dim=64, last_dim=8, inputs=["r"]),
        OpFeature("cat", "concat", "concat", in_elems=8192, out_elems=8192, rank=4, erank=3, max_dim=128,
                  last_dim=8, inputs=["c0", "c1"]),
    ]
    return FeatureTable(model="tiny", format="coreml", resolution=8, ops=ops)


def test_fallback_reshape_is_a_view_and_concat_streams() -> None:
    """A reshape the ANE cannot run (rank 5) moves no data on the CPU: it costs a view's dispatch, not
    bytes; on the ANE the same reshape is a relayout costed by its bytes. Concat uses the stream bandwidth."""
    from hybridexport.predict.costmodel import prior_theta

    spec = DeviceSpec(name="t", format="coreml", unit="ane", precision="fp16", peak_macs=1e12,
                      fallback_macs=1e11, bandwidth=1e10)
    theta = prior_theta(spec)
    p = params_from_theta(theta)
    on_ane = Design([_tiny_table(4)], spec)
    fell = Design([_tiny_table(5)], spec)
    assert fell.fb.tolist() == [False, True, False, False] and fell.view[1] and not on_ane.view[1]
    t_ane, t_fb = on_ane.op_times(theta), fell.op_times(theta)
    assert t_ane[1] > p["dispatch"]  # data moves on the ANE
    # on the CPU only a view's dispatch; the switches to and from the CPU fall on the ops around it
    assert t_fb[1] == pytest.approx(p["dispatch"] * p["view"] + p["switch"] + 4096 * 2 / spec.bandwidth)
    faster = theta.copy()
    faster[PARAM_NAMES.index("mem_stream")] += np.log(2.0)
    assert on_ane.op_times(faster)[3] < t_ane[3]


def test_chained_traffic_costs_chain_times_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor handed to its only consumer and small enough for on-chip memory costs ``chain`` × its
    bytes, on both sides; one read by two ops (c0 feeds the reshape and the concat) costs full traffic."""
    from hybridexport.predict import costmodel
    from hybridexport.predict.costmodel import prior_theta

    spec = DeviceSpec(name="t", format="coreml", unit="ane", precision="fp16", peak_macs=1e12,
                      fallback_macs=1e11, bandwidth=1e10)
    d = Design([_tiny_table(4)], spec)
    tensor = 4096 * 2  # bytes of each of the tiny graph's tensors (fp16)
    assert d.near.tolist() == [0, tensor, 2 * tensor, tensor]  # c0, r (out), c1 (in + out), cat (in from c1)
    theta = prior_theta(spec)
    i = PARAM_NAMES.index("chain")
    theta[i] = 0.0  # chain = 1: chaining saves nothing
    base = d.op_times(theta)
    theta[i] = np.log(0.1)
    cheap = d.op_times(theta)
    assert cheap[0] == base[0] and all(cheap[1:] < base[1:])
    monkeypatch.setitem(costmodel.ONCHIP_BYTES, "ane", tensor - 1)  # nothing fits on chip: nothing chains
    assert Design([_tiny_table(4)], spec).near.tolist() == [0, 0, 0, 0]


def test_weights_stream_at_their_own_rate() -> None:
    """On an accelerator weight bytes cost at ``mem_weights``, activation bytes at their group's rate: a
    faster weight stream speeds up the two convolutions (64 weights each), not the reshape or the concat."""
    from hybridexport.predict.costmodel import prior_theta

    spec = DeviceSpec(name="t", format="coreml", unit="ane", precision="fp16", peak_macs=1e15,
                      fallback_macs=1e11, bandwidth=1e10)  # compute never binds: memory-bound ops
    d = Design([_tiny_table(4)], spec)
    assert d.wbytes.tolist() == [128, 0, 128, 0] and d.bytes[0] == (4096 + 4096) * 2
    theta = prior_theta(spec)
    faster = theta.copy()
    faster[PARAM_NAMES.index("mem_weights")] += np.log(4.0)
    slow, fast = d.op_times(theta), d.op_times(faster)
    assert fast[0] < slow[0] and fast[2] < slow[2] and fast[1] == slow[1] and fast[3] == slow[3]
    # on a CPU weights and activations share one cache hierarchy: weights count as the op's traffic
    cpu = Design([_tiny_table(4)], DeviceSpec(name="c", format="onnx", unit="cpu", precision="fp32",
                                                  peak_macs=1e15, fallback_macs=1e15, bandwidth=1e10))
    assert cpu.wbytes.tolist() == [0, 0, 0, 0] and cpu.bytes[0] == (4096 + 4096 + 64) * 4


def test_padded_inputs_weight_each_input() -> None:
    """With innermost-axis alignment, a (C,H,W) × (C,1,1) product pads the small input, not the big one."""
    from hybridexport.predict.costmodel import _padded_inputs
    from hybridexport.predict.features import OpFeature

    big = OpFeature("x", "conv", "conv_pw", out_elems=64 * 56 * 56, last_dim=56)
    small = OpFeature("s", "sigmoid", "act_complex", out_elems=64, last_dim=1)
    mul = OpFeature("m", "mul", "eltwise", in_elems=64 * 56 * 56 + 64, inputs=["x", "s"])
    padded = _padded_inputs(mul, [big, small], 2, 64)
    exact = 64 * 56 * 64 + 64 * 32  # rows of 56 fp16 padded to 64 elements; the scale: 1 → 32
    assert padded == pytest.approx(exact, rel=0.02)
    assert _padded_inputs(mul, [big, small], 2, 0) == mul.in_elems
