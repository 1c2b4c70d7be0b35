"""How much of the rank ≥ 5 problem do the default rewrites remove on timm models the project does not know?

Models: :data:`MODELS`, timm (``pretrained=False``, default resolution), hybrids first, none of them in a
model list of the project (:data:`PROJECT_LISTS` and the zoo's cards; checked at start, an overlap is an
error). Per model and format (default ``coreml,onnx``), with ``benchmarks/rewrite_cost.py``'s timers:

* **bare**: the format's own converter on the unrewritten model (its op table is the "before");
* **convert**: ``hybridexport.export.convert`` (default rewrite pipeline and judge, parity check); its
  artifact's op table is the "after", its manifest gives the passes (applied / not applicable / failed /
  judged slower, with the reason), the parity and the rewrite seconds;
* from the op tables: rank ≥ 5 tensors, reshape-like and transpose ops before → after;
* when ``convert`` fails but bare did not, ``convert`` without the rewrite: if that works, the rewrite
  lost the format.

"Has attention" is read from the graph: a softmax fed (within :data:`ATTN_HOPS` ops) by an
activation × activation matmul, or an attention op, in an op table of the model; without any op table,
from the code (softmax / SDPA named in a submodule's code, as the ``attention-graph`` precheck reads it).
A softmax over branches (SKNet, ResNeSt) is not attention by this rule.

The goal summary at the end: share of attention models where an attention pass applied (goal ≥ 90%),
share of models without rank ≥ 5 tensors in the Core ML program (goal ≥ 90%), median convert/bare per
format (goal ≤ 1.3), models that lost a format.

    .venv/bin/python benchmarks/rewrite_coverage.py --models maxvit_pico_rw_256,levit_192 --formats onnx
    nice .venv/bin/python benchmarks/rewrite_coverage.py --json cov.json             # all models: ~1 h
    .venv/bin/python benchmarks/rewrite_coverage.py --merge a.json,b.json           # summary of earlier runs
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rewrite_cost import bare_convert, convert_timed, warm_up  # noqa: E402

#: timm hybrids (conv + attention / token mixing), ≲ 2 GMACs (mobilevitv2_175: ~5.5, the one MobileViTv2 that
#: no list names), none in a list of the project
HYBRIDS = (
    "efficientvit_m5", "efficientvim_m1", "efficientvim_m2", "efficientvim_m3", "efficientvim_m4",
    "edgenext_small_rw", "coatnet_pico_rw_224", "coatnet_rmlp_nano_rw_224",
    "coatnet_nano_cc_224", "coatnext_nano_rw_224", "maxvit_pico_rw_256", "maxvit_rmlp_pico_rw_256",
    "maxvit_rmlp_nano_rw_256", "xcit_tiny_12_p16_224", "xcit_nano_12_p8_224",
    "xcit_tiny_24_p16_224", "levit_256", "levit_384", "levit_conv_128", "fastvit_mci0", "fastvit_mci1",
    "mobilevitv2_175", "pit_ti_distilled_224", "pit_xs_distilled_224", "gcvit_xxtiny",
    "tiny_vit_11m_224", "twins_svt_small", "visformer_tiny", "vit_tiny_r_s16_p8_224", "crossvit_9_240",
    "coat_lite_mini", "cait_xxs24_224", "shvit_s3", "haloregnetz_b", "eca_halonext26ts", "eca_botnext26ts_256",
)
#: timm convnets (two with a softmax over branches), ≲ 2 GMACs, none in a list of the project
CONVNETS = (
    "skresnet18", "resnest14d", "convnextv2_atto", "tf_efficientnetv2_b0", "regnety_016", "dla60x_c",
    "ghostnetv2_130", "efficientnet_lite2", "repghostnet_080", "mobilenetv3_large_150d", "mambaout_femto",
)
MODELS = HYBRIDS + CONVNETS

#: the project's model lists: (file, assigned name); the zoo's cards are read through the registry
PROJECT_LISTS = (
    ("hybridexport/calibrate/host.py", "HOST_TRAIN"), ("hybridexport/calibrate/host.py", "HOST_TEST"),
    ("benchmarks/predictor_accuracy.py", "PORTABILITY_MODELS"),
    ("benchmarks/predictor_accuracy.py", "HOST_PAIR_MODELS"),
    ("benchmarks/predictor_accuracy.py", "HOST_VARIANT_CHAINS"),
    ("benchmarks/coreml_interpreter.py", "TIMM_MODELS"), ("benchmarks/rewrite_cost.py", "MODELS"),
    ("hybridexport/calibrate/catalog.py", "CATALOG"),
)
ATTENTION_PASSES = ("split-heads", "attention-graph")
#: ops between a softmax and the matmul feeding it (scale, bias, mask, reshape, ...)
ATTN_HOPS = 4
RESHAPE_OPS = frozenset({"reshape", "view", "flatten", "squeeze", "unsqueeze", "expand_dims"})
TRANSPOSE_OPS = frozenset({"transpose", "permute"})
GOAL_SHARE, GOAL_RATIO = 0.9, 1.3


def _literal_names(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # the catalog: published name → (builder id, family)
        yield from _literal_names(list(value.values()))
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _literal_names(v)


def assigned_literal(path: Path, name: str) -> Any:
    """The literal value assigned to ``name`` at the top of a Python file (read, not run)."""
    for node in ast.parse(path.read_text()).body:
        targets = (node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign)
                   else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    raise LookupError(f"{path}: no top-level literal {name}; update PROJECT_LISTS in {Path(__file__).name}")


def project_models(root: Path = ROOT) -> dict[str, str]:
    """timm name → the first project list naming it (``HOST_TRAIN (hybridexport/calibrate/host.py)``, the zoo)."""
    from hybridexport.zoo import list_specs

    zoo = {s.name: s.timm_name for s in list_specs()}
    known: dict[str, str] = {}
    for spec_name, timm_name in zoo.items():
        if timm_name:
            known.setdefault(timm_name, f"zoo ({spec_name})")
    for rel, var in PROJECT_LISTS:
        for ref in _literal_names(assigned_literal(root / rel, var)):
            timm_name = ref[len("timm:"):] if ref.startswith("timm:") else zoo.get(ref)
            if timm_name:
                known.setdefault(timm_name, f"{var} ({rel})")
    return known


def overlap(models: Iterable[str], known: dict[str, str]) -> list[str]:
    """One error line per model that a project list names."""
    return [f"error: {m} is in {known[m]}; this benchmark measures models beyond the project's lists, drop it"
            for m in models if m in known]


def _op(op_type: str) -> str:
    """``aten.permute_copy.default`` → ``permute``; ``Reshape`` → ``reshape``."""
    t = op_type.lower()
    if t.startswith("aten."):
        t = t.split(".")[1]
    return t.removesuffix("_copy")


def attention_cores(table: Any, hops: int = ATTN_HOPS) -> int:
    """Softmaxes fed within ``hops`` ops by an activation × activation matmul, plus attention ops."""
    by_name = table.by_name()
    return sum(1 for row in table.ops if "attention" in _op(row.op_type)
               or ((row.kind == "softmax" or "softmax" in _op(row.op_type)) and _fed_by_matmul(row, by_name, hops)))


def _fed_by_matmul(row: Any, by_name: dict[str, Any], hops: int) -> bool:
    """Whether a ``matmul`` op is among the producers of ``row`` up to ``hops`` ops back, not through
    another compute op (conv, linear)."""
    from hybridexport.opkinds import COMPUTE_KINDS

    frontier, seen = list(row.inputs), set()
    for _ in range(hops):
        nxt: list[str] = []
        for name in frontier:
            src = by_name.get(name)
            if src is None or name in seen:
                continue
            seen.add(name)
            if src.kind == "matmul":
                return True
            if src.kind not in COMPUTE_KINDS:
                nxt.extend(src.inputs)
        frontier = nxt
    return False


def table_counts(table: Any) -> dict[str, int]:
    """What the coverage compares in one op table."""
    types = [_op(o.op_type) for o in table.ops]
    return {"rank5": table.rank5_tensors(), "reshape": sum(t in RESHAPE_OPS for t in types),
            "transpose": sum(t in TRANSPOSE_OPS for t in types), "attention": attention_cores(table),
            "ops": len(types)}


def _err(exc: BaseException) -> str:
    from hybridexport.export.diagnose import one_line

    return f"{type(exc).__name__}: {one_line(exc, 200)}"


def _rewrite_cell(man: Any) -> dict[str, Any]:
    rep = man.extra.get("rewrite") or {}
    passes = [{"name": p["name"], "applied": p["applied"], "failed": p.get("failed", False),
               "slower": bool(p.get("latency") and not p["applied"] and not p.get("failed")),
               "reason": p.get("reason", ""), "notes": list(p.get("notes", []))[:3]} for p in rep.get("passes", [])]
    scale = rep.get("output_scale") or 0.0
    return {
        "passes": passes, "applied": list(rep.get("applied", [])),
        "rel_err": (rep.get("final_max_abs_err") or 0.0) / max(scale, 1e-12),
        "seconds": float(man.extra.get("rewrite_seconds", 0.0)),
    }


def measure(name: str, formats: list[str], out: Path, row: dict[str, Any]) -> None:
    """Fill one model's ``row`` (see the module doc), format by format (a timeout keeps what was measured)."""
    from hybridexport.export import convert
    from hybridexport.export.quiet import converter_output
    from hybridexport.optable import OpTable
    from hybridexport.rewrite._code_names import module_mentions
    from hybridexport.rewrite.graph_attention import ATTENTION_WORDS
    from hybridexport.zoo.refs import load_model

    loaded = load_model(f"timm:{name}")
    row.update({"resolution": loaded.resolution, "code_attention": module_mentions(loaded.module, ATTENTION_WORDS),
                "formats": {}})
    for fmt in formats:
        cell: dict[str, Any] = {}
        with converter_output(False, f"{name} → {fmt}"):
            try:  # convert first: a first trace of the model in this process is not charged to bare
                cell["convert"], man = convert_timed(loaded, fmt, out)
                cell["after"] = table_counts(OpTable.load(man.op_table_path()))
                cell["parity"] = {"verified": man.parity.verified, "rel_l2": man.parity.rel_l2_err,
                                  "reason": man.parity.reason}
                cell["rewrite"] = _rewrite_cell(man)
            except Exception as exc:  # noqa: BLE001 - a failing conversion is a result of its own
                cell["convert_error"] = _err(exc)
            try:
                cell["bare"], built = bare_convert(loaded, fmt, out)
                cell["before"] = table_counts(built.table)
            except Exception as exc:  # noqa: BLE001
                cell["bare_error"] = _err(exc)
            if "bare" in cell and "convert_error" in cell:
                try:
                    convert(loaded, to=fmt, out=out, force=True, rewrite=False)
                    cell["unrewritten"] = "ok"
                except Exception as exc:  # noqa: BLE001
                    cell["unrewritten"] = _err(exc)
        row["formats"][fmt] = cell
    if any(c.get("after", {}).get("rank5") or "after" not in c for c in row["formats"].values()):
        row["export"] = export_sites(loaded)


