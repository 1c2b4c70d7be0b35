"""The committed feature cache: ``hybridexport/calibrate/data/features_<format>.json.gz``.

Derived data only (op kinds, shapes as element counts, MACs), never latencies. Each file maps a
feature key (format|builder|resolution[|backbone]) to a compact table, and records the builds that
failed with their reason so calibration can say why a row was skipped.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from hybridexport.atomic import atomic_path
from hybridexport.errors import InputFileError
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
    try:
        data = json.loads(gzip.decompress(p.read_bytes()).decode("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"feature cache '{p}' is unreadable ({exc}); rebuild it with "
                             f"`python -m hybridexport.calibrate.build_features --format {fmt}`") from None
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
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    p = store_path(fmt, data_dir)
    with atomic_path(p) as tmp:
        tmp.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    return p


def tables(fmt: str, data_dir: Path | None = None) -> dict[str, FeatureTable]:
    return {k: FeatureTable.from_compact(v) for k, v in load_store(fmt, data_dir)["tables"].items()}
