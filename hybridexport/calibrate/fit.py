"""Fit a device's cost model on end-to-end latencies, and say how well it predicts unseen families.

Phones: the device's rows of the published latency CSV (``calibration`` key of its profile), with
features from the committed cache. Host: latencies measured here, end to end and per node (``host.py``,
``host_layers.py``: per-layer shares of kernel time join the totals as observations). The fit minimises
the log ratio predicted/observed under a robust (soft-L1) loss, with a weak prior on every parameter
and ties pulling related kinds' efficiencies together (scipy least squares, deterministic).
Held-out error: leave-one-family-out (all rows of a family out, predicted from the rest).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport.calibrate.catalog import CsvRow, read_csv, resolve_row, select_rows
from hybridexport.calibrate.profiles import calibration_config, hardware, read_profile
from hybridexport.calibrate.store import load_store, store_path
from hybridexport.errors import InputFileError
from hybridexport.latency.costmodel import (
    PARAM_NAMES,
    PRIOR_SIGMA_OF,
    TIES,
    Design,
    DeviceSpec,
    bounds,
    params_from_theta,
    prior_theta,
)
from hybridexport.latency.features import FeatureTable, feature_key

if TYPE_CHECKING:
    from hybridexport.calibrate.host_layers import LayerTargets

MODEL_VERSION = 1
PRIOR_SIGMA = 1.5  # prior width on each log-parameter
TIE_SIGMA = 0.7  # how far a kind's efficiency may stray from its related kind's (log scale)


@dataclass
class Dataset:
    """Observations (one per used CSV row or measured model) over unique feature tables."""

    tables: list[FeatureTable]
    table_of: list[int]  # observation → table index
    y_ms: list[float]
    family: list[str]
    label: list[str]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    # per table (host only): measured kernel ms per op name, from ONNX Runtime's profiler
    node_ms: list[dict[str, float]] = field(default_factory=list)
    # per label (host only): the highest 1-minute load average seen while it was measured
    load_1m: dict[str, float] = field(default_factory=dict)
    # per label (host only): the median of each timing round, in the order the rounds ran
    round_ms: dict[str, list[float]] = field(default_factory=dict)


def metrics(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    """MAPE, shares within ±10/±20 %, Spearman rank correlation."""
    from scipy.stats import spearmanr

    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    ape = np.abs(pred - obs) / obs
    rho = float(spearmanr(pred, obs).statistic) if len(obs) > 2 else float("nan")
    return {"n": int(len(obs)), "mape": float(ape.mean() * 100), "within10": float((ape <= 0.10).mean()),
            "within20": float((ape <= 0.20).mean()), "spearman": rho}


def device_spec(device: str, profile: dict[str, Any] | None = None) -> DeviceSpec:
    profile = read_profile(device) if profile is None else profile
    cfg = calibration_config(device, profile)
    hw = hardware(device, profile, precision=cfg["precision"], unit=cfg["unit"])
    return DeviceSpec(name=device, format=cfg["format"], unit=cfg["unit"], precision=cfg["precision"],
                      peak_macs=hw["peak_macs"], fallback_macs=hw["fallback_macs"], bandwidth=hw["bandwidth"])


def phone_dataset(device: str, csv_path: str | Path | None = None, data_dir: Path | None = None,
                  profile: dict[str, Any] | None = None) -> tuple[Dataset, str]:
    """The device's CSV rows that have cached features; the rest listed in ``skipped`` with reasons."""
    cfg = calibration_config(device, profile if profile is not None else read_profile(device))
    rows, sha = read_csv(csv_path)
    store = load_store(cfg["format"], data_dir)
    ds = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[])
    index: dict[str, int] = {}
    for r in select_rows(rows, cfg):
        builder, family, why = resolve_row(r)
        if builder is None:
            ds.skipped.append(_skip(r, why))
            continue
        key = feature_key(builder, cfg["format"], r.resolution or 0, r.backbone)
        if key not in store["tables"]:
            why = store["failed"].get(key, "features not built yet (run python -m hybridexport.calibrate.build_features)")
            ds.skipped.append(_skip(r, f"{builder}: {why}"))
            continue
        if key not in index:
            index[key] = len(ds.tables)
            ds.tables.append(FeatureTable.from_compact(store["tables"][key]))
        ds.table_of.append(index[key])
        ds.y_ms.append(r.latency_ms)
        ds.family.append(family)
        ds.label.append(f"{r.model} @{r.resolution}")
    return ds, sha


