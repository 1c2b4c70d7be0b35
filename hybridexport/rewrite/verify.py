"""Numerical equivalence check: a rewritten model must give the same outputs as the one it replaces.

Tolerance is relative to the output scale: max |after - before| ≤ ``rel_tol`` × max |before| (fp32:
``rel_tol`` = 1e-5). Outputs may be tensors or nested tuples/lists/dicts of tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FP32_REL_TOL = 1e-5


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of one comparison: the worst absolute error, the reference output scale, the verdict."""

    max_abs_err: float
    scale: float
    tol: float
    ok: bool
    reason: str = ""


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) model output, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten_outputs(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


def as_args(example: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """One example tensor or a tuple of them (one per model input) → the positional arguments."""
    return (example,) if isinstance(example, torch.Tensor) else tuple(example)


def verification_inputs(example: torch.Tensor | Sequence[torch.Tensor], extra: int = 1,
                        seed: int = 1234) -> list[tuple[torch.Tensor, ...]]:
    """The example input(s) plus ``extra`` seeded random sets of the same shapes and dtypes."""
    args = as_args(example)
    inputs = [args]
    g = torch.Generator().manual_seed(seed)
    for _ in range(extra):
        inputs.append(tuple(torch.randn(a.shape, generator=g).to(a.dtype) for a in args))
    return inputs


@torch.no_grad()
def run_outputs(model: nn.Module, inputs: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Outputs of ``model`` (eval mode) for each input set, flattened to tensor lists."""
    model.eval()
    return [[t.detach().float() for t in flatten_outputs(model(*as_args(x)))] for x in inputs]


def compare_outputs(
    reference: list[list[torch.Tensor]], candidate: list[list[torch.Tensor]], rel_tol: float = FP32_REL_TOL
) -> VerifyResult:
    """Compare flattened outputs from :func:`run_outputs`."""
    worst, scale = 0.0, 0.0
    for ref_list, cand_list in zip(reference, candidate, strict=True):
        if len(ref_list) != len(cand_list):
            return VerifyResult(float("inf"), 0.0, 0.0, False, f"output count changed ({len(ref_list)} → {len(cand_list)})")
        for ref, cand in zip(ref_list, cand_list, strict=True):
            if ref.shape != cand.shape:
                return VerifyResult(
                    float("inf"), 0.0, 0.0, False, f"output shape changed {tuple(ref.shape)} → {tuple(cand.shape)}"
                )
            if not torch.isfinite(cand).all():
                return VerifyResult(float("inf"), 0.0, 0.0, False, "rewritten model produced non-finite values")
            scale = max(scale, float(ref.abs().max()) if ref.numel() else 0.0)
            worst = max(worst, float((cand - ref).abs().max()) if ref.numel() else 0.0)
    tol = rel_tol * max(scale, 1e-12)
    if worst <= tol:
        return VerifyResult(worst, scale, tol, True)
    return VerifyResult(
        worst, scale, tol, False,
        f"outputs differ: max abs error {worst:.3g} > {rel_tol:g} × output scale {scale:.3g}",
    )


def verify_equivalent(
    reference: nn.Module, candidate: nn.Module, inputs: Sequence[torch.Tensor], rel_tol: float = FP32_REL_TOL
) -> VerifyResult:
    """Run both models on ``inputs`` and compare; a candidate that raises fails verification."""
    ref = run_outputs(reference, inputs)
    try:
        cand = run_outputs(candidate, inputs)
    except Exception as exc:  # a broken replacement must be rejected, not crash the pipeline
        return VerifyResult(float("inf"), 0.0, 0.0, False, f"rewritten model failed to run: {type(exc).__name__}: {exc}")
    return compare_outputs(ref, cand, rel_tol)
