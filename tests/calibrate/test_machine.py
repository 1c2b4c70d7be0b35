"""Machine fingerprint and roofline probe (issue 20): parsing recorded /proc and /sys files, a real probe
cached per boot, and a host calibration refused on a loaded machine unless --allow-load."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from hybridexport.calibrate import host, machine
from hybridexport.calibrate.fit import Dataset
from hybridexport.calibrate.machine import Fingerprint, Probe
from hybridexport.errors import InputFileError, MachineBusyError
from hybridexport.latency.features import FeatureTable
from hybridexport.optable import OpRow

# recorded from this project's 2-core AMD EPYC machine (see its README.md)
REC = Path(__file__).resolve().parents[1] / "data" / "machine"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fingerprint_parses_recorded_cpuinfo_and_caches() -> None:
    text = (REC / "cpuinfo-amd-epyc-2core.txt").read_text()
    info = machine.parse_cpuinfo(text)
    assert info["cpu_model"] == "AMD EPYC" and info["vendor"] == "AuthenticAMD" and info["cpu_id"] == "26/2/1"
    assert info["processors"] == 2
    assert {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"} <= set(info["flags"])
    assert "amx_tile" not in info["flags"] and set(info["flags"]) <= set(machine.SPEED_FLAGS)
    assert machine.read_caches(REC / "cpu0-cache") == {"L1d": "48K", "L1i": "32K", "L2": "1024K", "L3": "32768K"}
    fp = machine.fingerprint(threads=1, cpuinfo=text, cache_root=REC / "cpu0-cache")
    assert fp.threads == 1 and fp.caches["L2"] == "1024K" and fp.logical_cores >= 1
    assert Fingerprint.from_dict(fp.to_dict()) == fp


def test_fingerprint_identity_ignores_load_and_mismatch_names_what_a_probe_cannot_correct() -> None:
    fp = machine.fingerprint(cpuinfo=(REC / "cpuinfo-amd-epyc-2core.txt").read_text(), cache_root=REC / "cpu0-cache")
    busy = Fingerprint(**{**fp.to_dict(), "load_1m": fp.load_1m + 3})
    assert busy.key() == fp.key() and machine.mismatch(fp, busy) == []
    other = Fingerprint(**{**fp.to_dict(), "flags": [f for f in fp.flags if f != "avx512f"], "onnxruntime": "1.0.0",
                           "cpu_id": "25/1/1"})
    diffs = machine.mismatch(other, fp)
    assert other.key() != fp.key() and len(diffs) == 3
    assert any("+avx512f" in d for d in diffs) and any("onnxruntime 1.0.0" in d for d in diffs)
    assert any("25/1/1" in d for d in diffs)


def test_probe_measures_positive_figures_and_is_cached_per_boot(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    calls: list[Probe] = []
    real = machine.measure_probe

    def counted(*a, **k) -> Probe:
        calls.append(real(*a, **k))
        return calls[-1]

    monkeypatch.setattr(machine, "measure_probe", counted)
    boot = tmp_path / "boot_id"
    boot.write_text("boot-a\n")
    monkeypatch.setattr(machine, "BOOT_ID", boot)
    p = machine.probe()
    for v in (p.gemm_gflops, p.bandwidth_gbs, p.gemm_spread, p.bandwidth_spread, p.seconds):
        assert math.isfinite(v) and v > 0
    assert p.gemm_spread >= 1 and p.bandwidth_spread >= 1 and p.threads == 1 and p.timer == "cpu"
    assert p.seconds < 10 and len(calls) == 1
    assert machine.probe() == p and len(calls) == 1  # same boot: the cached probe, not measured again
    [f] = list((cache / "machine").glob("probe-*.json"))
    assert Probe.from_dict(json.loads(f.read_text())) == p
    f.write_text('{"gemm_gflops": -1')  # corrupt: measured again, no traceback
    machine.probe()
    assert len(calls) == 2
    boot.write_text("boot-b\n")  # rebooted: another key
    machine.probe()
    assert len(calls) == 3 and len(list((cache / "machine").glob("probe-*.json"))) == 2
    machine.probe()
    assert len(calls) == 3
    for f in (cache / "machine").glob("probe-*.json"):  # older than the cache's age limit: measured again
        old = time.time() - machine.PROBE_MAX_AGE_S - 5
        os.utime(f, (old, old))
    machine.probe()
    assert len(calls) == 4


def test_probe_loader_refuses_bad_values() -> None:
    good = Probe(gemm_gflops=100.0, bandwidth_gbs=20.0, gemm_spread=1.05, bandwidth_spread=1.1).to_dict()
    assert Probe.from_dict(good).gemm_gflops == 100.0
    for bad in ({**good, "gemm_gflops": -3.0}, {**good, "bandwidth_gbs": "fast"}, {**good, "timer": "sundial"},
                {**good, "extra": 1}, [1, 2]):
        with pytest.raises(InputFileError):
            Probe.from_dict(bad)


def steady(gemm: float = 100.0, bw: float = 20.0, spread: float = 1.02) -> Probe:
    return Probe(gemm_gflops=gemm, bandwidth_gbs=bw, gemm_spread=spread, bandwidth_spread=spread, repeats=50)


def fake_fit(ds: Dataset, spec, cfg) -> dict:
    return {"version": 1, "device": spec.to_dict(), "params": {}, "fit": {}, "heldout": {},
            "band": {"p10_ratio": 0.8, "p50_ratio": 1.0, "p90_ratio": 1.2, "meaning": "held out"}}


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """host_dataset replaced by a record of its calls (one fake model measured); the fit by a stub."""
    called: list[str] = []

    def dataset(builders, timer="runner", **k) -> Dataset:
        called.append(timer)
        table = FeatureTable(model="m", format="onnx", resolution=8,
                             ops=[OpRow(name="c", op_type="Conv", kind="conv", macs=100, in_elems=8, out_elems=8)])
        return Dataset(tables=[table], table_of=[0], y_ms=[1.0], family=["f"], label=[builders[0]],
                       load_1m={builders[0]: 1.97}, round_ms=dict(ROUNDS))

    monkeypatch.setattr(host, "host_dataset", dataset)
    monkeypatch.setattr(host, "fit_dataset", fake_fit)
    return called


ROUNDS: dict[str, list[float]] = {}  # round timings the fake dataset reports (none: no round-to-round evidence)


def rounds(monkeypatch: pytest.MonkeyPatch, last_over_first: float, models: int = 12) -> None:
    """Round timings of ``models`` fake models: three rounds, the last ``last_over_first`` × the first (±1 %)."""
    monkeypatch.setattr(__name__ + ".ROUNDS", {
        f"m{i}": [1.0 + i, (1.0 + i) * 1.003, (1.0 + i) * last_over_first * (1 + 0.01 * (i % 3 - 1))]
        for i in range(models)})


def probes(monkeypatch: pytest.MonkeyPatch, *queue: Probe) -> None:
    q = list(queue)
    monkeypatch.setattr(machine, "measure_probe", lambda threads=1, timer="cpu": q.pop(0))


def test_calibration_under_load_is_refused_before_measuring(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                            no_measuring: list[str], capsys) -> None:
    from hybridexport.cli import main

    monkeypatch.setattr("os.getloadavg", lambda: (3.4, 3.0, 2.5))
    probes(monkeypatch, steady(), steady())
    with pytest.raises(MachineBusyError, match=r"before measuring: 1-minute load average 3\.40 ≥ \d+ cores"):
        host.calibrate_host()
    assert no_measuring == []  # refused before the long measurement
    probes(monkeypatch, steady())
    assert main(["calibrate", "--device", "host", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "calibration refused" in err and "--allow-load" in err and no_measuring == []
    assert main(["calibrate", "--device", "iphone13", "--dry-run", "--allow-load"]) == 2  # phones: not measured here
    assert "--allow-load is for host calibrations" in capsys.readouterr().err


def test_noisy_probe_or_drift_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_measuring: list[str]) -> None:
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    probes(monkeypatch, steady(spread=1.3))
    with pytest.raises(MachineBusyError, match=r"probe median uncertain by 30%"):
        host.calibrate_host()
    assert no_measuring == []
    probes(monkeypatch, steady(), steady(gemm=80.0))
    with pytest.raises(MachineBusyError, match=r"after measuring.*differ by 20%"):
        host.calibrate_host()
    assert no_measuring == ["cpu"]
    probes(monkeypatch, steady(), steady(gemm=97.0))  # within 10 %: fitted, no conditions, band as fitted
    lm = host.calibrate_host()
    m = lm["provenance"]["machine"]
    assert m["conditions"] == [] and lm["band"]["p90_ratio"] == 1.2 and "widened_by" not in lm["band"]
    assert Probe.from_dict(m["probe_after"]).gemm_gflops == 97.0 and Fingerprint.from_dict(m["fingerprint"])
    assert m["cpu"]["model"]  # the earlier facts stay


def test_allow_load_records_the_conditions_and_widens_the_band(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                               no_measuring: list[str], capsys) -> None:
    from hybridexport.cli import main

    monkeypatch.setattr("os.getloadavg", lambda: (3.4, 3.0, 2.5))
    probes(monkeypatch, steady(), steady(gemm=80.0))
    assert main(["calibrate", "--device", "host", "--dry-run", "--json", "--allow-load"]) == 0
    lm = json.loads(capsys.readouterr().out)
    m = lm["provenance"]["machine"]
    assert m["allow_load"] is True and len(m["conditions"]) == 2
    assert "load average 3.40" in m["conditions"][0] and "differ by 20%" in m["conditions"][1]
    assert m["fingerprint"]["load_1m"] == 3.4 and m["load_1m_per_model"] == {host.HOST_TRAIN[0]: 1.97}
    assert Probe.from_dict(m["probe_before"]).gemm_gflops == 100.0
    band = lm["band"]
    assert band["widened_by"] == pytest.approx(1.2)
    assert band["p10_ratio"] == pytest.approx(0.8 / 1.2) and band["p90_ratio"] == pytest.approx(1.2 * 1.2)
    assert no_measuring == ["cpu"]


def test_timing_drift_is_the_median_last_over_first_round_with_a_bootstrap_interval(monkeypatch) -> None:
    rounds(monkeypatch, 1.25)
    d = machine.timing_drift(ROUNDS)
    assert d["models"] == 12 and d["last_over_first"] == pytest.approx(1.25, rel=0.011)
    assert d["lo"] <= d["last_over_first"] <= d["hi"] and d["hi"] / d["lo"] < 1.03
    assert machine.timing_drift(ROUNDS) == d  # seeded
    assert machine.timing_drift({"a": [1.0, 2.0]}) is None  # too few models to judge by
    assert machine.timing_drift({f"m{i}": [1.0] for i in range(9)}) is None  # one round: nothing to compare


def test_bandwidth_drift_with_steady_timings_is_recorded_not_refused(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   no_measuring: list[str]) -> None:
    """The copy bandwidth of an idle VM moves ±11 % between probes: alone it widens the band; with the
    calibration's own timings steady it does not refuse. Without round timings it still refuses."""
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    rounds(monkeypatch, 1.0)
    probes(monkeypatch, steady(), steady(bw=24.0))
    lm = host.calibrate_host()
    m = lm["provenance"]["machine"]
    [cond] = m["conditions"]
    assert "bandwidth probe before/after differ by 20%" in cond and "did not drift" in cond
    assert m["timing_drift"]["last_over_first"] == pytest.approx(1.0, abs=0.011)
    assert lm["band"]["widened_by"] == pytest.approx(1.2)
    monkeypatch.setattr(__name__ + ".ROUNDS", {})
    probes(monkeypatch, steady(), steady(bw=24.0))
    with pytest.raises(MachineBusyError, match=r"after measuring.*probes before/after differ by 20%"):
        host.calibrate_host()


def test_timings_that_drift_are_refused_even_with_steady_probes(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                               no_measuring: list[str]) -> None:
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    rounds(monkeypatch, 1.3)
    probes(monkeypatch, steady(), steady())
    with pytest.raises(MachineBusyError, match=r"timings drifted from the first round to the last: ×1\.30"):
        host.calibrate_host()
    rounds(monkeypatch, 1.08)  # within 10 %: fitted as is
    probes(monkeypatch, steady(), steady())
    lm = host.calibrate_host()
    assert lm["provenance"]["machine"]["conditions"] == [] and "widened_by" not in lm["band"]
