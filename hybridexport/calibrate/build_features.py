"""Build the committed per-op feature cache for the models behind a device's calibration rows.

    python -m hybridexport.calibrate.build_features --device iphone13 [--device pixel6 ...]

Each model is converted in deployment form through ``convert`` (:mod:`hybridexport.calibrate.build`) in
the device's format and protocol precision, and its op table is stored in compact form
(``hybridexport/calibrate/data/features_<format>.json.gz``, committed; ``calibrate`` and the tests read
it). Converting dozens of models to Core ML or TFLite takes long on a small machine, so this runs once.
Incremental: models already in the cache are skipped unless ``--rebuild``; ``--reextract`` re-reads the
op tables of the cached artifacts (no conversion) after an op-table change.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

from hybridexport.calibrate.catalog import read_csv, resolve_row, select_rows
from hybridexport.calibrate.profiles import calibration_config
from hybridexport.calibrate.store import load_store, save_store
from hybridexport.latency.features import FeatureTable, feature_key

#: the phone profiles with published calibration rows
PHONES = ("iphone13", "iphone12", "pixel6", "pixel7", "pixel8", "galaxy-s23")


def wanted(device: str, csv_path: str | None = None) -> tuple[str, str, list[tuple[str, int, bool]]]:
    """(format, precision, unique (builder, resolution, backbone) configs) behind a device's calibration rows."""
    from hybridexport.bench.devices import load_device

    cfg = calibration_config(device)
    rows, _ = read_csv(csv_path)
    out: list[tuple[str, int, bool]] = []
    for r in select_rows(rows, cfg):
        builder, _, _ = resolve_row(r)
        if builder is not None and r.resolution is not None:
            item = (builder, r.resolution, r.backbone)
            if item not in out:
                out.append(item)
    dev = load_device(device)
    precision = dev.precision if dev.format == cfg["format"] else None
    return cfg["format"], precision or "fp32", out


def build(fmt: str, precision: str, items: list[tuple[str, int, bool]], rebuild: bool = False,
          retry_failed: bool = False, reextract: bool = False) -> None:
    import torch

    from hybridexport.calibrate.build import deploy_artifact
    from hybridexport.export.formats import get
    from hybridexport.optable import OpTable

    torch.set_num_threads(1)
    store = load_store(fmt)
    for builder, res, backbone in items:
        key = feature_key(builder, fmt, res, backbone)
        if key in store["tables"] and not (rebuild or reextract):
            continue
        if key in store["failed"] and not (retry_failed or rebuild):
            continue
        t0 = time.time()
        try:
            man = deploy_artifact(builder, fmt, precision, res, backbone)
            table = get(fmt).op_table(Path(man.path)) if reextract else OpTable.load(man.op_table_path())
        except Exception as exc:  # noqa: BLE001 (record any build/convert failure as a skip reason)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            store["failed"][key] = reason
            print(f"FAIL {key} ({time.time() - t0:.0f}s): {reason}", flush=True)
            if "--verbose" in sys.argv:
                traceback.print_exc()
        else:
            ft = FeatureTable(builder, fmt, res, table.ops, backbone)
            store["tables"][key] = ft.to_compact()
            store["failed"].pop(key, None)
            tot = ft.totals()
            print(f"ok   {key} ({time.time() - t0:.0f}s): {tot['ops']} ops, {tot['macs'] / 1e9:.3f} GMACs", flush=True)
        store["versions"] = _versions()
        store["precision"] = precision
        save_store(fmt, store)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "timm", "coremltools", "litert-torch", "ai-edge-quantizer", "onnx"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", default=[], help=f"one of {', '.join(PHONES)}")
    ap.add_argument("--data", help="published_latency.csv (default: ../shared/data/latency/)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild models already cached")
    ap.add_argument("--retry-failed", action="store_true", help="retry models whose build failed before")
    ap.add_argument("--reextract", action="store_true",
                    help="re-read the op tables of the cached artifacts (no conversion)")
    ap.add_argument("--only", help="only builders containing this text")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    by_fmt: dict[tuple[str, str], list[tuple[str, int, bool]]] = {}
    for dev in args.device or PHONES:
        fmt, precision, items = wanted(dev, args.data)
        for it in items:
            if it not in by_fmt.setdefault((fmt, precision), []) and (not args.only or args.only in it[0]):
                by_fmt[(fmt, precision)].append(it)
    for (fmt, precision), items in by_fmt.items():
        print(f"{fmt} {precision}: {len(items)} model configurations", flush=True)
        build(fmt, precision, items, rebuild=args.rebuild, retry_failed=args.retry_failed, reextract=args.reextract)
    return 0


if __name__ == "__main__":
    sys.exit(main())
