"""Convert every variant of the three reference families to every format; print a model × format table.

Also measures the overhead of ``convert`` (rewrite excluded: verification, hashing, inspection, manifest)
against the bare converter call, for the smallest model of each family.

    .venv/bin/python benchmarks/convert_all.py --smallest            # the three smallest variants
    nice .venv/bin/python benchmarks/convert_all.py --json out.json  # every variant (slow: hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("mobileformer", "mobilevit", "iformer")


def variants(smallest: bool) -> list[str]:
    from hybridexport.zoo import list_specs

    specs = [s for s in list_specs() if s.family in FAMILIES]
    if not smallest:
        return [s.name for s in specs]
    best: dict[str, Any] = {}
    for s in specs:
        size = float(s.card.get("params_m", 1e9))
        if s.family not in best or size < best[s.family][0]:
            best[s.family] = (size, s.name)
    return [best[f][1] for f in FAMILIES if f in best]


def bare_call(fmt: str, module: Any, x: Any, path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for the converter call alone (plus writing its output), as a user would call it."""
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    if fmt == "onnx":
        torch.onnx.export(module, (x,), dynamo=True, verbose=False).save(str(path))
    elif fmt == "tflite":
        import litert_torch

        litert_torch.convert(module, (x,)).export(str(path))
    elif fmt == "coreml":
        import coremltools as ct

        ct.convert(
            torch.jit.trace(module, x), inputs=[ct.TensorType(shape=tuple(x.shape))], convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16, compute_units=ct.ComputeUnit.ALL,
            minimum_deployment_target=ct.target.iOS15,
        ).save(str(path))
    elif fmt == "executorch":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        ep = torch.export.export(module, (x,))
        path.write_bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return time.perf_counter() - t0, time.process_time() - c0


