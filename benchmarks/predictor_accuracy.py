"""How good is the latency predictor? Prints three figures.

1. Host: calibrate on one set of models (measured here: totals and per-node kernel times), then
   predict ≥ 20 *other* models and compare with their measured latency: MAPE, share within ±10 %
   and ±20 %, Spearman rank correlation. Goal: ≥ 90 % within ±10 %.
2. Each phone profile with calibration data: leave-one-family-out cross-validation on its published
   rows. Goal for iphone13: ≥ 75 % within ±20 %, Spearman ≥ 0.9.
3. Time to bench one model on a phone profile from its existing artifact, beside the old path's time.
   Goal: ≤ 2 s, and at most a fifth of the time ``convert`` took.
4. Layer keys shared by a measured and a predicted host profile of one artifact. Goal: ≥ 95 % matched.
5. Pairs (differences, the designer's question "is B faster than A, by how much?"): on the host, rewrite
   on/off for zoo variants and timm models and width/depth neighbours of one family, predicted ratio
   B/A against the measured one (ONNX Runtime, 1 thread, interleaved runs, bootstrap interval); on each
   calibrated phone (iPhone 13 first), every same-family pair of published rows, both predicted with
   their family left out of the fit. Goals (host): sign right for ≥ 95 % of pairs that differ by > 5 %, median ratio error ≤ 3 %.
6. Portability (issue 20): this machine's probe (GEMM GFLOP/s, GB/s, spread) against the one the host
   calibration recorded, the peak ratios the predicted runner applies, and what the fingerprints differ in
   (~3 s). With ``--portability-models`` (default :data:`PORTABILITY_MODELS`, timm models no list of the
   project names), each model's ONNX artifact is predicted (the runner's path: rescaled by a fresh probe)
   and measured (ONNX Runtime, 1 thread, wall clock, median of ``--portability-runs``) (a) as the machine
   is and (b) slowed: this process and a CPU-bound background process share one core. Goals: ≥ 90 %
   within ±10 % and MAPE ≤ 6 % in both.

    .venv/bin/python benchmarks/predictor_accuracy.py                # all three (host takes ~15-30 min)
    .venv/bin/python benchmarks/predictor_accuracy.py --only-host --save-host F.json.gz   # section 1, stored
    .venv/bin/python benchmarks/predictor_accuracy.py --host-from F.json.gz   # section 1 from stored (~3 min)
    .venv/bin/python benchmarks/predictor_accuracy.py --host-from profiles/host.measurements.json.gz \
        --pairs-from benchmarks/data/host_pairs.json.gz   # sections 1 and 5 (host) from the committed measurements
    .venv/bin/python benchmarks/predictor_accuracy.py --skip-host    # phones + timing only (~1 min)
    .venv/bin/python benchmarks/predictor_accuracy.py --only-pairs   # section 5 (~1 min per host pair)
    .venv/bin/python benchmarks/predictor_accuracy.py --only-phone-pairs   # section 5, phones only (~1 s)
    .venv/bin/python benchmarks/predictor_accuracy.py --only-portability   # section 6 probe only (~3 s)
    .venv/bin/python benchmarks/predictor_accuracy.py --only-portability --measure   # (a) and (b) (~10 min)
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


def host_section(train: list[str], test: list[str], timer: str = "cpu", save: str | None = None,
                 stored: str | None = None) -> dict:
    """``save``: store what was measured (:mod:`hybridexport.calibrate.measurements`, fit on ``train``);
    ``stored``: measure nothing, fit the current cost model on a stored file's models instead. Returns the fit."""
    from hybridexport.calibrate import measurements
    from hybridexport.calibrate.fit import MEASURED, device_spec, fit_dataset, metrics
    from hybridexport.calibrate.host import fit_subset, measure_host
    from hybridexport.latency.costmodel import Design, theta_from_params

    t0 = time.time()
    if stored:
        both, meta = measurements.load(Path(stored))
        train = list(meta.get("fit_models") or train)
        test = [lab for lab in both.label if lab not in set(train)]
        print(f"1. host (stored measurements {stored}, {meta.get('date')}, timer {meta.get('timer')}): "
              "calibrate on one set, predict others", flush=True)
    else:
        print(f"1. host (onnxruntime CPU, 1 thread, timer: {timer}): calibrate on one set, predict others", flush=True)
        both, meta = measure_host(train + test, timer, allow_load=True, fit_models=train, progress=False)
        both = measurements.compact_dataset(both)  # timed together, round-robin
        if save:
            measurements.save(both, meta, Path(save))
            print(f"  measurements stored in {save}")
        if meta["machine"]["conditions"]:
            print("  measured under: " + "; ".join(meta["machine"]["conditions"]))
    tr, te = fit_subset(both, train), fit_subset(both, test)
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
    return model


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


