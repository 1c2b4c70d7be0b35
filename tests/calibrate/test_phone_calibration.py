"""Phone calibration on the published rows: the committed fits reproduce, held-out error is what a fresh fit
computes, the catalog maps rows or says why, and calibration writes only its own keys of a profile.

Tolerances come from what the fit guarantees: scipy's least squares stops when the cost changes by less
than ``ftol`` (1e-10) relative; across machines floating-point summation order moves the optimum along
flat directions of an ill-conditioned problem, so parameters are not compared digit by digit but through
what they are for: the predictions and the cost they reach.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridexport.bench.devices import load_device
from hybridexport.calibrate.catalog import DEFAULT_CSV, read_csv
from hybridexport.calibrate.fit import fit, fit_dataset, metrics, phone_dataset
from hybridexport.calibrate.profiles import write_keys
from hybridexport.latency.costmodel import Design, DeviceSpec, theta_from_params
from hybridexport.latency.predictor import latency_model_of

REPO = Path(__file__).resolve().parents[2]
PHONES = ("iphone13", "iphone12", "pixel6", "pixel7", "pixel8", "galaxy-s23")
#: relative agreement of two converged fits' predictions (far above ftol; far below any model change)
PREDICTION_RTOL = 1e-3


def calibrated() -> list[str]:
    return [d for d in PHONES if load_device(d).raw.get("latency_model")]


def _require_csv() -> None:
    if not DEFAULT_CSV.exists():
        pytest.fail(f"calibration data {DEFAULT_CSV} is missing: the tests need ../shared/data/latency beside the repository")


def test_calibration_reproduces_stored_fits() -> None:
    """Refitting on the committed feature cache and the CSV predicts what each stored fit predicts."""
    _require_csv()
    _, sha = read_csv()
    for device in calibrated():
        lm = latency_model_of(device, load_device(device).raw)
        assert sha == lm["provenance"]["data_sha256"], f"{device}: the CSV changed since calibration"
        ds, _ = phone_dataset(device)
        assert len(ds.y_ms) == lm["provenance"]["rows_used"]
        design = Design(ds.tables, DeviceSpec.from_dict(device, lm["device"]))
        table_of = np.asarray(ds.table_of)
        theta = fit(design, table_of, np.asarray(ds.y_ms))
        stored = design.totals(theta_from_params(lm["params"]))
        refit = design.totals(theta)
        assert np.allclose(refit, stored, rtol=PREDICTION_RTOL), (device, float(np.max(np.abs(refit / stored - 1))))


def test_heldout_error_reproduces() -> None:
    """The stated held-out error (leave-one-family-out) is what a fresh calibration computes."""
    _require_csv()
    lm = latency_model_of("iphone13", load_device("iphone13").raw)
    ds, _ = phone_dataset("iphone13")
    refit = fit_dataset(ds, DeviceSpec.from_dict("iphone13", lm["device"]))
    # every held-out prediction agrees to PREDICTION_RTOL, so the MAPE (in %) to 100 × that
    assert refit["heldout"]["mape"] == pytest.approx(lm["heldout"]["mape"], abs=100 * PREDICTION_RTOL)
    for k in ("p10_ratio", "p50_ratio", "p90_ratio"):
        assert refit["band"][k] == pytest.approx(lm["band"][k], rel=PREDICTION_RTOL)


def test_metrics() -> None:
    m = metrics(np.array([1.0, 2.1, 3.0, 5.0]), np.array([1.0, 2.0, 3.3, 4.0]))
    assert m["n"] == 4
    assert m["within10"] == 0.75 and m["within20"] == 0.75
    assert m["spearman"] == pytest.approx(1.0)


def test_write_keys_keeps_bench_keys(tmp_profiles: Path) -> None:
    before = json.loads((tmp_profiles / "pixel6.json").read_text())
    write_keys("pixel6", {"latency_model": {"x": 1}}, tmp_profiles)
    after = json.loads((tmp_profiles / "pixel6.json").read_text())
    assert after["latency_model"] == {"x": 1}
    assert {k: v for k, v in after.items() if k != "latency_model"} == {
        k: v for k, v in before.items() if k != "latency_model"}
    with pytest.raises(ValueError):
        write_keys("pixel6", {"hardware": {}}, tmp_profiles)


def test_catalog_maps_rows_or_says_why() -> None:
    from hybridexport.calibrate.catalog import CsvRow, resolve_row

    def row(model: str, res: int | None = 224) -> CsvRow:
        return CsvRow(0, model, res, "iPhone 13", "CoreML", 1.0, "")

    assert resolve_row(row("RepViT-M1.5 (* distill)"))[:2] == ("timm:repvit_m1_5", "repvit")
    assert resolve_row(row("iFormer-M"))[:2] == ("iformer-m", "iformer")
    assert "ablation" in resolve_row(row("iFormer ablation: reduce #blocks"))[2]
    assert "no definition" in resolve_row(row("SBCFormer-XS"))[2]
    assert "resolution" in resolve_row(row("MobileOne-S0", None))[2]
