"""Stored host measurements: the file round-trips, a refit from it reproduces the committed host fit, and
``calibrate --refit`` says what is wrong with its input before fitting.

The reproduction tolerance is the phone tests' (``PREDICTION_RTOL``): two converged fits agree in what they
predict, not digit by digit (see tests/calibrate/test_phone_calibration.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from hybridexport.bench.devices import load_device
from hybridexport.calibrate import host, measurements
from hybridexport.calibrate.fit import MEASURED, Dataset, fit
from hybridexport.calibrate.host_layers import LayerTargets
from hybridexport.errors import InputFileError
from hybridexport.latency.costmodel import Design, DeviceSpec, theta_from_params
from hybridexport.latency.features import FeatureTable
from hybridexport.latency.predictor import latency_model_of
from hybridexport.optable import OpRow

REPO = Path(__file__).resolve().parents[2]
STORED = REPO / "profiles" / "host.measurements.json.gz"
PREDICTION_RTOL = 1e-3


def six_families(stored: Dataset) -> list[str]:
    """The stored models of six small families (a fit with leave-one-family-out in a few seconds)."""
    return [lab for lab in stored.label
            if lab.split(":")[-1].startswith(("mobilenetv2", "resnet", "regnetx", "lcnet", "ghostnet", "mobilevit"))]


def tiny_dataset() -> Dataset:
    ops = [OpRow(name="conv1", op_type="Conv", kind="conv", macs=1000, w_elems=27, in_elems=48, out_elems=64, rank=4),
           OpRow(name="relu", op_type="Relu", kind="relu", in_elems=64, out_elems=64, rank=4, fusable=True,
                 inputs=["conv1"]),
           OpRow(name="gap", op_type="GlobalAveragePool", kind="reduce", in_elems=64, out_elems=4, rank=4,
                 inputs=["relu"])]
    t = FeatureTable(model="m", format="onnx", resolution=4, ops=ops)
    return Dataset(tables=[t], table_of=[0], y_ms=[0.25], family=["m"], label=["m"],
                   node_ms=[{"conv1": 0.2, "gap": 0.01, "an-op-ORT-added": 0.03}], load_1m={"m": 0.4})


def test_round_trip_keys_node_times_by_row(tmp_path: Path) -> None:
    ds = tiny_dataset()
    p = measurements.save(ds, {"date": "2026-12-03", "timer": "cpu"}, tmp_path / "m.json.gz")
    back, meta = measurements.load(p)
    assert meta == {"date": "2026-12-03", "timer": "cpu"}
    assert back.label == ["m"] and back.y_ms == [0.25] and back.load_1m == {"m": 0.4}
    # names are not stored: node times follow their rows, and a node no row has is dropped
    assert back.node_ms == [{"op0": 0.2, "op2": 0.01}]
    assert [o.kind for o in back.tables[0].ops] == ["conv", "relu", "reduce"]
    assert back.tables[0].ops[1].inputs == ["op0"] and back.tables[0].ops[1].fusable
    assert p.read_bytes() == measurements.save(back, meta, tmp_path / "again.json.gz").read_bytes()  # deterministic


# gzip without a timestamp: the parameters must be the same in every xdist worker that collects them
@pytest.mark.parametrize("content", [b"not gzip", gzip.compress(b"{}", mtime=0),
                                     gzip.compress(b'{"version": 99, "models": []}', mtime=0),
                                     gzip.compress(b'{"version": 1, "models": [{"label": "m"}]}', mtime=0)],
                         ids=["not-gzip", "empty-object", "wrong-version", "malformed-model"])
def test_a_bad_file_is_one_line_naming_the_measurement(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "host.measurements.json.gz"
    p.write_bytes(content)
    with pytest.raises(InputFileError, match="calibrate --device host") as e:
        measurements.load(p)
    assert "\n" not in str(e.value)
    with pytest.raises(InputFileError, match="no stored host measurements"):
        measurements.load(tmp_path / "absent.json.gz")


def test_calibrate_stores_what_a_refit_reproduces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate_host(save_to=...) writes the measurements it fitted; refit_host on them fits the same model."""
    stored, meta = measurements.load(STORED)
    few = six_families(stored)
    ds = host.fit_subset(stored, few)
    assert len(set(ds.family)) >= 4
    monkeypatch.setattr(host, "measure_host", lambda *a, **k: (ds, {**meta, "fit_models": few}))
    lm = host.calibrate_host(save_to=tmp_path / "m.json.gz")
    again = host.refit_host(path=tmp_path / "m.json.gz")
    assert again["params"] == lm["params"] and again["heldout"] == lm["heldout"]
    assert again["provenance"]["refit"]["measurements"] == "m.json.gz" and "refit" not in lm["provenance"]
    assert again["provenance"]["models"] == few and again["provenance"]["rows_used"] == len(few)


def test_refit_reproduces_the_committed_host_fit() -> None:
    """The committed host model is a fit of the committed measurements (its fit_models)."""
    lm = latency_model_of("host", load_device("host").raw)
    stored, meta = measurements.load(STORED)
    ds = host.fit_subset(stored, meta["fit_models"])
    assert set(ds.label) <= set(lm["provenance"]["models"])
    assert len(ds.y_ms) == lm["provenance"]["rows_used"]
    design = Design(ds.tables, DeviceSpec.from_dict("host", lm["device"]))
    table_of = np.asarray(ds.table_of)
    theta = fit(design, table_of, np.asarray(ds.y_ms), MEASURED, layers=LayerTargets(design, ds.tables, ds.node_ms))
    refit, committed = design.totals(theta), design.totals(theta_from_params(lm["params"]))
    assert np.allclose(refit, committed, rtol=PREDICTION_RTOL), float(np.max(np.abs(refit / committed - 1)))


def test_refit_command_checks_its_input_first(tmp_profiles: Path, capsys) -> None:
    from hybridexport.cli import main

    assert main(["calibrate", "--device", "iphone13", "--refit", "--dry-run"]) == 2
    assert "leave out --refit" in capsys.readouterr().err
    assert main(["calibrate", "--device", "host", "--refit", "--allow-load", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "leave out --allow-load" in err and "--refit measures nothing" in err
    assert main(["calibrate", "--device", "host", "--refit", "--dry-run"]) == 2  # nothing stored in this copy
    assert "no stored host measurements" in capsys.readouterr().err


def test_refit_command_writes_the_profile(tmp_profiles: Path, capsys) -> None:
    from hybridexport.cli import main

    stored, meta = measurements.load(STORED)
    few = six_families(stored)
    measurements.save(host.fit_subset(stored, few), {**meta, "fit_models": few}, tmp_profiles / STORED.name)
    assert main(["calibrate", "--device", "host", "--refit"]) == 0
    lm = json.loads((tmp_profiles / "host.json").read_text())["latency_model"]
    assert lm["provenance"]["refit"]["measurements"] == STORED.name
    assert "wrote latency_model" in capsys.readouterr().out