HOST_PAIR_MODELS = ("iformer-t", "iformer-s", "mobilevit-xxs", "mobilevit-xs", "mobileformer-26m", "mobileformer-52m",
                    "timm:efficientvit_m0", "timm:pit_ti_224", "timm:levit_128s", "timm:mobilevitv2_050",
                    "timm:fastvit_t8", "timm:repvit_m0_9",
                    # 14 more timm models (20 in all), hybrids first: rewrite on/off pairs where a pass changes the graph
                    "timm:edgenext_xx_small", "timm:coatnet_nano_rw_224", "timm:efficientformer_l1",
                    "timm:efficientformerv2_s0", "timm:tiny_vit_5m_224", "timm:poolformerv2_s12", "timm:levit_192",
                    "timm:maxvit_nano_rw_256", "timm:xcit_nano_12_p16_224", "timm:mobilevitv2_075", "timm:fastvit_t12",
                    "timm:repvit_m1_0", "timm:efficientvit_m1", "timm:pit_xs_224")
HOST_VARIANT_CHAINS = (("timm:mobilenetv3_small_050", "timm:mobilenetv3_small_075", "timm:mobilenetv3_small_100"),
                       ("mobilevit-xxs", "mobilevit-xs"), ("iformer-t", "iformer-s"),
                       ("mobileformer-26m", "mobileformer-52m"))
# bring-your-own ablation variants (the iFormer paper's kind: attention type, kernel size, FFN depthwise conv),
# each against the released design
_ABL = str(Path(__file__).resolve().parent / "ablations" / "iformer_ablation.py")
HOST_ABLATION_CHAINS = ((f"{_ABL}:build()", f"{_ABL}:build(attn='sha')", f"{_ABL}:build(attn='mha')"),
                        (f"{_ABL}:build()", f"{_ABL}:build(kernel=3)"), (f"{_ABL}:build()", f"{_ABL}:build(ffn_dw=True)"))
HOST_PAIR_CHAINS = (*HOST_VARIANT_CHAINS, *HOST_ABLATION_CHAINS)


def _label(ref: str) -> str:
    """A model reference as the report shows it (a model file by its stem: ``iformer_ablation:build(kernel=3)``)."""
    return f"{Path(ref.split('.py:')[0]).stem}:{ref.split('.py:')[1]}" if ".py:" in ref else ref


def _interleaved_ratio(a_path: str, b_path: str, runs: int) -> tuple[float, float, float]:
    """Measured median ratio b/a with its 99 % bootstrap interval (ONNX Runtime, 1 thread, alternating runs)."""
    import onnxruntime as ort

    from hybridexport.report import stats

    sessions = []
    for path in (a_path, b_path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                 for i in sess.get_inputs()}
        for _ in range(5):
            sess.run(None, feeds)
        sessions.append((sess, feeds))
    samples: list[list[float]] = [[], []]
    for _ in range(runs):
        for k, (sess, feeds) in enumerate(sessions):
            t = time.perf_counter()
            sess.run(None, feeds)
            samples[k].append((time.perf_counter() - t) * 1000)
    e = stats.ratio_of_quantiles(samples[0], samples[1], q=0.5)
    return e.ratio, e.lo, e.hi