def export_sites(loaded: Any) -> dict[str, Any]:
    """``torch.export`` rank ≥ 5 tensors before → after the default passes (unjudged) and the modules where
    some remain (``convert`` runs the pipeline without op counts, so these come from a run of their own)."""
    from hybridexport.rewrite.pipeline import run_pipeline

    try:
        _, rep = run_pipeline(loaded.module, loaded.example_inputs())
    except Exception as exc:  # noqa: BLE001
        return {"error": _err(exc)}
    return {"rank5": [rep.rank5_before, rep.rank5_after], "sites": list(rep.rank5_remaining),
            "applied": rep.applied()}


# ---------------------------------------------------------------------------------------------- reading rows


def has_attention(row: dict[str, Any]) -> bool:
    """Attention by the graph when some op table of the model exists, else by the code."""
    counts = [c[k]["attention"] for c in row.get("formats", {}).values() for k in ("before", "after") if k in c]
    return any(counts) if counts else bool(row.get("code_attention"))


def attention_applied(cell: dict[str, Any]) -> bool:
    return any(p in ATTENTION_PASSES for p in cell.get("rewrite", {}).get("applied", []))


def attention_matched(cell: dict[str, Any]) -> bool:
    """An attention pass verified: applied, or skipped by the judge as slower."""
    return attention_applied(cell) or any(p["slower"] for p in cell.get("rewrite", {}).get("passes", [])
                                          if p["name"] in ATTENTION_PASSES)


