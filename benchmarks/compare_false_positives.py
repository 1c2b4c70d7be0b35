"""How often does ``hybridexport compare`` cry wolf, and how small a slowdown does it catch?

A/A: one model exported to ONNX is benchmarked ``--repeats`` times on this machine (each a fresh
onnxruntime session, like separate CI runs); every pair of runs is compared; any non-``unchanged``
verdict is a false positive. A/B: the same model with a known slowdown injected (an extra
Conv→ReLU→Conv block of growing width in front of the network, spliced into the ONNX graph) is
benchmarked in the same rounds; every (A, B) pair is compared and the detection rate per slowdown
level is printed, with the true slowdown measured from all runs pooled.

    .venv/bin/python benchmarks/compare_false_positives.py                 # iformer-t, 12 repeats
    .venv/bin/python benchmarks/compare_false_positives.py --model mobilevit-xxs --repeats 20 --runs 60

Timing uses the bench stage's host onnxruntime runner when it is installed, else a minimal
onnxruntime loop here (``--timer own`` forces it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hybridexport.bench.profile import Profile, Stats  # noqa: E402
from hybridexport.console import console  # noqa: E402
from hybridexport.report.command import parse_threshold  # noqa: E402
from hybridexport.report.compare import compare_profiles  # noqa: E402


def export_onnx(model: str, path: Path) -> Path:
    """Export ``model`` to ONNX: with the export stage when available, else torch.onnx (dynamo)."""
    try:
        from hybridexport.export import convert

        manifests = convert(model, to="onnx", out=path.parent / "out")
        return Path(manifests[0].path)
    except (ImportError, AttributeError):
        pass
    import torch

    from hybridexport.zoo import build_model

    torch.set_num_threads(1)
    lm = build_model(model)
    torch.onnx.export(lm.module, (lm.example_input(),), str(path), dynamo=True, external_data=False)
    return path


def inject_slowdown(src: Path, dst: Path, width: int, seed: int = 0) -> Path:
    """Prepend Conv(3→width, 3×3) → ReLU → Conv(width→3, 1×1) to the graph input: a known extra cost."""
    m = onnx.load(str(src))
    g = m.graph
    inp = g.input[0].name
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((width, 3, 3, 3)) * 0.05).astype(np.float32), "slow_w1")
    w2 = numpy_helper.from_array((rng.standard_normal((3, width, 1, 1)) * 0.05).astype(np.float32), "slow_w2")
    new_in = "slow_input"
    nodes = [
        helper.make_node("Conv", [new_in, "slow_w1"], ["slow_c1"], name="slow/conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["slow_c1"], ["slow_r1"], name="slow/relu"),
        helper.make_node("Conv", ["slow_r1", "slow_w2"], ["slow_c2"], name="slow/conv2"),
        helper.make_node("Add", [new_in, "slow_c2"], [inp], name="slow/add"),
    ]
    shape = [d.dim_value or d.dim_param for d in g.input[0].type.tensor_type.shape.dim]
    g.input[0].name = new_in
    g.input[0].CopyFrom(helper.make_tensor_value_info(new_in, TensorProto.FLOAT, shape))
    g.initializer.extend([w1, w2])
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return dst


def reference_model(path: Path, channels: int = 48, size: int = 56, layers: int = 6) -> Path:
    """A fixed conv stack (ONNX) timed between the model's runs: it feels the machine's load, not the model."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "ref_x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32),
                                             f"ref_w{i}"))
        nodes += [helper.make_node("Conv", [x, f"ref_w{i}"], [f"ref_c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"ref_c{i}"], [f"ref_r{i}"])]
        x = f"ref_r{i}"
    shape = [1, channels, size, size]
    g = helper.make_graph(nodes, "reference", [helper.make_tensor_value_info("ref_x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    return lambda: sess.run(None, {i.name: x})


def time_own(path: Path, runs: int, warmup: int, model: str, reference: Path | None = None) -> Profile:
    """A minimal onnxruntime timing loop (one thread, fixed input, wall time per run); with ``reference``,
    each model run is followed by a run of the reference model, kept in ``extra["reference_ms"]``."""
    import os

    env = {"cpu_cores": os.cpu_count(), "load_average": list(os.getloadavg())}
    run = _session(path)
    ref = _session(reference) if reference else None
    for _ in range(warmup):
        run()
        if ref:
            ref()
    samples, ref_samples = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1000.0)
        if ref:
            ref()
            ref_samples.append((time.perf_counter() - t1) * 1000.0)
    return Profile(model=model, format="onnx", device="host", runner="benchmark-own-ort", obtained="measured",
                   total_ms=Stats.from_samples(samples), extra={"reference_ms": ref_samples} if ref else {},
                   environment=env)


def normalized(p: Profile) -> Profile:
    """Per run: model time / reference time (× the reference's median, to stay in ms)."""
    ref = p.extra.get("reference_ms") or []
    if len(ref) != len(p.total_ms.samples):
        raise ValueError("profile has no paired reference timings (measure with --timer own)")
    scale = float(np.median(ref))
    xs = [m / r * scale for m, r in zip(p.total_ms.samples, ref)]
    return Profile(model=p.model, format=p.format, device=p.device, runner=p.runner, obtained=p.obtained,
                   total_ms=Stats.from_samples(xs), environment=p.environment)


def time_runner(path: Path, runs: int, warmup: int, model: str) -> Profile:
    """Time with the bench stage's host onnxruntime runner (per-layer profiling as it does it)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners import BenchRequest, get_runner
    from hybridexport.export.manifest import Manifest, Parity

    runner = get_runner("host-onnxruntime")
    manifest = Manifest(model=model, resolution=0, format="onnx", precision="fp32", path=str(path),
                        size_bytes=path.stat().st_size, sha256="", versions={}, passes=[],
                        parity=Parity(verified=False, reason="benchmark variant"), ops={}, rank5_tensors=0, seconds=0.0)
    return runner.run(BenchRequest(device=load_device("host"), manifest=manifest, runs=runs, warmup=warmup, threads=1))


def pick_timer(name: str):
    if name == "own":
        return time_own
    try:
        from hybridexport.bench.runners import get_runner

        get_runner("host-onnxruntime")
        from hybridexport.bench.devices import load_device  # noqa: F401

        return time_runner
    except Exception as exc:  # noqa: BLE001 - fall back to the minimal timer, and say why
        if name == "runner":
            raise
        console.print(f"[yellow]host-onnxruntime runner unavailable ({exc}); timing with a minimal ORT loop[/]")
        return time_own


def slim(p: Profile) -> Profile:
    """The profile without its per-layer rows (only end-to-end samples matter here)."""
    return Profile(model=p.model, format=p.format, device=p.device, runner=p.runner, obtained=p.obtained,
                   total_ms=p.total_ms, environment=p.environment, extra=p.extra)


def measure(args: argparse.Namespace, widths: list[int]) -> tuple[dict[str, list[Profile]], float]:
    """Export, inject the slowdowns, and benchmark every variant ``args.repeats`` times in rounds."""
    timer = pick_timer(args.timer)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        t0 = time.perf_counter()
        base = export_onnx(args.model, tmpd / f"{args.model}.onnx")
        variants = {"A": base} | {f"B{w}": inject_slowdown(base, tmpd / f"slow{w}.onnx", w) for w in widths}
        console.print(f"exported {args.model} and {len(widths)} slowed variants in {time.perf_counter() - t0:.0f} s; "
                      f"timing {args.repeats} × {len(variants)} benchmarks of {args.runs} runs with {timer.__name__}",
                      soft_wrap=True)
        runs: dict[str, list[Profile]] = {k: [] for k in variants}
        ref = reference_model(tmpd / "reference.onnx") if timer is time_own else None
        t0 = time.perf_counter()
        for r in range(args.repeats):  # rounds: drift over time hits every variant alike
            for k, path in variants.items():
                p = timer(path, args.runs, args.warmup, args.model, ref) if ref else timer(path, args.runs, args.warmup,
                                                                                        args.model)
                runs[k].append(slim(p))
            console.print(f"  round {r + 1}/{args.repeats}: A {runs['A'][-1].total_ms.median:.2f} ms", highlight=False)
        return runs, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="iformer-t")
    ap.add_argument("--repeats", type=int, default=12, help="benchmarks per variant (A/A pairs = n(n-1)/2)")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--thresholds", default="5%,10%,25%", help="thresholds to report (the default is 5%%)")
    ap.add_argument("--confidence", type=float, default=0.99)
    ap.add_argument("--statistics", default="p20+median,p20,median,ref-p20+median",
                    help="statistics to report (compare's default is p20+median; ref-X: X of model/reference per "
                         "run, needs --timer own)")
    ap.add_argument("--widths", default="4,8,16,32,64", help="extra-block widths for the A/B slowdowns")
    ap.add_argument("--timer", choices=("auto", "own", "runner"), default="auto")
    ap.add_argument("--save", metavar="JSON", help="keep the timings here (re-analyse with --load)")
    ap.add_argument("--load", metavar="JSON", help="analyse timings saved by --save instead of measuring")
    args = ap.parse_args(argv)
    thresholds = [parse_threshold(t) for t in args.thresholds.split(",") if t]
    widths = [int(w) for w in args.widths.split(",") if w]

    if args.load:
        data = json.loads(Path(args.load).read_text(encoding="utf-8"))
        runs = {k: [Profile.from_dict(p) for p in v] for k, v in data["runs"].items()}
        widths, timing_s = data["widths"], data["timing_s"]
        args.model, args.repeats, args.runs = data["model"], data["repeats"], data["runs_per_benchmark"]
        console.print(f"loaded {args.load}", highlight=False)
    else:
        runs, timing_s = measure(args, widths)
        if args.save:
            from hybridexport.atomic import write_json

            write_json(args.save, {"model": args.model, "repeats": args.repeats, "runs_per_benchmark": args.runs,
                                   "widths": widths, "timing_s": timing_s,
                                   "runs": {k: [slim(p).to_dict() for p in v] for k, v in runs.items()}})

    def entries(xs: list[Profile], ys: list[Profile], pairs, thr: float, stat: str) -> list:
        if stat.startswith("ref-"):  # normalised by the interleaved reference model
            stat = stat[4:]
            xs, ys = [normalized(p) for p in xs], [normalized(p) for p in ys]
        return [compare_profiles(xs[i], ys[j], threshold=thr, confidence=args.confidence, statistic=stat,
                                 layers=False) for i, j in pairs]

    say = console.print
    aa_pairs = list(itertools.combinations(range(args.repeats), 2))
    ab_pairs = list(itertools.product(range(args.repeats), range(args.repeats)))
    def pooled_p20(ps: list[Profile]) -> float:
        return float(np.percentile([x for p in ps for x in p.total_ms.samples], 20))

    def spread(values: list[float]) -> str:
        return f"{min(values):.2f}–{max(values):.2f} ms (spread {100 * (max(values) / min(values) - 1):.0f}%)"

    a_med = [p.total_ms.median for p in runs["A"]]
    a_p20 = [float(np.percentile(p.total_ms.samples, 20)) for p in runs["A"]]
    pooled_a = pooled_p20(runs["A"])
    say(f"\n[bold]{args.model}[/], {args.repeats} benchmarks × {args.runs} runs per variant, "
        f"{100 * args.confidence:.0f}% bootstrap interval; A per benchmark: median {spread(a_med)}, p20 {spread(a_p20)}"
        + (f", p20 of model/reference {spread([float(np.percentile(normalized(p).total_ms.samples, 20)) for p in runs['A']])}"
           if runs["A"][0].extra.get("reference_ms") else ""),
        highlight=False, soft_wrap=True)
    true = {w: 100 * (pooled_p20(runs[f"B{w}"]) / pooled_a - 1) for w in widths}  # pooled p20 of every run
    busy = sum(1 for p in runs["A"] if "load_average" in p.environment
               and p.environment["load_average"][0] >= (p.environment.get("cpu_cores") or 1) + 1)
    say(f"{busy}/{len(runs['A'])} A benchmarks started on a busy machine (load ≥ cores + 1): their "
        "comparisons are informational (never gating)", highlight=False, soft_wrap=True)
    header = "     statistic threshold  A/A false positives (gating)   " + "  ".join(f"B{w} {true[w]:+.1f}%" for w in widths)
    say(header + "   smallest detected ≥95%", highlight=False, soft_wrap=True)
    stats_to_show = [s for s in args.statistics.split(",")
                     if not s.startswith("ref-") or runs["A"][0].extra.get("reference_ms")]
    for stat, thr in itertools.product(stats_to_show, thresholds):
        aa = entries(runs["A"], runs["A"], aa_pairs, thr, stat)
        fp = sum(e.verdict != "unchanged" for e in aa)
        gating_fp = sum(e.verdict != "unchanged" and not e.informational for e in aa)
        cells, smallest = [], None
        for w in widths:
            vs = entries(runs["A"], runs[f"B{w}"], ab_pairs, thr, stat)
            rate = sum(e.verdict == "regression" for e in vs) / len(vs)
            cells.append(f"{100 * rate:5.1f}%".rjust(len(f"B{w} {true[w]:+.1f}%")))
            if rate >= 0.95 and smallest is None:
                smallest = true[w]
        small = "none tried" if smallest is None else f"{smallest:+.1f}%"
        say(f"{stat:>14} {100 * thr:>8.0f}%  {fp:>4}/{len(aa):<4} = {100 * fp / max(len(aa), 1):5.2f}% ({gating_fp:>3})   "
            + "  ".join(cells)
            + f"   {small}", highlight=False, soft_wrap=True)
    say(f"(A/B cells: share of {len(ab_pairs)} A×B pairs called a regression; timing took {timing_s:.0f} s)",
        highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
