"""Stored host measurements: what a host calibration timed, kept so the fit can be redone without timing.

A host calibration's latencies belong to the machine that measured them; the file records that
machine (fingerprint, probes before and after, load per model, timer, ONNX Runtime version) beside
each model's feature table, end-to-end latency and per-node kernel times. ``hybridexport calibrate
--device host --refit`` fits again from it (after a cost-model change) in seconds instead of
re-measuring for ~9 minutes on a quiet machine; the refit's provenance says which measurements it used.

Layout (gzip JSON, deterministic): ``{"version", "meta": {...}, "models": [{"label", "family", "y_ms",
"load_1m", "table": compact feature table, "node_ms": {"op<i>": ms}}], "skipped": [...]}``. Node times
are keyed by row index, the names :meth:`FeatureTable.from_compact` gives its rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridexport.atomic import write_json_gz
from hybridexport.calibrate.fit import Dataset
from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json
from hybridexport.latency.features import FeatureTable

VERSION = 1
MEASURE_AGAIN = "measure again with `hybridexport calibrate --device host` (~9 min on a quiet machine)"


def measurements_path(device: str, directory: Path | None = None) -> Path:
    """``profiles/<device>.measurements.json.gz``: beside the profile the fit is written into."""
    from hybridexport.calibrate.profiles import profile_path

    p = profile_path(device, directory)
    return p.with_name(f"{device}.measurements.json.gz")


def _compact_node_ms(table: FeatureTable, node_ms: dict[str, float]) -> dict[str, float]:
    index_of = {o.name: i for i, o in enumerate(table.ops)}
    return {f"op{index_of[name]}": round(ms, 6) for name, ms in sorted(node_ms.items()) if name in index_of}


def to_json(ds: Dataset, meta: dict[str, Any]) -> dict[str, Any]:
    models = []
    for i, label in enumerate(ds.label):
        t = ds.tables[ds.table_of[i]]
        row: dict[str, Any] = {"label": label, "family": ds.family[i], "y_ms": ds.y_ms[i],
                               "load_1m": ds.load_1m.get(label), "table": t.to_compact()}
        if ds.node_ms:
            row["node_ms"] = _compact_node_ms(t, ds.node_ms[ds.table_of[i]])
        models.append(row)
    return {"version": VERSION, "meta": meta, "models": models, "skipped": list(ds.skipped)}


def from_json(data: dict[str, Any], source: str = "measurements") -> tuple[Dataset, dict[str, Any]]:
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("models"), list):
        raise InputFileError(f"{source} is not a version-{VERSION} host measurement file; {MEASURE_AGAIN}")
    ds = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[], skipped=list(data.get("skipped", [])))
    try:
        with_nodes = all("node_ms" in m for m in data["models"])
        for m in data["models"]:
            ds.table_of.append(len(ds.tables))
            ds.tables.append(FeatureTable.from_compact(m["table"]))
            ds.y_ms.append(float(m["y_ms"]))
            ds.family.append(m["family"])
            ds.label.append(m["label"])
            if m.get("load_1m") is not None:
                ds.load_1m[m["label"]] = float(m["load_1m"])
            if with_nodes:
                ds.node_ms.append({k: float(v) for k, v in m["node_ms"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputFileError(f"{source}: model {len(ds.label)} is malformed ({type(exc).__name__}: {exc}); "
                             f"{MEASURE_AGAIN}") from None
    return ds, dict(data.get("meta", {}))


def compact_dataset(ds: Dataset) -> Dataset:
    """The dataset as a refit sees it (tables through their compact form): a fit of this equals a refit."""
    return from_json(to_json(ds, {}))[0]


def save(ds: Dataset, meta: dict[str, Any], path: Path) -> Path:
    return write_json_gz(path, to_json(ds, meta))


def load(path: Path) -> tuple[Dataset, dict[str, Any]]:
    if not path.exists():
        raise InputFileError(f"no stored host measurements at {path}: measure with `hybridexport calibrate "
                             "--device host` (~9 min on a quiet machine) before refitting")
    data = read_json(path, "host measurements", MEASURE_AGAIN, gunzip=True)
    return from_json(data, f"'{path}'")
