"""The MIL reference interpreter against PyTorch fp32 on the zoo and timm models; its speed on iformer-m.

For each model: the Core ML fp16 package ``hybridexport convert --to coreml`` makes (cached under
``~/.cache/hybridexport/bench-mil/``, converted in a child process on first use), interpreted on the
seeded verification inputs and compared with the unrewritten PyTorch model (worst relative L2 over
the inputs, top-1 agreement), plus every MIL op type it does not interpret. Then the distribution
of the errors, and for iformer-m the interpreter's time per input against PyTorch's eager forward,
measured alternately in this run (median of ``--repeats``).

    .venv/bin/python benchmarks/coreml_interpreter.py                      # 16 zoo variants + 62 timm models
    .venv/bin/python benchmarks/coreml_interpreter.py --models iformer-t,timm:resnet18 --inputs 2
    .venv/bin/python benchmarks/coreml_interpreter.py --speed-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIMM_MODELS = (
    # HOST_TEST (hybridexport/calibrate/host.py)
    "timm:mobilenetv2_050", "timm:mobilenetv2_140", "timm:mobilenetv3_small_100", "timm:mobilenetv3_large_075",
    "timm:mobilenetv4_conv_medium", "timm:mobilenetv4_hybrid_medium", "timm:efficientnet_b1", "timm:resnet34",
    "timm:repvit_m0_9", "timm:repvit_m1_5", "timm:mobileone_s0", "timm:mobileone_s2", "timm:fastvit_t12",
    "timm:fastvit_s12", "timm:efficientformerv2_s1", "timm:efficientformer_l1", "timm:mobilevitv2_075",
    "timm:convnext_femto", "timm:ghostnetv2_100", "timm:shvit_s1", "timm:swiftformer_xs", "timm:efficientvit_b1",
    "timm:pit_xs_224", "timm:mnasnet_100", "timm:regnety_004", "timm:lcnet_050",
    # HOST_TRAIN, for op mixes the list above lacks (ceil-mode pooling, ViT attention, group norm, ...)
    "timm:resnet18d", "timm:deit_tiny_patch16_224", "timm:levit_128", "timm:efficientvit_m0",
    "timm:tiny_vit_5m_224", "timm:edgenext_xx_small", "timm:pvt_v2_b0", "timm:efficientnet_b0_g8_gn",
    "timm:inception_next_atto", "timm:starnet_s1",
    # more of HOST_TRAIN and the latency catalog whose op mixes neither the lists above nor the committed
    # feature cache (hybridexport/calibrate/data/features_coreml.json.gz) cover
    "timm:coat_lite_tiny", "timm:convit_tiny", "timm:crossvit_tiny_240", "timm:xcit_nano_12_p16_224",
    "timm:efficientvit_b0", "timm:dla46_c", "timm:hgnetv2_b0", "timm:fasternet_t0", "timm:ghostnet_100",
    "timm:levit_conv_128s", "timm:swiftformer_s", "timm:fastvit_sa12", "timm:vit_tiny_patch16_224",
    "timm:mixnet_s", "timm:rexnet_100", "timm:regnetx_002", "timm:efficientformerv2_s0", "timm:convnext_atto",
    "timm:repghostnet_050", "timm:mobileone_s1", "timm:tinynet_e", "timm:efficientnet_lite0",
    "timm:hardcorenas_a", "timm:mobilenetv1_100h", "timm:starnet_s2", "timm:shvit_s2",
)
SPEED_MODEL = "iformer-m"
SPEED_LIMIT = 3.0  # the interpreter may take at most 3x PyTorch's eager forward on iformer-m


def cache_root() -> Path:
    base = os.environ.get("HYBRIDEXPORT_CACHE") or Path.home() / ".cache" / "hybridexport"
    return Path(base) / "bench-mil"


def zoo_models() -> list[str]:
    from hybridexport.zoo import list_specs

    return [s.name for s in list_specs() if s.family in ("mobileformer", "mobilevit", "iformer")]


def package_for(name: str, root: Path, timeout: float) -> tuple[Path | None, str]:
    """The cached fp16 package of ``name`` (converted in a child process if missing), or None and why."""
    from hybridexport.export.manifest import artifact_path, manifest_path

    path = artifact_path(root, name, "coreml", "fp16").absolute()
    if path.exists() and manifest_path(path).exists():
        return path, "cached"
    failed = path.with_name(path.name + ".failed")
    if failed.exists():
        return None, failed.read_text().strip()
    cmd = [sys.executable, "-m", "hybridexport.cli", "convert", name, "--to", "coreml", "--out", str(root),
           "--verify-inputs", "0", "--json"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        why = f"conversion took more than {timeout:.0f} s"
    if path.exists() and not why:
        return path, "converted"
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_text(why or "conversion wrote no package")
    return None, why


def measure(name: str, path: Path, n_inputs: int) -> dict[str, Any]:
    """Interpreter vs PyTorch fp32 on ``n_inputs`` verification inputs."""
    import numpy as np

    from hybridexport.export.manifest import Manifest, manifest_path
    from hybridexport.export.mil import NotInterpreted
    from hybridexport.export.mil.interpreter import Interpreter
    from hybridexport.export.mil.program import load_package
    from hybridexport.export.mil.run import feeds
    from hybridexport.export.verify import compare, reference_outputs, verification_inputs
    from hybridexport.zoo import build_model

    man = Manifest.load(manifest_path(path))
    pkg = load_package(path)
    row: dict[str, Any] = {"model": name, "ops": sum(man.ops.values())}
    try:
        interp = Interpreter(pkg.program)
    except NotInterpreted as exc:
        row.update(status="not interpreted", missing=exc.op_types)
        return row
    loaded = build_model(name, resolution=man.resolution)
    inputs = [xs[0] for xs in verification_inputs(loaded.input_shapes, n_inputs)]
    reference = reference_outputs(loaded.module, [[x] for x in inputs])
    t0 = time.perf_counter()
    actual = [[interp.run(feeds(pkg, x.numpy())).outputs[o.name].astype("float32") for o in pkg.outputs]
              for x in inputs]
    seconds = (time.perf_counter() - t0) / n_inputs
    parity = compare(reference, actual, man.parity.tolerance or 1e-2)
    finite = all(bool(np.isfinite(a).all()) for out in actual for a in out)
    status = "non-finite" if not finite else "ok" if parity.verified else "mismatch"
    # verify.compare's max() drops NaN (max(0.0, nan) is 0.0): non-finite outputs are an infinite error here
    row.update(status=status, rel_l2=parity.rel_l2_err if finite else float("inf"),
               max_abs=parity.max_abs_err if finite else float("inf"), top1=parity.top1_agreement,
               seconds=round(seconds, 3), tolerance=parity.tolerance)
    return row


def speed(name: str, path: Path, repeats: int) -> dict[str, Any]:
    """Median seconds per input of the interpreter and of PyTorch eager (unrewritten and as converted)."""
    import torch

    from hybridexport.export.manifest import Manifest, manifest_path
    from hybridexport.export.mil.interpreter import Interpreter
    from hybridexport.export.mil.program import load_package
    from hybridexport.export.mil.run import feeds
    from hybridexport.export.verify import verification_inputs
    from hybridexport.rewrite.pipeline import run_pipeline
    from hybridexport.zoo import build_model

    man = Manifest.load(manifest_path(path))
    pkg = load_package(path)
    t0 = time.perf_counter()
    interp = Interpreter(pkg.program)
    build_s = time.perf_counter() - t0
    loaded = build_model(name, resolution=man.resolution)
    rewritten, _ = run_pipeline(loaded.module, loaded.example_input(), passes=man.passes, count=False)
    x = verification_inputs(loaded.input_shapes, 1)[0][0]
    feed = feeds(pkg, x.numpy())
    times: dict[str, list[float]] = {"interpreter": [], "eager": [], "eager_rewritten": []}
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            interp.run(feed)
            loaded.module(x)
            rewritten(x)
        for _ in range(repeats):
            for key, fn in (("interpreter", lambda: interp.run(feed)), ("eager", lambda: loaded.module(x)),
                            ("eager_rewritten", lambda: rewritten(x))):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "threads": torch.get_num_threads(), "repeats": repeats, "compile_s": round(build_s, 3),
            **{f"{k}_s": round(v, 4) for k, v in med.items()},
            "ratio": med["interpreter"] / med["eager"], "ratio_rewritten": med["interpreter"] / med["eager_rewritten"]}


def print_accuracy(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':38s} {'status':15s} {'ops':>5s} {'rel L2':>9s} {'max abs':>9s} {'top-1':>6s} {'s/input':>8s}")
    for r in rows:
        rel = f"{r['rel_l2']:.2e}" if "rel_l2" in r else "-"
        mx = f"{r['max_abs']:.2e}" if "max_abs" in r else "-"
        top = f"{r['top1']:.0%}" if r.get("top1") is not None else "-"
        sec = f"{r['seconds']:.2f}" if "seconds" in r else "-"
        extra = f"  {', '.join(r['missing'])}" if r.get("missing") else (f"  {r['why'][:70]}" if r.get("why") else "")
        print(f"{r['model']:38s} {r['status']:15s} {r.get('ops', 0):5d} {rel:>9s} {mx:>9s} {top:>6s} {sec:>8s}{extra}")
    rel = sorted(r["rel_l2"] for r in rows if "rel_l2" in r)
    if rel:
        p90 = rel[round(0.9 * (len(rel) - 1))]  # nearest rank: defined with infinite errors too
        print("(random-init weights: no checkpoints here; a few timm models overflow or underflow fp16 with them)")
        print(f"\nrelative L2 vs PyTorch fp32 over {len(rel)} interpreted models: min {rel[0]:.2e}, "
              f"median {rel[(len(rel) - 1) // 2]:.2e}, p90 {p90:.2e}, worst {rel[-1]:.2e}")
        tol = rows[0].get("tolerance") or 1e-2
        within = sum(1 for v in rel if v <= tol)
        print(f"within the fp16 tolerance {tol:g}: {within}/{len(rel)}")
        for lo, hi in ((0, 1e-3), (1e-3, 3e-3), (3e-3, 1e-2), (1e-2, 1e-1), (1e-1, float("inf")),
                       (float("inf"), float("nan"))):
            n = sum(1 for v in rel if (v == lo if hi != hi else lo <= v < hi))
            label = "inf/NaN" if hi != hi else f"[{lo:g}, {hi:g})"
            print(f"  {label:>14s}: {n:3d} {'#' * n}")
        top = [r["top1"] for r in rows if r.get("top1") is not None]
        print(f"top-1 agreement: mean {statistics.mean(top):.1%}, models with full agreement "
              f"{sum(1 for t in top if t == 1.0)}/{len(top)}")
    missing = sorted({t for r in rows for t in r.get("missing", [])})
    print(f"op types not interpreted: {', '.join(missing) if missing else 'none'}")
    failed = [r["model"] for r in rows if r["status"] == "convert failed"]
    if failed:
        print(f"not converted to Core ML (not the interpreter's doing): {', '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma list of models (default: zoo variants + timm list)")
    ap.add_argument("--inputs", type=int, default=2, help="seeded verification inputs per model (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs for the speed figure (default 7)")
    ap.add_argument("--speed-only", action="store_true", help="only the iformer-m speed figure")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per conversion (default 1800)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import hybridexport.cli as cli

    cli.quiet_library_warnings()
    root = cache_root()
    models = args.models.split(",") if args.models else [*zoo_models(), *TIMM_MODELS]
    rows: list[dict[str, Any]] = []
    if not args.speed_only:
        for name in models:
            path, why = package_for(name, root, args.timeout)
            if path is None:
                rows.append({"model": name, "status": "convert failed", "why": why})
            else:
                try:
                    rows.append(measure(name, path, args.inputs))
                except Exception as exc:  # a benchmark reports every model, failing ones included
                    rows.append({"model": name, "status": "error", "why": f"{type(exc).__name__}: {exc}"})
            print(f"  {name}: {rows[-1]['status']}", file=sys.stderr, flush=True)
        print_accuracy(rows)
    sp = None
    path, why = package_for(SPEED_MODEL, root, args.timeout)
    if path is not None:
        sp = speed(SPEED_MODEL, path, args.repeats)
        verdict = "within" if sp["ratio"] <= SPEED_LIMIT else "OVER"
        print(f"\n{SPEED_MODEL} speed ({sp['threads']} torch threads, median of {sp['repeats']}): interpreter "
              f"{sp['interpreter_s'] * 1e3:.0f} ms/input, PyTorch eager {sp['eager_s'] * 1e3:.0f} ms "
              f"(rewritten model {sp['eager_rewritten_s'] * 1e3:.0f} ms); ratio {sp['ratio']:.2f}x "
              f"({sp['ratio_rewritten']:.2f}x vs the rewritten model), {verdict} the {SPEED_LIMIT:g}x target; "
              f"building the interpreter {sp['compile_s']:.2f} s")
    else:
        print(f"\n{SPEED_MODEL}: no package ({why})")
    if args.json:
        from hybridexport.atomic import write_json

        write_json(args.json, {"models": rows, "speed": sp})
    return 0


if __name__ == "__main__":
    sys.exit(main())
