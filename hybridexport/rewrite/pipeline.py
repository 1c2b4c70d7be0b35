"""Run rewrite passes on a copy of a model: precheck → match → replace → verify → report, one pass at a time.

Rules, cheapest first:

* a pass whose :meth:`~hybridexport.rewrite.base.RewritePass.precheck` says it cannot apply is reported
  "not applicable" without copying or tracing the model;
* any other pass gets a private deep copy of the current model and the shared graphs of it
  (:class:`~hybridexport.rewrite._graph.GraphCache`: each graph made at most once per unchanged model,
  remade after a pass changed it);
* a pass's result replaces the current model only if it runs and its outputs on the example input match
  the current model's within fp32 tolerance (max abs error ≤ 1e-5 × max |output|); otherwise it is
  reported as not applied, with the reason, and the model is kept as it was;
* the final model is checked once against the input model on every verification input (the example and
  one more seeded random input). When that fails, the applied passes are verified again one by one on every
  input: a pass that fails is dropped (reported as failed, with the reason) and the passes after it are
  applied again to the model without it.

The input module is never mutated. Passes, verification and op counts run without autograd (``torch.no_grad``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridexport.rewrite._graph import GraphCache
from hybridexport.rewrite.base import CANONICAL_ORDER, PassOutcome, RewritePass, get_pass, load_passes
from hybridexport.rewrite.judge import UNJUDGED, Judge, Verdict
from hybridexport.rewrite.report import PassRecord, RewriteReport, count_ops
from hybridexport.rewrite.verify import (
    FP32_REL_TOL,
    VerifyResult,
    as_args,
    compare_outputs,
    run_outputs,
    verification_inputs,
)

Outputs = list[list[torch.Tensor]]

#: the default pipeline (run in this order: reparameterize before fuse-bn, see base.CANONICAL_ORDER);
#: attention-graph takes the attention split-heads does not know (verified on the zoo: not applicable,
#: 0.2-0.8 s; on timm EdgeNeXt/CoAtNet/MaxViT/XCiT/LeViT: applied, parity ≤ 7e-7 × output scale)
DEFAULT_PASSES: tuple[str, ...] = ("reparameterize", "fuse-bn", "group-norm-rank4", "unfold-as-conv",
                                   "window-partition-rank4", "split-heads", "attention-graph")

#: target-specific pipelines, decided by measurement (benchmarks/rewrite_effect.py): only the Neural
#: Engine target adds the (B, C, 1, S) channel-first layout of linear-to-conv.
TARGET_PASSES: dict[str, tuple[str, ...]] = {
    "onnx": DEFAULT_PASSES,
    "tflite": DEFAULT_PASSES,
    "executorch": DEFAULT_PASSES,
    "coreml": DEFAULT_PASSES,
    "coreml-ane": (*DEFAULT_PASSES, "linear-to-conv"),
}


def resolve_passes(passes: Sequence[str] | str | None = None, target: str | None = None) -> list[str]:
    """Validated pass names in run order. ``passes`` may be a list or a comma-separated string."""
    if passes is None:
        names = list(TARGET_PASSES.get(target or "", DEFAULT_PASSES))
    else:
        if isinstance(passes, str):
            passes = [p for p in passes.split(",")]
        names = [p.strip() for p in passes if p.strip()]
    for name in names:
        get_pass(name)  # raises UnknownPassError listing the known passes
    registry = load_passes()
    order = {n: i for i, n in enumerate(CANONICAL_ORDER)}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: order.get(n, len(order) + list(registry).index(n)))


def run_pipeline(
    module: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    passes: Sequence[str] | str | None = None,
    target: str | None = None,
    *,
    count: bool = True,
    rel_tol: float = FP32_REL_TOL,
    judge: Judge | None = None,
) -> tuple[nn.Module, RewriteReport]:
    """Rewrite a deep copy of ``module`` with ``passes`` (default: :data:`DEFAULT_PASSES`, or the
    ``target``'s pipeline). Returns the rewritten module (eval mode) and the :class:`RewriteReport`.

    ``count=False`` skips the before/after op histograms (torch.export of the input and final models).
    With a ``judge`` (:mod:`hybridexport.rewrite.judge`), a verified pass outside the deploy form is kept
    only if the judge's target does not get slower; its latency before/after is recorded either way.
    """
    names = resolve_passes(passes, target)
    original = copy.deepcopy(module).eval()
    inputs = verification_inputs(example_input)
    report = RewriteReport(target=target, judge=judge.how if judge is not None else "")
    graphs = GraphCache(original, example_input)
    if count:
        report.ops_before, report.rank5_before, report.ops_source, _ = _safe_count(graphs)

    original_out = run_outputs(original, inputs)
    current, current_out = original, original_out[:1]
    steps: list[_Step] = []
    for name in names:
        t0 = time.perf_counter()
        record = PassRecord(name=name, applied=False)
        rewrite = get_pass(name)
        why_not = _precheck(rewrite, current)
        if why_not:
            record.reason = "not applicable: " + why_not
        else:
            candidate, cand_out = _run_pass(rewrite, current, current_out, example_input, graphs, record, rel_tol)
            if cand_out is not None:
                judged = _judge(judge, name, current, candidate, as_args(example_input), record)
                if judged is not None and judged.slower:
                    record.reason = judged.reason()
                    record.notes = record.changes + record.notes
                    record.changes = []
                else:
                    record.applied = True
                    steps.append(_Step(rewrite, record, candidate))
                    current, current_out = candidate, cand_out
                    graphs.invalidate(current)
        record.seconds = round(time.perf_counter() - t0, 3)
        report.passes.append(record)

    t0 = time.perf_counter()
    final_out = run_outputs(current, inputs)
    final = compare_outputs(original_out, final_out, rel_tol)
    if not final.ok and steps:
        kept, final_out = _recheck(original, original_out, steps, inputs, example_input, rel_tol)
        if kept is not current:
            current = kept
            graphs.invalidate(current)
        final = compare_outputs(original_out, final_out, rel_tol)
    report.final_check_seconds = round(time.perf_counter() - t0, 3)
    report.final_max_abs_err, report.output_scale = final.max_abs_err, final.scale
    if count:
        report.ops_after, report.rank5_after, _, report.rank5_remaining = _safe_count(graphs)
    return current.eval(), report


@dataclass
class _Step:
    """An applied pass: the pass, its record and the model it made."""

    rewrite: RewritePass
    record: PassRecord
    after: nn.Module


def _precheck(rewrite: RewritePass, model: nn.Module) -> str:
    try:
        return rewrite.precheck(model)
    except Exception:  # a precheck that cannot decide lets the pass run (it reports for itself)
        return ""


def _run_pass(rewrite: RewritePass, current: nn.Module, current_out: Outputs,
              example_input: torch.Tensor | tuple[torch.Tensor, ...], graphs: GraphCache, record: PassRecord,
              rel_tol: float, inputs: Sequence[tuple[torch.Tensor, ...]] | None = None
              ) -> tuple[nn.Module, Outputs | None]:
    """Apply ``rewrite`` to a copy of ``current`` and verify it against ``current_out`` (outputs on
    ``inputs``, default the example input); fills ``record``. Returns the candidate and its outputs (None:
    not applicable, crashed or not verified)."""
    candidate = copy.deepcopy(current)
    rewrite.graphs = graphs
    try:
        with torch.no_grad():  # passes edit weights and trace: no autograd state (leaf in-place ops fail with it)
            outcome = rewrite.apply(candidate, example_input)
    except Exception as exc:  # a pass that crashes leaves the model as it was
        outcome = PassOutcome(matched=-1)
        record.reason = f"pass failed: {type(exc).__name__}: {exc}"
    finally:
        rewrite.graphs = None
    record.matched = max(outcome.matched, 0)
    record.notes = list(outcome.notes)
    if outcome.matched < 0:
        record.failed = True
        return candidate, None
    if outcome.matched == 0:
        record.reason = "not applicable: " + (outcome.notes[0] if outcome.notes else "pattern not found")
        record.notes = outcome.notes[1:]
        return candidate, None
    record.changes = outcome.changes
    verdict, cand_out = _verify(candidate.eval(), current_out, inputs or [as_args(example_input)], rel_tol)
    if verdict.max_abs_err != float("inf") or cand_out is not None:
        record.max_abs_err = verdict.max_abs_err
    if verdict.ok:
        return candidate, cand_out
    record.failed = True
    record.reason = verdict.reason if cand_out is None else "verification failed, original kept: " + verdict.reason
    record.notes = record.changes + record.notes
    record.changes = []
    return candidate, None


def _verify(model: nn.Module, reference: Outputs, inputs: Sequence[tuple[torch.Tensor, ...]], rel_tol: float
            ) -> tuple[VerifyResult, Outputs | None]:
    """``model``'s outputs on ``inputs`` against ``reference``; outputs None when the model failed to run."""
    try:
        out = run_outputs(model, inputs)
    except Exception as exc:
        why = f"rewritten model failed to run: {type(exc).__name__}: {exc}"
        return VerifyResult(float("inf"), 0.0, 0.0, False, why), None
    return compare_outputs(reference, out, rel_tol), out


def _recheck(original: nn.Module, original_out: Outputs, steps: list[_Step],
             inputs: Sequence[tuple[torch.Tensor, ...]], example_input: torch.Tensor | tuple[torch.Tensor, ...],
             rel_tol: float) -> tuple[nn.Module, Outputs]:
    """Verify the applied passes one by one on every input; drop those that fail, apply the ones after a
    dropped pass again to the model without it. Returns the model kept and its outputs."""
    base, base_out = original, original_out
    dropped: list[str] = []
    for step in steps:
        t0 = time.perf_counter()
        rec = step.record
        if not dropped:  # the model this pass saw is the one kept: check its result as it is
            verdict, out = _verify(step.after, base_out, inputs, rel_tol)
            candidate, why = step.after, "the final check failed and this pass fails on all verification inputs: "
        else:  # the model it saw had a dropped pass in it: apply it again to the kept one
            again = PassRecord(name=rec.name, applied=False)
            candidate, out = _run_pass(step.rewrite, base, base_out, example_input, GraphCache(base, example_input),
                                       again, rel_tol, inputs)
            verdict = VerifyResult(again.max_abs_err or 0.0, 0.0, 0.0, out is not None, again.reason)
            why = f"applied again without {', '.join(dropped)}: "
            rec.changes, rec.notes = again.changes, again.notes
            rec.notes.append(f"applied again without {', '.join(dropped)} (latency judged on the model with it)")
        if verdict.ok and out is not None:
            rec.max_abs_err = verdict.max_abs_err
            base, base_out = candidate, out
        else:
            rec.applied, rec.failed = False, True
            rec.reason = "dropped: " + why + verdict.reason
            rec.notes = rec.changes + rec.notes
            rec.changes = []
            dropped.append(rec.name)
        rec.seconds = round(rec.seconds + time.perf_counter() - t0, 3)
    return base, base_out


def _judge(judge: Judge | None, name: str, before: nn.Module, after: nn.Module, examples: tuple[Any, ...],
           record: PassRecord) -> Verdict | None:
    """The judge's verdict on a verified pass (None: not judged), recorded in ``record.latency``."""
    if judge is None or name in UNJUDGED:
        return None
    try:
        verdict = judge.judge(before, after, examples)
    except Exception as exc:  # a judge that cannot price the model keeps the verified pass, and says so
        record.notes.append(f"not judged: {judge.how} failed: {type(exc).__name__}: {exc}")
        return None
    record.latency = verdict.to_dict()
    return verdict


def _safe_count(graphs: GraphCache) -> tuple[dict[str, Any], int | None, str, list[str]]:
    try:
        return count_ops(graphs.model, graphs.example, program=graphs.exported())
    except Exception as exc:  # an unexportable model still gets rewritten; the counts say why they are empty
        return {}, None, f"op count failed: {type(exc).__name__}: {exc}", []
