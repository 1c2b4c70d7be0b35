"""The committed feature cache: ``hybridexport/calibrate/data/features_<format>.json.gz``.

Derived data only (op kinds, shapes as element counts, MACs), never latencies. Each file maps a
feature key (format|builder|resolution[|backbone]) to a compact table, and records the builds that
failed with their reason so calibration can say why a row was skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridexport.atomic import write_json_gz
from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json
from hybridexport.latency.features import COLUMNS, FeatureTable

DATA_DIR = Path(__file__).resolve().parent / "data"
STORE_VERSION = 1


def store_path(fmt: str, data_dir: Path | None = None) -> Path:
    return (data_dir or DATA_DIR) / f"features_{fmt}.json.gz"


def load_store(fmt: str, data_dir: Path | None = None) -> dict[str, Any]:
    """{"version", "columns", "tables": {key: compact}, "failed": {key: reason}, "versions": {...}}."""
    p = store_path(fmt, data_dir)
    if not p.exists():
        return {"version": STORE_VERSION, "columns": list(COLUMNS), "tables": {}, "failed": {}, "versions": {}}
    data = read_json(p, "feature cache", f"rebuild it with `python -m hybridexport.calibrate.build_features "
                     f"--format {fmt}`", expect_object=True, gunzip=True)
    if data.get("version") != STORE_VERSION or data.get("columns") != list(COLUMNS):
        raise InputFileError(f"feature cache '{p}' has an old layout; rebuild it with "
                             f"`python -m hybridexport.calibrate.build_features --format {fmt}`")
    return data


def save_store(fmt: str, data: dict[str, Any], data_dir: Path | None = None) -> Path:
    """Write deterministically (sorted keys and producer lists, gzip mtime 0), atomically."""
    src = COLUMNS.index("src")
    for t in data["tables"].values():
        for row in t["rows"]:
            row[src] = sorted(row[src])
    data = {**data, "tables": dict(sorted(data["tables"].items())), "failed": dict(sorted(data["failed"].items()))}
    return write_json_gz(store_path(fmt, data_dir), data)


def tables(fmt: str, data_dir: Path | None = None) -> dict[str, FeatureTable]:
    return {k: FeatureTable.from_compact(v) for k, v in load_store(fmt, data_dir)["tables"].items()}