def per_head(cell: dict[str, Any]) -> bool:
    """No attention pass applied, and ``attention-graph`` found the attention already per head (no head axis)."""
    return not attention_applied(cell) and any(
        "no head axis" in n for p in cell.get("rewrite", {}).get("passes", []) if p["name"] == "attention-graph"
        for n in p["notes"])


def ratio(cell: dict[str, Any]) -> float | None:
    return cell["convert"] / cell["bare"] if "convert" in cell and cell.get("bare") else None


def lost(cell: dict[str, Any]) -> bool:
    """Converted before the rewrite (bare, and convert without the rewrite), not after."""
    return "bare" in cell and "convert_error" in cell and cell.get("unrewritten") == "ok"


def _pair(cell: dict[str, Any], key: str) -> str:
    b, a = cell.get("before", {}).get(key, "–"), cell.get("after", {}).get(key, "–")
    return f"{b}→{a}"


def _pass_reason(p: dict[str, Any]) -> str:
    text = p["reason"].removeprefix("not applicable: ")
    if p["notes"] and (p["failed"] or p["slower"] or p["name"] in ATTENTION_PASSES):
        text += f" [{p['notes'][0]}]"
    return text[:160]


def row_lines(row: dict[str, Any]) -> list[str]:
    """The printed block of one model."""
    if "error" in row:
        return [f"{row['model']}: error: {row['error']}"] + (row_lines({k: v for k, v in row.items() if k != "error"})[1:]
                                                             if row.get("formats") else [])
    attn = "attention" if has_attention(row) else "no attention" + (" (softmax in code)" if row.get("code_attention")
                                                                      else "")
    lines = [f"{row['model']} @{row['resolution']} ({attn}, {row.get('seconds', 0):.0f} s)"]
    shown = False
    for fmt, cell in row["formats"].items():
        head = f"  {fmt:<7}"
        if "rewrite" not in cell:
            bare = f"bare {cell['bare']:.1f} s; " if "bare" in cell else ""
            lines.append(f"{head} {bare}convert failed: {cell.get('convert_error')}"
                         + (f"; bare failed: {cell['bare_error']}" if "bare_error" in cell else "")
                         + (f"; without the rewrite: {cell['unrewritten']}" if "unrewritten" in cell else "")
                         + ("  LOST" if lost(cell) else ""))
            continue
        rw, par = cell["rewrite"], cell["parity"]
        r = ratio(cell)
        timing = (f"bare {cell['bare']:.1f} s convert {cell['convert']:.1f} s ({r:.2f}×)" if r is not None
                  else f"bare failed ({cell.get('bare_error')}); convert {cell['convert']:.1f} s")
        parity = f"{par['rel_l2']:.1e}" if par.get("rel_l2") is not None else "–"
        parity += "" if par.get("verified") else f" (not verified: {par.get('reason', '')[:60]})"
        lines.append(f"{head} rank5 {_pair(cell, 'rank5')}  reshape {_pair(cell, 'reshape')}  "
                     f"transpose {_pair(cell, 'transpose')}  parity {parity}  rewrite {rw['seconds']:.1f} s  {timing}")
        lines.append(f"{'':10}applied: {', '.join(rw['applied']) or '-'}")
        for p in rw["passes"]:
            if p["failed"] or p["slower"]:
                lines.append(f"{'':10}{'failed' if p['failed'] else 'judged slower'}: {p['name']}: {_pass_reason(p)}")
        if not shown:  # not-applicable reasons and torch.export sites are the same for every format
            shown = True
            na = [p for p in rw["passes"] if not p["applied"] and not p["failed"] and not p["slower"]]
            for p in na:
                if p["name"] in ATTENTION_PASSES or p["name"] == "window-partition-rank4":
                    lines.append(f"{'':10}n/a: {p['name']}: {_pass_reason(p)}")
            rest = [p["name"] for p in na if p["name"] not in (*ATTENTION_PASSES, "window-partition-rank4")]
            if rest:
                lines.append(f"{'':10}n/a: {', '.join(rest)}")
            lines.append(f"{'':10}rel err of the rewritten model {rw['rel_err']:.1e}")
    ex = row.get("export")
    if ex:
        lines.append(f"{'':10}torch.export (default passes, unjudged): " + (ex["error"] if "error" in ex else
                     f"rank5 {ex['rank5'][0]}→{ex['rank5'][1]}, applied {', '.join(ex['applied']) or '-'}"))
        lines += [f"{'':10}rank ≥ 5 left: {s}" for s in ex.get("sites", [])[:4]]
    return lines