def _skip(r: CsvRow, why: str) -> dict[str, Any]:
    return {"row": r.index, "model": r.model, "resolution": r.resolution, "reason": why}


@dataclass(frozen=True)
class FitConfig:
    """How strongly to trust the observations, the prior and the ties (all on a log scale)."""

    noise: float = 0.15  # typical log error of one observation
    loss: str = "soft_l1"  # robust: a few inconsistent published rows must not drag the fit
    f_scale: float = 1.5  # in units of ``noise``: where the robust loss turns linear
    prior_sigma: float = PRIOR_SIGMA
    tie_sigma: float = TIE_SIGMA
    share_noise: float = 0.5  # log error of one measured per-layer time share (host per-node data)


PUBLISHED = FitConfig()
# Host: measured here, precise and plentiful (totals and every kernel's time), so a weaker prior and looser
# ties than for the published phone figures.
MEASURED = FitConfig(noise=0.05, f_scale=2.0, prior_sigma=3.0, tie_sigma=1.5)


def fit(design: Design, table_of: np.ndarray, y_ms: np.ndarray, cfg: FitConfig = PUBLISHED,
        x0: np.ndarray | None = None, layers: LayerTargets | None = None) -> np.ndarray:
    """Log-parameters minimising the (robust) squared log error of the totals, plus a weak prior on
    every parameter and ties between related kinds; with ``layers`` (host), also the log error of each
    observed model's per-group shares of measured kernel time."""
    from scipy.optimize import least_squares

    prior = prior_theta(design.spec)
    lo, hi = bounds(design.spec.unit)
    log_y = np.log(np.asarray(y_ms, float) / 1000.0)
    n_obs = len(log_y)
    # rows repeating one model configuration (several sources, distilled/plain) share one unit of weight
    counts = np.bincount(table_of, minlength=design.n_models)[table_of]
    weight = 1.0 / np.sqrt(counts)
    idx = {n: i for i, n in enumerate(PARAM_NAMES)}
    child = np.array([idx[c] for c, _ in TIES])
    parent = np.array([idx[p] for _, p in TIES])
    targets = layers.restrict(np.unique(table_of)) if layers is not None else None
    n_obs += targets.count if targets is not None else 0
    scale = np.sqrt(max(n_obs, 1) / 40.0)
    sigma = np.array([min(PRIOR_SIGMA_OF.get(n, cfg.prior_sigma), cfg.prior_sigma) for n in PARAM_NAMES])

    def residuals(theta: np.ndarray) -> np.ndarray:
        per_op = design.op_times(theta)
        parts = [weight * (np.log(design.totals(theta, per_op)[table_of]) - log_y) / cfg.noise]
        if targets is not None:
            parts.append(targets.residuals(per_op) / cfg.share_noise)
        parts += [(theta - prior) / sigma * scale, (theta[child] - theta[parent]) / cfg.tie_sigma * scale]
        return np.concatenate(parts)

    start = np.clip(prior if x0 is None else x0, lo + 1e-9, hi - 1e-9)
    res = least_squares(residuals, start, bounds=(lo, hi), method="trf", x_scale=1.0, max_nfev=400,
                        xtol=1e-10, ftol=1e-10, loss=cfg.loss, f_scale=cfg.f_scale)
    return res.x


def leave_one_family_out(design: Design, ds: Dataset, theta_full: np.ndarray,
                         cfg: FitConfig = PUBLISHED, layers: LayerTargets | None = None) -> np.ndarray:
    """Held-out predicted ms for every observation: its family left out of the fit (its per-layer
    measurements too)."""
    table_of = np.asarray(ds.table_of)
    y = np.asarray(ds.y_ms)
    fam = np.asarray(ds.family)
    pred = np.zeros(len(y))
    for f in sorted(set(ds.family)):
        out = fam == f
        theta = fit(design, table_of[~out], y[~out], cfg, x0=theta_full, layers=layers)
        pred[out] = design.totals(theta)[table_of[out]] * 1000.0
    return pred


