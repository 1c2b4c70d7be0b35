"""Run rewrite passes on a copy of a model: match → replace → verify → report, one pass at a time.

Each pass gets a private deep copy of the current model; its result replaces the current model only if
it runs and its outputs match the current model's within fp32 tolerance (max abs error ≤ 1e-5 × max
|output|) on the example input and one more seeded random input. Otherwise the pass is reported as not
applied, with the reason, and the model is kept as it was. The input module is never mutated. Passes,
verification and op counts run without autograd (``torch.no_grad``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hybridexport.rewrite.base import CANONICAL_ORDER, PassOutcome, get_pass, load_passes
from hybridexport.rewrite.judge import UNJUDGED, Judge, Verdict
from hybridexport.rewrite.report import PassRecord, RewriteReport, count_ops
from hybridexport.rewrite.verify import (
    FP32_REL_TOL,
    as_args,
    compare_outputs,
    run_outputs,
    verification_inputs,
)

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

    ``count=False`` skips the before/after op histograms (two extra exports). With a ``judge``
    (:mod:`hybridexport.rewrite.judge`), a verified pass outside the deploy form is kept only if the
    judge's target does not get slower; its latency before/after is recorded either way.
    """
    names = resolve_passes(passes, target)
    current = copy.deepcopy(module).eval()
    inputs = verification_inputs(example_input)
    report = RewriteReport(target=target, judge=judge.how if judge is not None else "")
    examples = as_args(example_input)
    if count:
        report.ops_before, report.rank5_before, report.ops_source, _ = _safe_count(current, example_input)

    original_out = run_outputs(current, inputs)
    current_out = original_out
    for name in names:
        t0 = time.perf_counter()
        candidate = copy.deepcopy(current)
        record = PassRecord(name=name, applied=False)
        try:
            with torch.no_grad():  # passes edit weights and trace: no autograd state (leaf in-place ops fail with it)
                outcome = get_pass(name).apply(candidate, example_input)
        except Exception as exc:  # a pass that crashes leaves the model as it was
            outcome = PassOutcome(matched=-1)
            record.reason = f"pass failed: {type(exc).__name__}: {exc}"
        record.matched = max(outcome.matched, 0)
        record.notes = outcome.notes
        if outcome.matched < 0:
            record.failed = True
        elif outcome.matched == 0:
            record.reason = "not applicable: " + (outcome.notes[0] if outcome.notes else "pattern not found")
            record.notes = outcome.notes[1:]
        elif outcome.matched > 0:
            try:
                cand_out = run_outputs(candidate.eval(), inputs)
                verdict = compare_outputs(current_out, cand_out, rel_tol)
            except Exception as exc:
                verdict = None
                record.failed = True
                record.reason = f"rewritten model failed to run: {type(exc).__name__}: {exc}"
            if verdict is not None:
                record.max_abs_err = verdict.max_abs_err
                judged = _judge(judge, name, current, candidate.eval(), examples, record) if verdict.ok else None
                if verdict.ok and judged is not None and judged.slower:
                    record.reason = judged.reason()
                    record.notes = outcome.changes + outcome.notes
                elif verdict.ok:
                    record.applied = True
                    record.changes = outcome.changes
                    current, current_out = candidate, cand_out
                else:
                    record.failed = True
                    record.reason = "verification failed, original kept: " + verdict.reason
                    record.notes = outcome.changes + outcome.notes
        record.seconds = round(time.perf_counter() - t0, 3)
        report.passes.append(record)

    final = compare_outputs(original_out, current_out, rel_tol)
    report.final_max_abs_err, report.output_scale = final.max_abs_err, final.scale
    if count:
        report.ops_after, report.rank5_after, _, report.rank5_remaining = _safe_count(current, example_input)
    return current.eval(), report


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


def _safe_count(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]
                ) -> tuple[dict[str, Any], int | None, str, list[str]]:
    try:
        return count_ops(model, example)
    except Exception as exc:  # an unexportable model still gets rewritten; the counts say why they are empty
        return {}, None, f"op count failed: {type(exc).__name__}: {exc}", []
