"""What do the rewrites change in the exported graphs, and what do they cost or save on the host?

For each model (default: the smallest variant of each reference family; ``--all``: every variant):

1. exported-graph counts of reshape, transpose and rank-≥5 tensors before/after the default rewrite
   pipeline, in ONNX (dynamo exporter), TFLite (litert-torch) and the Core ML MIL program
   (TorchScript → ML Program, FP16, iOS15; plus the ``coreml-ane`` pipeline with linear-to-conv);
   "head permutes" = transposes inside attention modules that move an axis of size ``num_heads``;
2. host latency before/after on onnxruntime CPU and LiteRT CPU (XNNPACK): interleaved runs, medians,
   ratio after/before with a bootstrap 95 % interval (a ratio is "slower" only if the whole interval
   is above 1);
3. the static Neural Engine report (hybridexport.analyze.ane_rules) before/after.

    .venv/bin/python benchmarks/rewrite_effect.py                         # iformer-t, mobilevit-xxs, mobileformer-26m
    .venv/bin/python benchmarks/rewrite_effect.py --all --out benchmarks/baselines/rewrite_effect.json
    .venv/bin/python benchmarks/rewrite_effect.py --models mobilevit-xxs --formats onnx --rounds 200

Goals: zero rank-5 tensors and no head permutes in the rewritten Core ML programs of all three
families; the rewritten model never slower than the reference on the host beyond noise.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SMALLEST = ("iformer-t", "mobilevit-xxs", "mobileformer-26m")
FORMATS = ("onnx", "tflite", "coreml")
COUNT_KEYS = {"onnx": ("Reshape", "Transpose"), "tflite": ("RESHAPE", "TRANSPOSE"), "coreml": ("reshape", "transpose")}


# ------------------------------------------------------------------ weights
def realistic_batchnorm(model, seed: int = 0):
    """Give every BatchNorm trained-like statistics and affine parameters (seeded).

    No pretrained weights are reachable here, and a fresh timm model zero-initialises the last BN
    gamma of residual branches: those branches are then exactly zero and converters delete them
    (TFLite dropped 9 of 35 convs of mobilevit-xxs), which would make "before" look faster than any
    rewrite that keeps the branch. Random non-zero statistics keep every branch alive.
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


# ------------------------------------------------------------------ export + counts
def _export(fmt: str, module, example, path: Path, precision: str = "fp32"):
    from hybridexport.export import formats
    from hybridexport.export.options import ExportOptions

    return formats.get(fmt).convert(module, (example,), path, ExportOptions(precision=precision))


def export_onnx(module, example, path: Path) -> dict[str, Any]:
    built = _export("onnx", module, example, path)
    return {"ops": built.table.histogram(), "rank5": built.table.rank5_tensors(),
            "seconds": round(built.converter_seconds, 1)}


def export_tflite(module, example, path: Path) -> dict[str, Any]:
    built = _export("tflite", module, example, path)
    return {"ops": built.table.histogram(), "rank5": built.table.rank5_tensors(),
            "seconds": round(built.converter_seconds, 1)}


def coreml_program(module, example) -> tuple[Any, dict[str, Any]]:
    """The saved ML Program (FP16, the Core ML format's defaults), its op table's module map, and op counts."""
    from hybridexport.export.formats.coreml import load_program

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hx-effect-") as tmp:
        path = Path(tmp) / "m.mlpackage"
        built = _export("coreml", module, example, path, precision="fp16")
        program = load_program(path)
    ops = {k: v for k, v in built.table.histogram().items() if k != "const"}
    return (program, built.table), {"ops": ops, "rank5": built.table.rank5_tensors(),
                                    "seconds": round(time.perf_counter() - t0, 1)}


def attention_heads(module) -> tuple[set[str], set[int]]:
    """Paths of modules with a ``num_heads`` attribute (attention modules) and their head counts."""
    paths, heads = set(), set()
    for path, m in module.named_modules():
        n = getattr(m, "num_heads", None)
        if isinstance(n, int) and n > 1:
            paths.add(path)
            heads.add(n)
    return paths, heads


def head_permutes(ml, attn_paths: set[str], heads: set[int]) -> int:
    """Transposes inside attention modules that move an axis whose size is a head count (rank ≥ 4)."""
    from hybridexport.analyze.ane_rules import iter_ops

    program, table = ml
    count = 0
    for op in iter_ops(program):
        if op.op_type != "transpose":
            continue
        mod = table.module_of(op.outputs[0].name)
        if not any(mod == p or mod.startswith(p + ".") for p in attn_paths):
            continue
        shape = tuple(op.x.shape)
        perm = [int(p) for p in op.perm.val]
        if len(shape) >= 4 and any(shape[axis] in heads and perm[axis] != axis for axis in range(len(shape))):
            count += 1
    return count