def _pair_report(rows: list[tuple[str, float, float]], label: str,
                 intervals: list[tuple[float, float]] | None = None) -> None:
    """rows: (pair, predicted ratio, measured/published ratio); a measured pair with an interval that
    contains 1 does not count as differing (its sign is unknown), and errors are over clear pairs."""
    if not rows:
        print(f"  {label}: no pairs")
        return
    if intervals is None:
        kept = rows
    else:  # a clear change (interval off 1), or a clear absence of one (a narrow interval around 1)
        kept = [r for r, (lo, hi) in zip(rows, intervals, strict=True) if lo > 1 or hi < 1 or hi - lo < 0.1]
    err = [abs(p / m - 1) for _, p, m in kept]
    differ = [(n, p, m) for n, p, m in kept if abs(m - 1) > 0.05]
    right = sum(1 for _, p, m in differ if (p > 1) == (m > 1))
    print(f"  {label}: {len(rows)} pairs, {len(kept)} measured clearly enough; sign right {right}/{len(differ)} of "
          f"those differing > 5 %" + (f" ({right / len(differ):.0%})" if differ else ""))
    if err:
        print(f"    median |predicted/observed − 1| {statistics.median(err):.1%}, mean {statistics.mean(err):.1%}")
    for n, p, m in sorted(kept, key=lambda r: -abs(r[1] / r[2] - 1))[:5]:
        print(f"    worst: {n:58s} predicted ×{p:.3f}  observed ×{m:.3f}")


