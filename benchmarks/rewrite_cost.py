"""What the rewrite stage costs: ``convert`` against the bare converter, per model and format.

For each model (built once) and format:

* **bare**: the format module's ``convert`` on the unrewritten model (``hybridexport.export.formats``),
  wall seconds of that one call;
* **convert**: ``hybridexport.export.convert(loaded, to=fmt, force=True)`` into a temporary directory
  (default rewrite pipeline, judge as default), wall seconds; its manifest gives the rewrite seconds per
  pass (``PassRecord.seconds``);
* **ratio** = convert / bare. Then the median ratio per format.

Each format is converted once on a tiny model first, so that no model pays the imports.

    .venv/bin/python benchmarks/rewrite_cost.py
    .venv/bin/python benchmarks/rewrite_cost.py --models timm:mnasnet_075,iformer-t --formats onnx --json cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("iformer-t", "mobilevit-xxs", "mobileformer-26m", "timm:mnasnet_075", "timm:repvit_m1_1",
          "timm:levit_128s", "timm:mobilevitv2_050", "timm:edgenext_xx_small")

#: short pass labels for the per-pass column
_SHORT = {"reparameterize": "reparam", "fuse-bn": "bn", "group-norm-rank4": "gn", "unfold-as-conv": "unfold",
          "window-partition-rank4": "win", "split-heads": "heads", "attention-graph": "attn",
          "linear-to-conv": "l2c"}


def bare_seconds(loaded: Any, fmt: str, out: Path) -> float:
    """Wall seconds of the format's own ``convert`` on the unrewritten model."""
    return bare_convert(loaded, fmt, out)[0]


def bare_convert(loaded: Any, fmt: str, out: Path) -> tuple[float, Any]:
    """The format's own ``convert`` on the unrewritten model: its wall seconds and what it built
    (``formats.base.Built``: the op table of the bare artifact)."""
    import torch

    from hybridexport.export import formats
    from hybridexport.export.options import ExportOptions, resolve_precision

    f = formats.get(fmt)
    opts = ExportOptions(precision=resolve_precision(fmt, None))
    path = out / f"bare-{loaded.name.replace(':', '_')}{f.suffix}"
    t0 = time.perf_counter()
    with torch.no_grad():
        built = f.convert(loaded.module, loaded.example_inputs(), path, opts)
    return time.perf_counter() - t0, built


def convert_seconds(loaded: Any, fmt: str, out: Path) -> tuple[float, dict[str, float], float]:
    """Wall seconds of ``convert`` (force, default rewrite and judge), rewrite seconds per pass, and in all."""
    seconds, man = convert_timed(loaded, fmt, out)
    report = man.extra.get("rewrite") or {}
    per_pass = {p["name"]: float(p["seconds"]) for p in report.get("passes", [])}
    return seconds, per_pass, float(man.extra.get("rewrite_seconds", 0.0))


def convert_timed(loaded: Any, fmt: str, out: Path) -> tuple[float, Any]:
    """``convert`` (force, default rewrite and judge): its wall seconds and the artifact's manifest."""
    from hybridexport.export import convert

    t0 = time.perf_counter()
    [man] = convert(loaded, to=fmt, out=out, force=True)
    return time.perf_counter() - t0, man


def warm_up(fmts: list[str], out: Path) -> None:
    """Convert a tiny model once per format (converter output silenced), so that the first real model does
    not pay the imports."""
    import torch
    from torch import nn

    from hybridexport.export import convert
    from hybridexport.export.quiet import converter_output

    tiny = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with converter_output(False, "warm-up"):
        for fmt in fmts:
            convert(tiny, to=fmt, out=out, force=True, example_inputs=[torch.randn(1, 3, 32, 32)], name="warmup")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model refs")
    ap.add_argument("--formats", default="onnx,tflite", help="comma-separated formats")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    from hybridexport.export.quiet import converter_output
    from hybridexport.zoo.refs import load_model

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    fmts = [f.strip() for f in args.formats.split(",") if f.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hx-rwcost-") as tmp:
        out = Path(tmp)
        warm_up(fmts, out)
        for ref in models:
            loaded = load_model(ref)
            for fmt in fmts:
                row: dict[str, Any] = {"model": ref, "format": fmt}
                try:
                    with converter_output(False, f"{ref} → {fmt}"):
                        row["bare"] = bare_seconds(loaded, fmt, out)
                        row["convert"], row["passes"], row["rewrite"] = convert_seconds(loaded, fmt, out)
                    row["ratio"] = row["convert"] / row["bare"]
                except Exception as exc:  # one failing model or format must not hide the others
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                rows.append(row)
                print(_line(row), flush=True)
    print()
    for fmt in fmts:
        ratios = [r["ratio"] for r in rows if r["format"] == fmt and "ratio" in r]
        if ratios:
            print(f"{fmt}: median convert/bare {statistics.median(ratios):.2f}× over {len(ratios)} models "
                  f"(min {min(ratios):.2f}×, max {max(ratios):.2f}×)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _line(row: dict[str, Any]) -> str:
    head = f"{row['model']:<24} {row['format']:<7}"
    if "error" in row:
        return f"{head} error: {row['error']}"
    passes = " ".join(f"{_SHORT.get(n, n)} {s:.2f}" for n, s in row["passes"].items())
    return (f"{head} bare {row['bare']:6.2f}s  convert {row['convert']:6.2f}s  ratio {row['ratio']:5.2f}×  "
            f"rewrite {row['rewrite']:5.2f}s [{passes}]")


if __name__ == "__main__":
    raise SystemExit(main())
