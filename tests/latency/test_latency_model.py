"""The cost model and its predictions: deterministic, a consistent Profile, the cost terms behave as stated,
and a clear error for a device that was never calibrated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridexport.bench.devices import load_device
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.bench.runners.predicted import build_profile
from hybridexport.calibrate.store import tables
from hybridexport.errors import RunnerUnavailableError
from hybridexport.latency.costmodel import PARAM_NAMES, Design, DeviceSpec, params_from_theta
from hybridexport.latency.predictor import latency_model_of, predict_ops

REPO = Path(__file__).resolve().parents[2]
PHONES = ("iphone13", "iphone12", "pixel6", "pixel7", "pixel8", "galaxy-s23")


def lm_of(device: str) -> dict:
    return latency_model_of(device, load_device(device).raw)


def calibrated() -> list[str]:
    return [d for d in PHONES if load_device(d).raw.get("latency_model")]


def some_table(fmt: str = "coreml", name: str = "iformer-m"):
    return next(t for k, t in sorted(tables(fmt).items()) if name in k)


def test_committed_profiles_are_calibrated() -> None:
    assert "iphone13" in calibrated()
    lm = lm_of("iphone13")
    assert set(PARAM_NAMES) <= set(lm["params"])
    prov = lm["provenance"]
    assert prov["rows_used"] >= 20 and prov["rows_skipped"] == len(prov["skipped"])
    for k in ("mape", "within10", "within20", "spearman"):
        assert k in lm["heldout"] and k in lm["fit"]


@pytest.mark.parametrize("device", ["iphone13"])
def test_prediction_is_deterministic_and_consistent(device: str) -> None:
    lm = lm_of(device)
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


def _tiny_table(reshape_erank: int):
    """conv → reshape changing the innermost axis (rank ``reshape_erank``) → conv, and a concat."""
    from hybridexport.latency.features import FeatureTable
    from hybridexport.optable import OpRow

    ops = [
        OpRow("c0", "conv", "conv_pw", macs=10**6, w_elems=64, in_elems=4096, out_elems=4096, rank=4, erank=3,
                  max_dim=64, last_dim=8),
        OpRow("r", "reshape", "relayout", in_elems=4096, out_elems=4096, rank=reshape_erank,
                  erank=reshape_erank, max_dim=64, last_dim=64, inputs=["c0"]),
        OpRow("c1", "conv", "conv_pw", macs=10**6, w_elems=64, in_elems=4096, out_elems=4096, rank=4, erank=3,
                  max_dim=64, last_dim=8, inputs=["r"]),
        OpRow("cat", "concat", "concat", in_elems=8192, out_elems=8192, rank=4, erank=3, max_dim=128,
                  last_dim=8, inputs=["c0", "c1"]),
    ]
    return FeatureTable(model="tiny", format="coreml", resolution=8, ops=ops)


def test_fallback_reshape_is_a_view_and_concat_streams() -> None:
    """A reshape the ANE cannot run (rank 5) moves no data on the CPU: it costs a view's dispatch, not
    bytes; on the ANE the same reshape is a relayout costed by its bytes. Concat uses the stream bandwidth."""
    from hybridexport.latency.costmodel import prior_theta

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
    from hybridexport.latency import costmodel
    from hybridexport.latency.costmodel import prior_theta

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
    from hybridexport.latency.costmodel import prior_theta

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


def test_overhead_is_capped_on_the_units_that_flattened_differences() -> None:
    """The Neural Engine's and the TFLite GPU's per-inference overhead is bounded (and its prior below the
    bound); the NPU and CPUs (the host's fit included) keep the free bound."""
    from hybridexport.latency.costmodel import OVERHEAD_MAX, bounds, prior_theta

    i = PARAM_NAMES.index("overhead")
    for unit in ("ane", "gpu", "npu", "cpu"):
        spec = DeviceSpec(name="t", format="coreml", unit=unit, precision="fp16", peak_macs=1e12,
                          fallback_macs=1e11, bandwidth=1e10)
        lo, hi = bounds(unit)
        free = bounds()[1][i]
        if unit in OVERHEAD_MAX:
            assert np.exp(hi[i]) == pytest.approx(OVERHEAD_MAX[unit]) and hi[i] < free
            assert lo[i] < prior_theta(spec)[i] < hi[i]
        else:
            assert hi[i] == free
    assert lm_of("iphone13")["params"]["overhead"] <= OVERHEAD_MAX["ane"] * (1 + 1e-9)