def _stored_pairs_report(stored: str, lm: dict | None = None) -> None:
    """Section 5 on stored host pairs (``--save-pairs``): predicted again with ``lm`` (default: the profile's)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.jsonfile import read_json
    from hybridexport.latency.features import FeatureTable
    from hybridexport.latency.predictor import latency_model_of, predict_ops

    lm = lm or latency_model_of("host", load_device("host").raw)
    data = read_json(stored, "stored host pairs", "pass a file written by --save-pairs", expect_object=True,
                     gunzip=True)
    rows, cis = [], []
    for p in data["pairs"]:
        a, b = (predict_ops(FeatureTable.from_compact(p[k]).ops, lm, "host").total_ms for k in ("a", "b"))
        rows.append((p["name"], b / a, p["measured"]))
        cis.append((p["lo"], p["hi"]))
    print(f"5. pairs: predicted vs observed ratios B/A (stored measurements {stored}, {data.get('date')})")
    _pair_report(rows, "host (ONNX Runtime, 1 thread)", cis)


def pairs_section(models: list[str], chains: list[tuple[str, ...]], runs: int = 40, save: str | None = None) -> None:
    from hybridexport.bench.devices import load_device
    from hybridexport.export.api import convert
    from hybridexport.latency.predictor import latency_model_of, predict_ops
    from hybridexport.optable import OpTable, op_table_path

    print("5. pairs: predicted vs observed ratios B/A", flush=True)
    lm = latency_model_of("host", load_device("host").raw)

    rows: list[tuple[str, float, float]] = []
    cis: list[tuple[float, float]] = []
    stored: list[dict] = []

    def keep(name: str, a, b, r: float, lo: float, hi: float) -> None:
        from hybridexport.latency.features import FeatureTable

        ops_a, ops_b = (OpTable.load(op_table_path(Path(m.path))).ops for m in (a, b))
        rows.append((name, predict_ops(ops_b, lm, "host").total_ms / predict_ops(ops_a, lm, "host").total_ms, r))
        cis.append((lo, hi))
        tables = [FeatureTable(model="", format="onnx", resolution=0, ops=ops).to_compact() for ops in (ops_a, ops_b)]
        stored.append({"name": name, "a": tables[0], "b": tables[1], "measured": r, "lo": lo, "hi": hi})
    with tempfile.TemporaryDirectory(prefix="hx-pairs-") as tmp:
        built: dict[tuple[str, bool], object] = {}

        def art(name: str, rewrite: bool):
            if (name, rewrite) not in built:
                (m,) = convert(name, to="onnx", out=Path(tmp) / ("on" if rewrite else "off"), rewrite=rewrite,
                               judge=False, verify_inputs=1)
                built[(name, rewrite)] = m
            return built[(name, rewrite)]

        t0 = time.perf_counter()
        for name in models:
            try:
                a, b = art(name, False), art(name, True)
            except Exception as exc:  # noqa: BLE001 (report and go on)
                print(f"  {name}: not built ({type(exc).__name__}: {str(exc)[:100]})")
                continue
            if a.sha256 == b.sha256:
                continue  # no pass changed the graph: not a pair
            r, lo, hi = _interleaved_ratio(a.path, b.path, runs)
            keep(f"{name}: rewrite on/off", a, b, r, lo, hi)
            print(f"    {name:34s} rewrite on/off: predicted ×{rows[-1][1]:.3f}  measured ×{r:.3f} "
                  f"[{lo:.3f}, {hi:.3f}]", flush=True)
        for chain in chains:
            for x, y in zip(chain, chain[1:], strict=False):
                try:
                    a, b = art(x, True), art(y, True)
                except Exception as exc:  # noqa: BLE001
                    print(f"  {_label(x)} → {_label(y)}: not built ({type(exc).__name__})")
                    continue
                r, lo, hi = _interleaved_ratio(a.path, b.path, runs)
                name = f"{_label(x)} → {_label(y)}"
                keep(name, a, b, r, lo, hi)
                print(f"    {name:48s} predicted ×{rows[-1][1]:.3f}  measured ×{r:.3f} "
                      f"[{lo:.3f}, {hi:.3f}]", flush=True)
        print(f"  host pairs measured in {time.perf_counter() - t0:.0f} s")
    _pair_report(rows, "host (ONNX Runtime, 1 thread)", cis)
    if save:
        import datetime

        from hybridexport.atomic import write_json_gz

        write_json_gz(save, {"date": datetime.date.today().isoformat(), "runs": runs, "pairs": stored})
        print(f"  pairs stored in {save}")
    phone_pairs_section()


PAIR_PHONES = ("iphone13", "iphone12", "pixel6", "pixel7", "pixel8", "galaxy-s23")


def published_pairs(observations: list[dict]) -> list[tuple[str, float, float]]:
    """Every same-family pair of a phone profile's calibration rows: (pair, predicted ratio B/A with the
    family held out of the fit, published ratio B/A)."""
    rows = []
    for i, a in enumerate(observations):
        for b in observations[i + 1:]:
            if a["family"] == b["family"] and a["observed_ms"] > 0 and a["heldout_ms"] > 0:
                rows.append((f"{a['label']} → {b['label']}", b["heldout_ms"] / a["heldout_ms"],
                             b["observed_ms"] / a["observed_ms"]))
    return rows


def phone_pairs_section(devices: tuple[str, ...] = PAIR_PHONES) -> None:
    """The published pairs of each calibrated phone profile (no measurement: the stored held-out predictions)."""
    from hybridexport.bench.devices import load_device

    for device in devices:
        lm = load_device(device).raw.get("latency_model")
        if lm and lm.get("observations"):
            _pair_report(published_pairs(lm["observations"]), f"{device} published same-family pairs (family held out)")
    print(flush=True)


def portability_section() -> None:
    from hybridexport.bench.devices import load_device
    from hybridexport.calibrate.machine import adapt_to_this_machine, probe

    print("6. portability: this machine's probe against the host calibration's", flush=True)
    t0 = time.perf_counter()
    lm = load_device("host").raw["latency_model"]
    _, info, note = adapt_to_this_machine(lm)
    here, cal = info["probe"], info["calibration_probe"]
    t1 = time.perf_counter()
    probe()
    cached = time.perf_counter() - t1
    for name, p in (("this machine", here), ("calibration", cal)):
        if p is None:
            print(f"  {name:14s} no probe recorded")
            continue
        print(f"  {name:14s} GEMM {p['gemm_gflops']:6.1f} GFLOP/s (spread x{p['gemm_spread']:.2f})  bandwidth "
              f"{p['bandwidth_gbs']:5.1f} GB/s (x{p['bandwidth_spread']:.2f})  load {p['load_1m']:.2f}  "
              f"timer {p['timer']}, {p['threads']} thread(s)")
    if "ratios" in info:
        print(f"  peaks scaled: compute x{info['ratios']['gemm']:.2f}, memory x{info['ratios']['bandwidth']:.2f}; "
              f"fingerprint differences: {info['mismatch'] or 'none'}")
    print(f"  probe took {info['probe_s']:.2f} s (from cache when it ran earlier this boot), cached {cached:.3f} s; "
          f"section {time.perf_counter() - t0:.1f} s")
    print(f"  note: {note}")


#: timm models that neither the calibration nor any other list of the project names (issue 20's kind)
PORTABILITY_MODELS = (
    "timm:mnasnet_075", "timm:regnetx_008", "timm:mobilevitv2_125", "timm:mobilenetv2_120d", "timm:lcnet_150",
    "timm:tinynet_b", "timm:regnety_008", "timm:ghostnet_130", "timm:hardcorenas_d", "timm:fbnetv3_b",
    "timm:semnasnet_140", "timm:repvit_m1_1", "timm:efficientvit_m3", "timm:edgenext_small", "timm:rexnet_150",
    "timm:mixnet_l", "timm:mobileone_s4", "timm:resnet26", "timm:efficientnet_b2", "timm:levit_conv_256",
)


def _median_wall_ms(path: str, runs: int) -> float:
    from hybridexport.bench.runners.host_onnxruntime import cpu_session

    sess = cpu_session(path, 1)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    for _ in range(3):
        sess.run(None, feeds)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def _portability_condition(label: str, arts: dict[str, str], runs: int) -> None:
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners.predicted import predict_on_this_machine
    from hybridexport.calibrate import sharing
    from hybridexport.optable import OpTable, op_table_path

    lm = load_device("host").raw["latency_model"]
    sharing.forget()  # every run length measured under this condition
    errs = []
    for k, (name, path) in enumerate(arts.items()):
        pred, _, info, _ = predict_on_this_machine(OpTable.load(op_table_path(Path(path))).ops, lm, fresh=k == 0)
        if k == 0:
            p, r = info["probe"], info.get("ratios", {})
            print(f"  ({label}) probe {p['gemm_gflops']:.0f} GFLOP/s, {p['bandwidth_gbs']:.1f} GB/s "
                  f"(x{max(p['gemm_spread'], p['bandwidth_spread']):.2f}, {p['timer']} time), load {p['load_1m']:.2f}; "
                  f"peaks scaled compute x{r.get('gemm', 1):.2f}, memory x{r.get('bandwidth', 1):.2f}", flush=True)
        meas = _median_wall_ms(path, runs)
        errs.append(pred.total_ms / meas - 1)
        st = info["stretch"]
        print(f"    {name:28s} predicted {pred.total_ms:8.2f} ms  measured {meas:8.2f} ms  {errs[-1]:+6.1%}  "
              f"(wall/CPU x{st['wall_over_cpu']:.2f} at {st['block_s'] * 1000:.0f} ms)", flush=True)
    if errs:
        within = sum(abs(e) <= 0.10 for e in errs)
        print(f"  ({label}) {within}/{len(errs)} within ±10 % ({within / len(errs):.0%}), "
              f"MAPE {statistics.mean(abs(e) for e in errs):.1%}, median error {statistics.median(errs):+.1%}", flush=True)


def portability_measure(models: list[str], runs: int) -> None:
    """(a) as is and (b) slowed (a busy process on this process's core), both predicted from a fresh probe."""
    import multiprocessing as mp
    import os

    from hybridexport.export.api import convert

    print(f"6b. portability measured on {len(models)} models no list names", flush=True)
    arts: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hx-port-") as tmp:
        for name in models:
            try:
                (m,) = convert(name, to="onnx", out=Path(tmp), judge=False, verify_inputs=1)
                arts[name] = m.path
            except Exception as exc:  # noqa: BLE001 (report and go on)
                print(f"    {name}: not built ({type(exc).__name__}: {str(exc)[:100]})", flush=True)
        core = min(os.sched_getaffinity(0))
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {core})
        try:
            _portability_condition("a: as is", arts, runs)
            busy = mp.get_context("spawn").Process(target=_spin, args=(core,), daemon=True)
            busy.start()
            try:
                time.sleep(1.0)
                _portability_condition("b: sharing its core with a busy process", arts, runs)
            finally:
                busy.terminate()
                busy.join()
        finally:
            os.sched_setaffinity(0, old)


