"""How much of the rank ≥ 5 problem do the default rewrites remove on timm hybrids the project does not know?

For each model (timm, ``pretrained=False``, default resolution unless ``--resolution``):

1. the default rewrite pipeline (``run_pipeline``): passes applied / not applicable / failed, the final
   model's max abs error against the input model (relative to its output scale), ``torch.export``
   rank ≥ 5 tensors before → after and the modules where some remain (``RewriteReport.rank5_remaining``);
2. per format (default: ONNX; ``--formats onnx,coreml``), the converted artifact's rank ≥ 5 tensors
   (op table ``rank5_tensors``) for the input model and for the rewritten one, and the parity of the
   rewritten artifact against PyTorch (``hybridexport.export.convert``, one verification input).

    .venv/bin/python benchmarks/rewrite_coverage.py --models mobilevitv2_050,maxvit_nano_rw_256
    nice .venv/bin/python benchmarks/rewrite_coverage.py --formats onnx,coreml --json coverage.json  # all 14: slow
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

#: timm hybrids (conv + attention / token mixing) with a variety of norms and partitions
MODELS = (
    "mobilevit_xxs", "mobilevitv2_050", "poolformerv2_s12", "maxvit_nano_rw_256", "coatnet_nano_rw_224",
    "maxxvitv2_nano_rw_256", "efficientformer_l1", "efficientformerv2_s0", "fastvit_t8", "levit_128s",
    "edgenext_xx_small", "tiny_vit_5m_224", "swin_tiny_patch4_window7_224", "repvit_m0_9",
)


def measure(name: str, formats: list[str], resolution: int | None, out: Path) -> dict[str, Any]:
    from hybridexport.export import convert
    from hybridexport.rewrite.pipeline import run_pipeline
    from hybridexport.zoo.refs import load_model

    t0 = time.perf_counter()
    loaded = load_model(f"timm:{name}", resolution=resolution)
    rewritten, report = run_pipeline(loaded.module, loaded.example_inputs())
    row: dict[str, Any] = {
        "model": name, "resolution": loaded.resolution,
        "applied": report.applied(),
        "not_applicable": [p.name for p in report.passes if not p.applied and not p.failed],
        "failed": {p.name: p.reason for p in report.passes if p.failed},
        "rel_err": (report.final_max_abs_err or 0.0) / max(report.output_scale or 0.0, 1e-12),
        "torch_export_rank5": [report.rank5_before, report.rank5_after],
        "rank5_remaining": report.rank5_remaining,
        "formats": {},
    }
    for fmt in formats:
        cell: dict[str, Any] = {}
        for label, module in (("before", loaded.module), ("after", rewritten)):
            try:
                [man] = convert(module, to=fmt, out=out, rewrite=False, verify_inputs=1, force=True,
                                example_inputs=loaded.example_inputs(), name=f"{name}-{label}")
                cell[label] = man.rank5_tensors
                if label == "after":
                    cell["parity_rel_l2"] = man.parity.rel_l2_err
            except Exception as exc:  # noqa: BLE001 - a failing conversion is a result of its own
                cell[label] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
        row["formats"][fmt] = cell
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    ap.add_argument("--formats", default="onnx", help="comma-separated formats (onnx, coreml, tflite)")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            try:
                row = measure(name, formats, args.resolution, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - report and go on with the next model
                row = {"model": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            rows.append(row)
            print(_line(row, formats), flush=True)
            for site in row.get("rank5_remaining", [])[:3]:
                print(f"    rank ≥ 5 left: {site}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _line(row: dict[str, Any], formats: list[str]) -> str:
    if "error" in row:
        return f"{row['model']:<30} error: {row['error']}"
    te = row["torch_export_rank5"]
    cells = [f"{f} {row['formats'][f].get('before')}→{row['formats'][f].get('after')}" for f in formats]
    return (f"{row['model']:<30} export {te[0]}→{te[1]}  {'  '.join(cells)}  rel err {row['rel_err']:.1e}  "
            f"applied {','.join(row['applied']) or '-'}  failed {','.join(row['failed']) or '-'}  {row['seconds']} s")


if __name__ == "__main__":
    raise SystemExit(main())
