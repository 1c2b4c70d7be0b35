"""How good is the latency predictor? Prints three figures.

1. Host: calibrate on one set of models (measured here: totals and per-node kernel times), then
   predict ≥ 20 *other* models and compare with their measured latency: MAPE, share within ±10 %
   and ±20 %, Spearman rank correlation. Goal: ≥ 90 % within ±10 %.
2. Each phone profile with calibration data: leave-one-family-out cross-validation on its published
   rows. Goal for iphone13: ≥ 75 % within ±20 %, Spearman ≥ 0.9.
3. Time to predict one model once it is exported (features + cost model; module mapping separately).
   Goal: < 2 s.

    .venv/bin/python benchmarks/predictor_accuracy.py                # all three (host takes ~15-30 min)
    .venv/bin/python benchmarks/predictor_accuracy.py --skip-host    # phones + timing only (~1 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def line(name: str, m: dict) -> str:
    return (f"  {name:34s} n={m['n']:3d}  MAPE {m['mape']:5.1f}%  within±10% {m['within10']:4.0%}  "
            f"within±20% {m['within20']:4.0%}  Spearman {m['spearman']:.3f}")


def host_section(train: list[str], test: list[str], timer: str = "cpu") -> None:
    from hybridexport.predict.calibrate import MEASURED, Dataset, device_spec, fit_dataset, metrics
    from hybridexport.predict.costmodel import Design, theta_from_params
    from hybridexport.predict.host import host_dataset

    print(f"1. host (onnxruntime CPU, 1 thread, timer: {timer}): calibrate on one set, predict others", flush=True)
    t0 = time.time()
    both = host_dataset(train + test, progress=False, timer=timer)  # timed together, round-robin

    def subset(names: list[str]) -> Dataset:
        ds = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[])
        for i, lab in enumerate(both.label):
            if lab in names:
                ds.table_of.append(len(ds.tables))
                ds.tables.append(both.tables[both.table_of[i]])
                if both.node_ms:
                    ds.node_ms.append(both.node_ms[both.table_of[i]])
                ds.y_ms.append(both.y_ms[i])
                ds.family.append(both.family[i])
                ds.label.append(lab)
        return ds

    tr, te = subset(train), subset(test)
    model = fit_dataset(tr, device_spec("host"), MEASURED)
    design = Design(te.tables, device_spec("host"))
    pred = design.totals(theta_from_params(model["params"]))[np.asarray(te.table_of)] * 1000.0
    obs = np.asarray(te.y_ms)
    print(f"  fitted on the totals and {sum(len(m) for m in tr.node_ms)} per-node kernel times "
          "(ONNX Runtime profiler) of the calibration set")
    print(line(f"calibration set ({len(tr.y_ms)} models, fit)", model["fit"]))
    print(line("calibration set (leave-one-family-out)", model["heldout"]))
    print(line(f"unseen models ({len(te.y_ms)})", metrics(pred, obs)))
    for lab, p, o in sorted(zip(te.label, pred, obs, strict=True), key=lambda r: abs(r[1] / r[2] - 1), reverse=True):
        print(f"    {lab:36s} measured {o:8.2f} ms  predicted {p:8.2f} ms  ({(p / o - 1) * 100:+5.1f}%)")
    if both.skipped:
        print(f"  skipped {len(both.skipped)}: " + "; ".join(f"{s['model']} ({s['reason']})" for s in both.skipped))
    print(f"  ({time.time() - t0:.0f} s)\n", flush=True)


def phone_section(devices: list[str]) -> None:
    from hybridexport.predict.calibrate import calibrate_phone

    print("2. phones: leave-one-family-out on the published rows of each device's protocol", flush=True)
    for dev in devices:
        try:
            m = calibrate_phone(dev)
        except Exception as exc:  # noqa: BLE001 (report and go on with the next device)
            print(f"  {dev}: not calibrated ({exc})")
            continue
        h = m["heldout"]
        print(f"  {dev}: {m['provenance']['protocol']}")
        print(f"    rows used {m['provenance']['rows_used']}, skipped {m['provenance']['rows_skipped']}, "
              f"families {h['families']}")
        print(line("  fit (all rows)", m["fit"]))
        print(line("  held out (leave-one-family-out)", h))
        worst = sorted(h["mape_by_family"].items(), key=lambda kv: -kv[1])[:4]
        print("    worst families: " + ", ".join(f"{f} {e:.0f}%" for f, e in worst))
    print(flush=True)


def timing_section(model: str, device: str) -> None:
    import torch

    from hybridexport.predict.predictor import features_of_artifact, latency_model_of, predict_ops
    from hybridexport.predict.runner import build_profile

    print(f"3. time to predict {model} on {device} after export", flush=True)
    torch.set_num_threads(1)
    lm = latency_model_of(device)
    fmt = lm["device"]["format"]
    from hybridexport.zoo import build_model

    loaded = build_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m.{ {'coreml': 'mlpackage', 'tflite': 'tflite', 'onnx': 'onnx'}[fmt] }"
        _export(loaded, fmt, path)
        features_of_artifact(path, fmt)  # warm imports (coremltools, protobuf) once
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            ops = features_of_artifact(path, fmt)
            prof = build_profile(predict_ops(ops, lm, device), lm, model=model, device=device)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if fmt == "coreml":
            from hybridexport.predict.modpath import assign_modules, trace_module_map

            share = assign_modules(ops, trace_module_map(loaded.module, loaded.example_input()))
        else:
            share = sum(1 for o in ops if o.module) / len(ops)
        t_map = time.perf_counter() - t0
    print(f"  features + prediction: median {statistics.median(times):.3f} s over 5 runs "
          f"({len(ops)} ops, predicted {prof.total_ms.median:.2f} ms)")
    print(f"  module-path mapping (re-trace of the source model): {t_map:.2f} s, {share:.0%} of ops by name\n")


def _export(loaded, fmt: str, path: Path) -> None:
    import torch

    x = loaded.example_input()
    with torch.no_grad():
        if fmt == "coreml":
            import coremltools as ct

            traced = torch.jit.trace(loaded.module, x, check_trace=False)
            ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))], convert_to="mlprogram",
                       skip_model_load=True).save(str(path))
        elif fmt == "tflite":
            import litert_torch

            litert_torch.convert(loaded.module, (x,)).export(str(path))
        else:
            torch.onnx.export(loaded.module, (x,), dynamo=True, verbose=False).save(str(path))


def main() -> int:
    from hybridexport.predict.host import HOST_TEST, HOST_TRAIN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--timer", choices=("cpu", "runner"), default="cpu",
                    help="host latency: thread CPU time (stable on a shared machine) or the host runner's wall time")
    ap.add_argument("--skip-phones", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--devices", default="iphone13,iphone12,pixel6,pixel7,pixel8,galaxy-s23")
    ap.add_argument("--timing-model", default="iformer-m")
    ap.add_argument("--timing-device", default="iphone13")
    args = ap.parse_args()
    if not args.skip_host:
        host_section(list(HOST_TRAIN), list(HOST_TEST), args.timer)
    if not args.skip_phones:
        phone_section(args.devices.split(","))
    if not args.skip_timing:
        timing_section(args.timing_model, args.timing_device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