def warm_imports() -> None:
    """Import every converter up front so no timing includes a first import."""
    import coremltools  # noqa: F401
    import litert_torch  # noqa: F401
    import onnxruntime  # noqa: F401
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    from executorch.exir import to_edge_transform_and_lower  # noqa: F401
    from executorch.runtime import Runtime  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smallest", action="store_true", help="only the smallest variant of each family")
    ap.add_argument("--models", default=None, help="comma list of model names (overrides --smallest)")
    ap.add_argument("--formats", default="all", help="comma list of formats (default: all)")
    ap.add_argument("--out", default=None, help="artifact folder (default: a temporary folder)")
    ap.add_argument("--no-rewrite", action="store_true", help="export the reference models unchanged")
    ap.add_argument("--no-overhead", action="store_true", help="skip the convert vs bare-converter comparison")
    ap.add_argument("--overhead-only", action="store_true", help="only the convert vs bare-converter comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    import torch
    from rich.table import Table

    from hybridexport.console import console
    from hybridexport.export import convert
    from hybridexport.export.formats import parse as parse_formats
    from hybridexport.export.formats import title
    from hybridexport.export.quiet import converter_output
    from hybridexport.export.summary import human_size
    from hybridexport.zoo import build_model

    torch.set_num_threads(args.threads)
    models = args.models.split(",") if args.models else variants(args.smallest)
    formats = parse_formats(args.formats)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="convert-all-"))
    with converter_output(False, "importing converters"):
        warm_imports()

    rows: list[dict[str, Any]] = []
    for model in [] if args.overhead_only else models:
        errors: dict[str, str] = {}
        t0 = time.perf_counter()
        manifests = convert(
            model, to=formats, out=out, force=True, rewrite=not args.no_rewrite, keep_going=True,
            on_error=lambda f, e, errors=errors: errors.update({f: str(e)}),
        )
        wall = time.perf_counter() - t0
        by_fmt = {m.format: m for m in manifests}
        for fmt in formats:
            m = by_fmt.get(fmt)
            if m is None:
                rows.append({"model": model, "format": fmt, "ok": False, "error": errors.get(fmt, "?")})
                continue
            rows.append({
                "model": model, "format": fmt, "ok": True, "precision": m.precision, "seconds": m.seconds,
                "converter_seconds": m.extra.get("converter_seconds"), "rewrite_seconds": m.extra.get("rewrite_seconds"),
                "size_bytes": m.size_bytes, "verified": m.parity.verified, "rel_l2_err": m.parity.rel_l2_err,
                "top1_agreement": m.parity.top1_agreement, "parity_reason": m.parity.reason,
                "passes": m.passes, "workarounds": [w["name"] for w in m.extra.get("workarounds", [])],
                "rank5_tensors": m.rank5_tensors, "ops": sum(m.ops.values()),
            })
        console.print(f"[dim]{model}: {len(manifests)}/{len(formats)} formats in {wall:.0f} s[/]")
        if args.json:  # keep partial results of long runs
            Path(args.json).write_text(json.dumps({"rows": rows, "overhead": []}, indent=2, default=str))

    table = Table(title=f"convert: {len(models)} models × {len(formats)} formats", title_justify="left")
    for col in ("model", "format", "prec", "status", "time", "size", "parity", "rank-5", "notes"):
        table.add_column(col, justify="right" if col in ("time", "size", "rank-5") else "left")
    for r in rows:
        if not r["ok"]:
            table.add_row(r["model"], title(r["format"]), "", "[red]fail[/]", "", "", "", "", r["error"][:70])
            continue
        if r["rel_l2_err"] is not None:
            parity = f"{'✓' if r['verified'] else '✗'} {r['rel_l2_err']:.1e} top1 {r['top1_agreement']:.0%}"
        else:
            parity = "structural (no macOS)"
        notes = ", ".join(r["workarounds"]) or ("passes: " + ",".join(r["passes"]) if r["passes"] else "")
        table.add_row(r["model"], title(r["format"]), r["precision"], "[green]ok[/]", f"{r['seconds']:.1f} s",
                      human_size(r["size_bytes"]), parity, str(r["rank5_tensors"]), notes)
    if rows:
        console.print(table)

    overhead: list[dict[str, Any]] = []
    if not args.no_overhead:
        smallest = variants(True) if not args.models else models[:1]
        for model in smallest:
            loaded = build_model(model)
            x = loaded.example_input()
            for fmt in formats:
                with tempfile.TemporaryDirectory() as tmp:
                    t0, c0 = time.perf_counter(), time.process_time()
                    try:
                        convert(loaded, to=fmt, out=tmp, force=True, rewrite=False)
                    except Exception as exc:  # reported, not fatal
                        overhead.append({"model": model, "format": fmt, "error": str(exc)})
                        continue
                    full, full_cpu = time.perf_counter() - t0, time.process_time() - c0
                    with converter_output(False):
                        bare, bare_cpu = bare_call(fmt, loaded.module, x, Path(tmp) / ("bare" + _ext(fmt)))
                overhead.append({"model": model, "format": fmt, "convert_s": full, "bare_s": bare,
                                 "convert_cpu_s": full_cpu, "bare_cpu_s": bare_cpu, "cpu_ratio": full_cpu / bare_cpu})
        t2 = Table(title="convert (no rewrite) vs the bare converter call (CPU seconds; wall in brackets)",
                   title_justify="left")
        for col in ("model", "format", "convert", "bare call", "ratio"):
            t2.add_column(col, justify="left" if col in ("model", "format") else "right")
        for o in overhead:
            if "error" in o:
                t2.add_row(o["model"], title(o["format"]), "[red]fail[/]", "", o["error"][:50])
            else:
                t2.add_row(o["model"], title(o["format"]), f"{o['convert_cpu_s']:.1f} s ({o['convert_s']:.0f})",
                           f"{o['bare_cpu_s']:.1f} s ({o['bare_s']:.0f})", f"{o['cpu_ratio']:.2f}×")
        console.print(t2)

    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "overhead": overhead}, indent=2, default=str))
    return 0 if all(r["ok"] for r in rows) else 1


def _ext(fmt: str) -> str:
    return {"coreml": ".mlpackage", "tflite": ".tflite", "onnx": ".onnx", "executorch": ".pte"}[fmt]


if __name__ == "__main__":
    sys.exit(main())