def _no_site(row: dict[str, Any], cell: dict[str, Any]) -> str:
    """Why rank ≥ 5 tensors remain in an artifact when ``torch.export`` shows none after the unjudged passes."""
    skipped = [p["name"] for p in cell.get("rewrite", {}).get("passes", []) if p["slower"]]
    if skipped:
        return (f"the unjudged passes remove them in torch.export; here the judge skipped {', '.join(skipped)} as "
                "slower")
    return "no torch.export site left (made by the converter)"


def _why_not_attention(cell: dict[str, Any]) -> str:
    if "rewrite" not in cell:
        return f"convert failed: {cell.get('convert_error', '?')}"[:200]
    why = [f"{p['name']}: {_pass_reason(p)}" for p in cell["rewrite"]["passes"] if p["name"] in ATTENTION_PASSES]
    return "; ".join(why)


def summary_lines(rows: list[dict[str, Any]], formats: list[str]) -> list[str]:
    """The goal summary over the rows."""
    ok = [r for r in rows if "error" not in r]
    out = [f"{len(ok)} models measured ({len(rows) - len(ok)} errors: "
           f"{', '.join(r['model'] for r in rows if 'error' in r) or 'none'})"]
    attn = [r for r in ok if has_attention(r)]
    for fmt in formats:
        have = [r for r in attn if fmt in r["formats"]]
        hit = [r for r in have if attention_applied(r["formats"][fmt])]
        share = len(hit) / len(have) if have else 0.0
        out.append(f"{fmt}: attention pass applied on {len(hit)}/{len(have)} attention models ({share:.0%}; "
                   f"goal ≥ {GOAL_SHARE:.0%}) {'MET' if share >= GOAL_SHARE else 'NOT MET'}")
        matched = [r for r in have if attention_matched(r["formats"][fmt])]
        out.append(f"    an attention pass matched and verified (applied, or judged slower and skipped): "
                   f"{len(matched)}/{len(have)} ({len(matched) / len(have) if have else 0.0:.0%})")
        done = [r for r in have if r in hit or per_head(r["formats"][fmt])]
        out.append(f"    counting attention that is already per head (attention-graph: no head axis) as done: "
                   f"{len(done)}/{len(have)} ({len(done) / len(have) if have else 0.0:.0%})")
        out += [f"    not rewritten: {r['model']}: {_why_not_attention(r['formats'][fmt])}"
                for r in have if r not in hit]
    ml = [r for r in ok if "after" in r["formats"].get("coreml", {})]
    if ml:
        zero = [r for r in ml if r["formats"]["coreml"]["after"]["rank5"] == 0]
        share = len(zero) / len(ml)
        out.append(f"coreml: no rank ≥ 5 tensor in the program on {len(zero)}/{len(ml)} converted models "
                   f"({share:.0%}; goal ≥ {GOAL_SHARE:.0%}) {'MET' if share >= GOAL_SHARE else 'NOT MET'}")
        for r in ml:
            cell = r["formats"]["coreml"]
            if cell["after"]["rank5"]:
                sites = "; ".join(r.get("export", {}).get("sites", [])[:3]) or _no_site(r, cell)
                out.append(f"    rank ≥ 5 left: {r['model']}: {_pair(cell, 'rank5')}: {sites}")
        failed = [r["model"] for r in ok if "coreml" in r["formats"] and "after" not in r["formats"]["coreml"]]
        if failed:
            out.append(f"    no Core ML artifact after the rewrite (not counted): {', '.join(failed)}")
    for fmt in formats:
        rs = [x for r in ok if (x := ratio(r["formats"].get(fmt, {}))) is not None]
        if rs:
            med = statistics.median(rs)
            out.append(f"{fmt}: median convert/bare {med:.2f}× over {len(rs)} models (min {min(rs):.2f}×, max "
                       f"{max(rs):.2f}×; goal ≤ {GOAL_RATIO}) {'MET' if med <= GOAL_RATIO else 'NOT MET'}")
    gone = [(r["model"], f) for r in ok for f, c in r["formats"].items() if lost(c)]
    out.append("lost a format (converted before the rewrite, not after): "
               + (", ".join(f"{m} ({f})" for m, f in gone) or "none"))
    both = [(r["model"], f) for r in ok for f, c in r["formats"].items()
            if "convert_error" in c and c.get("unrewritten") not in (None, "ok")]
    if both:
        out.append("fails with and without the rewrite: " + ", ".join(f"{m} ({f})" for m, f in both))
    return out