def _spin(core: int) -> None:
    import os

    os.sched_setaffinity(0, {core})
    while True:
        pass


def main() -> int:
    from hybridexport.calibrate.host import HOST_TEST, HOST_TRAIN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--only-host", action="store_true", help="run section 1 only")
    ap.add_argument("--save-host", metavar="FILE", help="section 1: store the measurements (.json.gz)")
    ap.add_argument("--host-from", metavar="FILE",
                    help="section 1: no timing; fit and evaluate on stored measurements (e.g. "
                         "profiles/host.measurements.json.gz from --save-host)")
    ap.add_argument("--timer", choices=("cpu", "runner"), default="cpu",
                    help="host latency: thread CPU time (stable on a shared machine) or the host runner's wall time")
    ap.add_argument("--skip-phones", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--devices", default="iphone13,iphone12,pixel6,pixel7,pixel8,galaxy-s23")
    ap.add_argument("--timing-model", default="iformer-m")
    ap.add_argument("--timing-device", default="iphone13")
    ap.add_argument("--skip-keys", action="store_true")
    ap.add_argument("--only-pairs", action="store_true", help="run section 5 only")
    ap.add_argument("--only-phone-pairs", action="store_true",
                    help="section 5, the published phone pairs only (no measurement, ~1 s)")
    ap.add_argument("--only-portability", action="store_true", help="run section 6 only (~3 s)")
    ap.add_argument("--measure", action="store_true", help="section 6: also predict and measure (a) and (b)")
    ap.add_argument("--portability-models", default=",".join(PORTABILITY_MODELS))
    ap.add_argument("--portability-runs", type=int, default=15)
    ap.add_argument("--pair-models", default=",".join(HOST_PAIR_MODELS))
    ap.add_argument("--pair-runs", type=int, default=40)
    ap.add_argument("--save-pairs", metavar="FILE", help="section 5: store the measured host pairs (.json.gz)")
    ap.add_argument("--pairs-from", metavar="FILE",
                    help="section 5: no timing; predict stored host pairs again (with --host-from: with the model "
                         "fitted on those stored measurements)")
    ap.add_argument("--keys-models", default="iformer-t,mobilevit-xxs,mobileformer-26m,timm:mobilenetv3_small_050")
    args = ap.parse_args()
    if args.only_portability:
        portability_section()
        if args.measure:
            portability_measure(args.portability_models.split(","), args.portability_runs)
        return 0
    if args.only_phone_pairs:
        print("5. pairs: predicted vs published ratios B/A (phones)")
        phone_pairs_section(tuple(args.devices.split(",")))
        return 0
    if args.pairs_from or args.host_from:
        lm = host_section(list(HOST_TRAIN), list(HOST_TEST), args.timer, stored=args.host_from) if args.host_from else None
        if args.pairs_from:
            _stored_pairs_report(args.pairs_from, lm)
        return 0
    if args.only_host:
        host_section(list(HOST_TRAIN), list(HOST_TEST), args.timer, args.save_host)
        return 0
    if args.only_pairs:
        pairs_section(args.pair_models.split(","), list(HOST_PAIR_CHAINS), args.pair_runs, args.save_pairs)
        return 0
    if not args.skip_host:
        host_section(list(HOST_TRAIN), list(HOST_TEST), args.timer, args.save_host)
    if not args.skip_phones:
        phone_section(args.devices.split(","))
    if not args.skip_timing:
        timing_section(args.timing_model, args.timing_device)
    if not args.skip_keys:
        keys_section(args.keys_models.split(","))
    pairs_section(args.pair_models.split(","), list(HOST_PAIR_CHAINS), args.pair_runs, args.save_pairs)
    portability_section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
