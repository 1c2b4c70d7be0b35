"""How good is the latency predictor? Prints three figures.

1. Host: calibrate on one set of models (measured here: totals and per-node kernel times), then
   predict ≥ 20 *other* models and compare with their measured latency: MAPE, share within ±10 %
   and ±20 %, Spearman rank correlation. Goal: ≥ 90 % within ±10 %.
2. Each phone profile with calibration data: leave-one-family-out cross-validation on its published
   rows. Goal for iphone13: ≥ 75 % within ±20 %, Spearman ≥ 0.9.
3. Time to bench one model on a phone profile from its existing artifact, beside the old path's time.
   Goal: ≤ 2 s, and at most a fifth of the time ``convert`` took.
4. Layer keys shared by a measured and a predicted host profile of one artifact. Goal: ≥ 95 % matched.

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
    from hybridexport.calibrate.fit import MEASURED, Dataset, device_spec, fit_dataset, metrics
    from hybridexport.calibrate.host import host_dataset
    from hybridexport.latency.costmodel import Design, theta_from_params

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
    from hybridexport.calibrate.fit import calibrate_phone

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
    """Bench on an existing artifact: the op-table path (what ``bench`` does) against the old path (features
    read from the file again, the model rebuilt and rewritten again, and re-traced for module names)."""
    import subprocess

    import torch

    from hybridexport.bench import bench
    from hybridexport.bench.devices import load_device
    from hybridexport.export import convert, formats

    print(f"3. time to predict {model} on {device} from its existing artifact", flush=True)
    torch.set_num_threads(1)
    dev = load_device(device)
    fmt = dev.format
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        [man] = convert(model, to=fmt, out=out)
        t_convert = time.perf_counter() - t0
        bench(model, device=device, out=out)  # warm this process's imports once
        new = []
        for _ in range(5):
            t0 = time.perf_counter()
            [prof] = bench(model, device=device, out=out)
            new.append(time.perf_counter() - t0)
        cli = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hybridexport", "bench", model, "--device", device, "--out", out],
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        formats.get(fmt).op_table(Path(man.path))  # features from the file again
        t_features = time.perf_counter() - t0
        t0 = time.perf_counter()
        t_map = _old_module_map(model, man, fmt)
        t_old = time.perf_counter() - t0 + t_features
    print(f"  convert built the artifact in {t_convert:.1f} s")
    print(f"  bench, in process: median {statistics.median(new):.3f} s over 5 runs ({len(prof.layers)} rows, "
          f"predicted {prof.total_ms.median:.2f} ms)")
    print(f"  bench, whole command (`python -m hybridexport bench ...`): median {statistics.median(cli):.2f} s "
          f"(goal ≤ 2 s and ≤ {t_convert / 5:.1f} s, a fifth of convert)")
    print(f"  the old path (features {t_features:.2f} s + rebuild, rewrite and re-trace {t_map:.2f} s): "
          f"{t_old:.2f} s\n")


def _old_module_map(model: str, man, fmt: str) -> float:
    """What the predicted runner did before op tables: rebuild the model, re-run its rewrite passes, and
    re-trace it to map Core ML op names to modules. Returns its seconds."""
    t0 = time.perf_counter()
    from hybridexport.rewrite.pipeline import run_pipeline
    from hybridexport.zoo import build_model

    loaded = build_model(model)
    module, _ = run_pipeline(loaded.module, loaded.example_input(), passes=man.passes, count=False)
    if fmt == "coreml":
        import torch
        from coremltools.converters.mil.frontend.torch.torchscript_utils import _expand_and_optimize_ir

        with torch.no_grad():
            _expand_and_optimize_ir(torch.jit.trace(module, loaded.example_input(), check_trace=False))
    return time.perf_counter() - t0


def keys_section(models: list[str]) -> None:
    """A measured host profile (ONNX Runtime) and the predicted host profile of the same artifact: how many
    of their layer keys (nn.Module paths) ``compare`` matches."""
    import torch

    from hybridexport.bench import bench
    from hybridexport.report.compare import compare_profiles

    print("4. layer keys: measured (host-onnxruntime) vs predicted profile of the same ONNX artifact", flush=True)
    torch.set_num_threads(1)
    total = matched = 0
    with tempfile.TemporaryDirectory() as out:
        for model in models:
            [measured] = bench(model, device="host", out=out, runs=5, warmup=1)
            [predicted] = bench(model, device="host", runner="predicted", out=out)
            entry = compare_profiles(measured, predicted)
            m = sum(1 for d in entry.layers if d.status == "matched")
            total, matched = total + len(entry.layers), matched + m
            print(f"  {model:24s} {m:4d} of {len(entry.layers):4d} keys matched ({m / len(entry.layers):.1%})")
    print(f"  all: {matched} of {total} ({matched / max(total, 1):.1%}; goal ≥ 95%)\n")


def main() -> int:
    from hybridexport.calibrate.host import HOST_TEST, HOST_TRAIN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--timer", choices=("cpu", "runner"), default="cpu",
                    help="host latency: thread CPU time (stable on a shared machine) or the host runner's wall time")
    ap.add_argument("--skip-phones", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--devices", default="iphone13,iphone12,pixel6,pixel7,pixel8,galaxy-s23")
    ap.add_argument("--timing-model", default="iformer-m")
    ap.add_argument("--timing-device", default="iphone13")
    ap.add_argument("--skip-keys", action="store_true")
    ap.add_argument("--keys-models", default="iformer-t,mobilevit-xxs,mobileformer-26m,timm:mobilenetv3_small_050")
    args = ap.parse_args()
    if not args.skip_host:
        host_section(list(HOST_TRAIN), list(HOST_TEST), args.timer)
    if not args.skip_phones:
        phone_section(args.devices.split(","))
    if not args.skip_timing:
        timing_section(args.timing_model, args.timing_device)
    if not args.skip_keys:
        keys_section(args.keys_models.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
