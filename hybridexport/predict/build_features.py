"""Build the committed per-op feature cache for the models behind a device's calibration rows.

    python -m hybridexport.predict.build_features --device iphone13 [--device pixel6 ...]

Converting dozens of models to Core ML or TFLite takes long on a small machine, so this runs once
and its output (``hybridexport/predict/data/features_<format>.json.gz``) is committed; ``calibrate``
and the tests read it. Incremental: models already in the cache are skipped unless ``--rebuild``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

from hybridexport.predict.catalog import read_csv, resolve_row, select_rows
from hybridexport.predict.features import feature_key
from hybridexport.predict.profiles import DEFAULT_CALIBRATION, calibration_config
from hybridexport.predict.store import load_store, save_store


def wanted(device: str, csv_path: str | None = None) -> tuple[str, list[tuple[str, int, bool]]]:
    """(format, unique (builder, resolution, backbone) configs) behind a device's calibration rows."""
    cfg = calibration_config(device)
    rows, _ = read_csv(csv_path)
    out: list[tuple[str, int, bool]] = []
    for r in select_rows(rows, cfg):
        builder, _, _ = resolve_row(r)
        if builder is not None and r.resolution is not None:
            item = (builder, r.resolution, r.backbone)
            if item not in out:
                out.append(item)
    return cfg["format"], out


def raw_path(key: str) -> Path:
    """Where the exported graph of a feature key is kept (outside the repository; not committed)."""
    from hybridexport.predict.build import RAW_SUFFIX
    from hybridexport.predict.host import cache_dir

    safe = key.replace("|", "__").replace(":", "_")
    return cache_dir().parent / "raw" / f"{safe}{RAW_SUFFIX[key.split('|')[0]]}"


def build(fmt: str, items: list[tuple[str, int, bool]], rebuild: bool = False, retry_failed: bool = False,
          reextract: bool = False) -> None:
    import torch

    from hybridexport.predict.build import feature_table, features_from_raw
    from hybridexport.predict.features import FeatureTable

    torch.set_num_threads(1)
    store = load_store(fmt)
    for builder, res, backbone in items:
        key = feature_key(builder, fmt, res, backbone)
        raw = raw_path(key)
        if reextract and raw.exists():  # the graph is kept: only the extraction runs again
            ops = features_from_raw(raw, fmt)
            store["tables"][key] = FeatureTable(builder, fmt, res, ops, backbone).to_compact()
            print(f"re   {key}: {len(ops)} ops", flush=True)
            save_store(fmt, store)
            continue
        if key in store["tables"] and not rebuild:
            continue
        if key in store["failed"] and not (retry_failed or rebuild):
            continue
        t0 = time.time()
        try:
            table = feature_table(builder, fmt, res, backbone=backbone, keep=raw)
        except Exception as exc:  # noqa: BLE001 (record any build/convert failure as a skip reason)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            store["failed"][key] = reason
            print(f"FAIL {key} ({time.time() - t0:.0f}s): {reason}", flush=True)
            if "--verbose" in sys.argv:
                traceback.print_exc()
        else:
            store["tables"][key] = table.to_compact()
            store["failed"].pop(key, None)
            tot = table.totals()
            print(f"ok   {key} ({time.time() - t0:.0f}s): {tot['ops']} ops, {tot['macs'] / 1e9:.3f} GMACs", flush=True)
        store["versions"] = _versions()
        save_store(fmt, store)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "timm", "coremltools", "litert-torch", "onnx"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", default=[], help=f"one of {', '.join(DEFAULT_CALIBRATION)}")
    ap.add_argument("--data", help="published_latency.csv (default: ../shared/data/latency/)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild models already cached")
    ap.add_argument("--retry-failed", action="store_true", help="retry models whose build failed before")
    ap.add_argument("--reextract", action="store_true",
                    help="re-extract features from exported graphs kept in the cache (no conversion)")
    ap.add_argument("--only", help="only builders containing this text")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    by_fmt: dict[str, list[tuple[str, int, bool]]] = {}
    for dev in args.device or [d for d in DEFAULT_CALIBRATION if d != "host"]:
        fmt, items = wanted(dev, args.data)
        for it in items:
            if it not in by_fmt.setdefault(fmt, []) and (not args.only or args.only in it[0]):
                by_fmt[fmt].append(it)
    for fmt, items in by_fmt.items():
        print(f"{fmt}: {len(items)} model configurations", flush=True)
        build(fmt, items, rebuild=args.rebuild, retry_failed=args.retry_failed, reextract=args.reextract)
    return 0


if __name__ == "__main__":
    sys.exit(main())