def fit_dataset(ds: Dataset, spec: DeviceSpec, cfg: FitConfig = PUBLISHED) -> dict[str, Any]:
    """Fit on all observations, then leave-one-family-out; returns the ``latency_model`` body (no provenance)."""
    if len(ds.y_ms) < 5:
        raise InputFileError(
            f"only {len(ds.y_ms)} calibration rows have features for '{spec.name}' (need at least 5); "
            "build the feature cache with `python -m hybridexport.calibrate.build_features --device "
            f"{spec.name}`"
        )
    design = Design(ds.tables, spec)
    table_of = np.asarray(ds.table_of)
    y = np.asarray(ds.y_ms)
    layers = None
    if ds.node_ms:
        from hybridexport.calibrate.host_layers import LayerTargets

        layers = LayerTargets(design, ds.tables, ds.node_ms)
    theta = fit(design, table_of, y, cfg, layers=layers)
    pred = design.totals(theta)[table_of] * 1000.0
    held = leave_one_family_out(design, ds, theta, cfg, layers)
    ratios = y / held
    q10, q50, q90 = (float(v) for v in np.quantile(ratios, [0.1, 0.5, 0.9]))
    per_family = {}
    for f in sorted(set(ds.family)):
        m = np.asarray(ds.family) == f
        per_family[f] = round(float(np.mean(np.abs(held[m] - y[m]) / y[m]) * 100), 1)
    extra: dict[str, Any] = {}
    if layers is not None:
        err = np.abs(layers.log_ratios(design.op_times(theta)))
        extra["layers"] = {"groups_compared": layers.count, "median_share_error_pct": round(
            float(np.median(np.expm1(err))) * 100, 1), "meaning": "per (model, cost group) share of measured "
                           "kernel time vs predicted, in the fit"}
    return {
        **extra,
        "version": MODEL_VERSION,
        "device": spec.to_dict(),
        "params": params_from_theta(theta),
        "fit": metrics(pred, y),
        "heldout": {"method": "leave-one-family-out", "families": len(per_family), **metrics(held, y),
                    "mape_by_family": per_family},
        "band": {"p10_ratio": q10, "p50_ratio": q50, "p90_ratio": q90,
                 "meaning": "observed/predicted ratio quantiles on held-out families"},
        "observations": [{"label": lab, "family": f, "observed_ms": o, "fit_ms": round(float(p), 4),
                          "heldout_ms": round(float(h), 4)}
                         for lab, f, o, p, h in zip(ds.label, ds.family, ds.y_ms, pred, held, strict=True)],
    }


def calibrate_phone(device: str, csv_path: str | Path | None = None, data_dir: Path | None = None,
                    probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full ``latency_model`` for a phone profile, with provenance; ``probe``: a device probe record
    (:mod:`.device_probe`) to take the peaks from instead of the one the profile stores."""
    profile = read_profile(device)
    if probe is not None:
        profile = {**profile, "probe": probe}
    spec = device_spec(device, profile)
    cfg = calibration_config(device, profile)
    ds, sha = phone_dataset(device, csv_path, data_dir, profile)
    model = fit_dataset(ds, spec)
    fpath = store_path(cfg["format"], data_dir)
    model["provenance"] = {
        "source": "published",
        "data": _display_path(csv_path),
        "data_sha256": sha,
        "protocol": cfg.get("protocol", ""),
        "features": _display_path(fpath),
        "features_sha256": hashlib.sha256(fpath.read_bytes()).hexdigest(),
        "date": _dt.date.today().isoformat(),
        "rows_used": len(ds.y_ms),
        "rows_skipped": len(ds.skipped),
        "skipped": ds.skipped,
        "params_order": list(PARAM_NAMES),
        "peaks": hardware(device, profile, precision=cfg["precision"], unit=cfg["unit"])["source"],
    }
    if model["provenance"]["peaks"]["peak_macs"].startswith("probe"):  # the peaks came from the device's own probe
        model["provenance"]["probe"] = profile["probe"]
    return model


def _display_path(p: str | Path | None) -> str:
    from hybridexport.calibrate.catalog import DEFAULT_CSV, REPO_ROOT

    path = Path(p) if p else DEFAULT_CSV
    try:
        return str(path.resolve().relative_to(REPO_ROOT.parent))
    except ValueError:
        return str(path)