# ------------------------------------------------------------------ latency
def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> None:
        sess.run(None, {name: x})

    return run


def litert_runner(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    idx = it.get_input_details()[0]["index"]

    def run(x: np.ndarray) -> None:
        it.set_tensor(idx, x)
        it.invoke()

    return run


def interleaved(runs: dict[str, Any], x: np.ndarray, rounds: int, warmup: int = 5) -> dict[str, list[float]]:
    """Per-round wall times (ms) of each runner, alternating the order every round."""
    for run in runs.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for r in range(rounds):
        for k in keys if r % 2 == 0 else keys[::-1]:
            t0 = time.perf_counter()
            runs[k](x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def ratio_ci(after: list[float], before: list[float], n_boot: int = 400, seed: int = 0) -> tuple[float, float, float]:
    """Median(after)/median(before) and a bootstrap 95 % interval (rounds resampled in pairs)."""
    rng = random.Random(seed)
    point = statistics.median(after) / statistics.median(before)
    idx = list(range(len(after)))
    boots = []
    for _ in range(n_boot):
        s = [rng.choice(idx) for _ in idx]
        boots.append(statistics.median(after[i] for i in s) / statistics.median(before[i] for i in s))
    boots.sort()
    return point, boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]


# ------------------------------------------------------------------ one model
def measure(name: str, formats: tuple[str, ...], rounds: int, threads: int, workdir: Path, log) -> dict[str, Any]:
    from hybridexport.analyze.ane_rules import ane_report, summarize
    from hybridexport.rewrite.pipeline import run_pipeline
    from hybridexport.zoo import build_model

    loaded = build_model(name)
    realistic_batchnorm(loaded.module)
    x = loaded.example_input()
    rewritten, report = run_pipeline(loaded.module, x, count=False)
    result: dict[str, Any] = {
        "model": name, "resolution": loaded.resolution, "passes": report.applied(),
        "pipeline_max_abs_err": report.final_max_abs_err, "output_scale": report.output_scale,
        "formats": {}, "latency": {}, "ane": {},
    }
    log(f"{name}: passes {', '.join(report.applied()) or 'none'}")
    variants = {"before": loaded.module, "after": rewritten}
    xin = x.numpy()
    for fmt in formats:
        counts: dict[str, Any] = {}
        paths: dict[str, Path] = {}
        for tag, mod in variants.items():
            try:
                if fmt == "coreml":
                    ml, info = coreml_program(mod, x)
                    attn, heads = attention_heads(loaded.module)
                    info["head_permutes"] = head_permutes(ml, attention_heads(mod)[0] | attn, heads)
                    info["ane"] = summarize(ane_report(ml[0], ml[1].module_of))
                else:
                    path = workdir / f"{name.replace(':', '_')}.{tag}.{fmt}"
                    info = (export_onnx if fmt == "onnx" else export_tflite)(mod, x, path)
                    paths[tag] = path
            except Exception as exc:  # noqa: BLE001 - one failing converter must not end the run
                info = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
            counts[tag] = info
            log(f"  {fmt:6s} {tag:6s} {_count_line(fmt, info)}")
        if fmt == "coreml":
            try:
                ane_mod, ane_rep = run_pipeline(loaded.module, x, target="coreml-ane", count=False)
                ml, info = coreml_program(ane_mod, x)
                attn, heads = attention_heads(loaded.module)
                info["head_permutes"] = head_permutes(ml, attention_heads(ane_mod)[0] | attn, heads)
                info["ane"] = summarize(ane_report(ml[0], ml[1].module_of))
                info["passes"] = ane_rep.applied()
            except Exception as exc:  # noqa: BLE001
                info = {"error": f"{type(exc).__name__}: {exc}"}
            counts["after-ane"] = info
            log(f"  {fmt:6s} ane    {_count_line(fmt, info)}")
        result["formats"][fmt] = counts
        if fmt in ("onnx", "tflite") and len(paths) == 2 and rounds > 0:
            make = ort_runner if fmt == "onnx" else litert_runner
            runs = {tag: make(p, threads) for tag, p in paths.items()}
            times = interleaved(runs, xin, rounds)
            point, lo, hi = ratio_ci(times["after"], times["before"])
            result["latency"][fmt] = {
                "before_ms": round(statistics.median(times["before"]), 3),
                "after_ms": round(statistics.median(times["after"]), 3),
                "ratio": round(point, 3), "ci95": [round(lo, 3), round(hi, 3)],
                "verdict": "slower" if lo > 1.0 else ("faster" if hi < 1.0 else "same within noise"),
                "rounds": rounds, "threads": threads,
            }
            lat = result["latency"][fmt]
            log(f"  {fmt:6s} latency {lat['before_ms']:.2f} → {lat['after_ms']:.2f} ms  ratio {lat['ratio']:.3f} "
                f"[{lo:.3f}, {hi:.3f}] {lat['verdict']}")
    return result


def _count_line(fmt: str, info: dict[str, Any]) -> str:
    if "error" in info:
        return f"error: {info['error']}"
    r, t = COUNT_KEYS[fmt]
    ops = info["ops"]
    extra = ""
    if "ane" in info:
        extra = (f"  head-permutes {info['head_permutes']}  ANE off-ane {info['ane'].get('off-ane', 0)} "
                 f"memcopy {info['ane'].get('memcopy', 0)}")
    return f"reshape {ops.get(r, 0):4d}  transpose {ops.get(t, 0):4d}  rank5 {info['rank5']:4d}  ops {sum(ops.values()):5d}{extra}"


# ------------------------------------------------------------------ report
def _seq(cells: dict[str, Any], tags: list[str], fn) -> str:
    return " → ".join(str(fn(cells[tag])) for tag in tags)


def print_tables(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    counts = Table(title="exported graphs: reshape / transpose / rank-5 tensors (before → after)", title_justify="left")
    for col in ("model", "format", "reshape", "transpose", "rank-5", "head permutes", "ANE off-ane", "ANE memcopy"):
        counts.add_column(col, justify="right" if col not in ("model", "format") else "left")
    for res in results:
        for fmt, c in res["formats"].items():
            tags = ["before", "after"] + (["after-ane"] if "after-ane" in c else [])
            if any("error" in c[t] for t in tags):
                counts.add_row(res["model"], fmt, *["error"] * 6)
                continue
            r, t = COUNT_KEYS[fmt]
            counts.add_row(
                res["model"], fmt + (" (→ane)" if len(tags) == 3 else ""),
                _seq(c, tags, lambda i, r=r: i["ops"].get(r, 0)), _seq(c, tags, lambda i, t=t: i["ops"].get(t, 0)),
                _seq(c, tags, lambda i: i["rank5"]), _seq(c, tags, lambda i: i.get("head_permutes", "–")),
                _seq(c, tags, lambda i: i.get("ane", {}).get("off-ane", "–")),
                _seq(c, tags, lambda i: i.get("ane", {}).get("memcopy", "–")),
            )
    console.print(counts)
    lat = Table(title="host latency, median ms (1 thread, interleaved)", title_justify="left")
    for col in ("model", "runtime", "before", "after", "after/before", "95% CI", "verdict"):
        lat.add_column(col)
    for res in results:
        for fmt, v in res["latency"].items():
            runtime = "onnxruntime CPU" if fmt == "onnx" else "LiteRT CPU (XNNPACK)"
            lat.add_row(res["model"], runtime, f"{v['before_ms']:.2f}", f"{v['after_ms']:.2f}", f"{v['ratio']:.3f}",
                        f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]", v["verdict"])
    console.print(lat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SMALLEST), help="comma-separated model names")
    parser.add_argument("--all", action="store_true", help="every variant of iformer, mobilevit and mobileformer")
    parser.add_argument("--formats", default=",".join(FORMATS), help="subset of onnx,tflite,coreml")
    parser.add_argument("--rounds", type=int, default=100, help="interleaved latency rounds per runtime (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import hybridexport._tvshim  # noqa: F401

    from hybridexport.zoo import list_specs

    names = ([s.name for s in list_specs() if s.family in ("iformer", "mobilevit", "mobileformer")]
             if args.all else [m.strip() for m in args.models.split(",") if m.strip()])
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    results = []
    with tempfile.TemporaryDirectory(prefix="rewrite_effect_") as tmp:
        for name in names:
            t0 = time.time()
            results.append(measure(name, formats, args.rounds, args.threads, Path(tmp), log=lambda m: print(m, flush=True)))
            print(f"  ({time.time() - t0:.0f} s)", flush=True)
            if args.out:
                from hybridexport.atomic import write_json

                write_json(args.out, {"results": results, "rounds": args.rounds, "threads": args.threads})
    print_tables(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