# ------------------------------------------------------------------------------------------------------ main


class _Timeout(BaseException):
    """Not an ``Exception``: the per-format handlers in :func:`measure` must not take it for a failure."""


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Raise :class:`_Timeout` in the block after ``seconds`` (0: no limit; SIGALRM, main thread)."""
    if seconds <= 0:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise _Timeout(f"over {seconds} s (--timeout)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _names(text: str) -> list[str]:
    return [m.strip().removeprefix("timm:") for m in text.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated timm names")
    ap.add_argument("--skip", default="", help="comma-separated timm names to leave out")
    ap.add_argument("--formats", default="coreml,onnx", help="comma-separated formats (coreml, onnx, tflite, ...)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the rows here (after each model)")
    ap.add_argument("--merge", default="", metavar="A.json,B.json", help="print rows and summary of earlier runs")
    ap.add_argument("--timeout", type=int, default=420, help="seconds per model before it is recorded as an error")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]

    if args.merge:
        rows = [r for p in args.merge.split(",") if p.strip() for r in json.loads(Path(p.strip()).read_text())]
        fmts = list(dict.fromkeys(f for r in rows for f in r.get("formats", {}))) or formats
        for row in rows:
            print("\n".join(row_lines(row)))
        print("\n" + "\n".join(summary_lines(rows, fmts)))
        return 0

    skip = set(_names(args.skip))
    models = [m for m in _names(args.models) if m not in skip]
    errors = overlap(models, project_models())
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    import torch


    torch.set_num_threads(max(1, args.threads))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hx-rwcov-") as tmp:
        out = Path(tmp)
        warm_up(formats, out)
        for name in models:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"model": name}
            try:
                with _deadline(args.timeout):
                    measure(name, formats, out, row)
            except (Exception, _Timeout) as exc:  # noqa: BLE001 - report and go on with the next model
                row["error"] = _err(exc)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print("\n".join(row_lines(row)), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
            for p in out.iterdir():  # artifacts are not kept: the disk stays small over 50 models
                _remove(p)
    print("\n" + "\n".join(summary_lines(rows, formats)))
    return 0


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
