"""Parity: run an artifact on fixed seeded inputs and compare with PyTorch fp32.

Metrics over N inputs: worst max-abs error, worst relative L2 error ``||y - y_ref|| / ||y_ref||``, and the
share of inputs whose top-1 class agrees. Tolerances per precision are in
:data:`hybridexport.export.options.TOLERANCE` (fp32 1e-4, fp16 1e-2, int8 0.1 relative L2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hybridexport.export.manifest import Parity

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Seeds of the verification inputs are VERIFY_SEED_BASE + i (seed 0 is the tracing example).
VERIFY_SEED_BASE = 1000


def verification_inputs(shapes: Sequence[Sequence[int]], n: int) -> list[list[torch.Tensor]]:
    """``n`` fixed input sets, one tensor per shape (standard normal, seeded: identical on every run)."""
    import torch

    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(VERIFY_SEED_BASE + i)
        out.append([torch.randn(*shape, generator=g) for shape in shapes])
    return out


def flatten_outputs(y: object) -> list[np.ndarray]:
    """A model output (tensor, or a tuple/list/dict of them) → float32 numpy arrays, in ``torch.utils._pytree``
    leaf order (the order the exporters give the artifact's outputs)."""
    import torch
    from torch.utils._pytree import tree_leaves

    leaves = [y] if isinstance(y, np.ndarray) else tree_leaves(y)
    out = []
    for a in leaves:
        if isinstance(a, torch.Tensor):
            out.append(a.detach().float().cpu().numpy())
        elif isinstance(a, np.ndarray):
            out.append(a.astype(np.float32, copy=False))
        elif a is not None:
            raise TypeError(f"cannot compare model output of type {type(a).__name__}")
    return out


def reference_outputs(module: nn.Module, input_sets: Sequence[Sequence[torch.Tensor]]) -> list[list[np.ndarray]]:
    """PyTorch eager outputs of ``module`` on each input set (no grad)."""
    import torch

    with torch.no_grad():
        return [flatten_outputs(module(*xs)) for xs in input_sets]


def compare(
    reference: Sequence[Sequence[np.ndarray]],
    actual: Sequence[Sequence[np.ndarray]],
    tolerance: float,
) -> Parity:
    """Compare every output of every input set; ``verified`` is True when the worst relative L2 error of any
    one output is within ``tolerance`` (each feature map of a backbone is held to it on its own, so a
    small output cannot hide behind a large one). Top-1 agreement is reported for one-output models."""
    if len(reference) != len(actual):
        raise ValueError(f"{len(actual)} outputs for {len(reference)} inputs")
    max_abs = 0.0
    worst_rel, worst_at = 0.0, 0
    agree = 0
    n_out = 0
    for ref, got in zip(reference, actual, strict=True):
        if len(ref) != len(got):
            raise ValueError(f"artifact returned {len(got)} outputs, PyTorch {len(ref)}")
        n_out = len(ref)
        for k, (a, b) in enumerate(zip(ref, got, strict=True)):
            r = a.astype(np.float64).ravel()
            g = np.asarray(b, dtype=np.float64).ravel()
            if r.shape != g.shape:
                raise ValueError(f"artifact output {k} has {g.size} values, PyTorch {r.size}")
            diff = g - r
            worst_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
            max_abs = max(max_abs, worst_abs) if np.isfinite(worst_abs) else float("inf")  # a NaN or inf is the worst
            denom = float(np.linalg.norm(r))
            rel = float(np.linalg.norm(diff)) / denom if denom > 0 else float(np.linalg.norm(diff))
            if np.isfinite(worst_rel) and not rel <= worst_rel:  # NaN counts as the worst, and stays
                worst_rel, worst_at = rel, k
        agree += int(_top1(ref[0]) == _top1(np.asarray(got[0])))
    n = len(reference)
    ok = bool(np.isfinite(worst_rel) and worst_rel <= tolerance)
    over = f"{n} inputs" + (f" × {n_out} outputs, worst output {worst_at}" if n_out > 1 else "")
    reason = (
        f"rel L2 {worst_rel:.2e} <= {tolerance:g} over {over}"
        if ok
        else f"rel L2 {worst_rel:.2e} exceeds tolerance {tolerance:g} over {over}"
    )
    return Parity(
        verified=ok,
        max_abs_err=max_abs,
        rel_l2_err=worst_rel,
        top1_agreement=agree / n if n and n_out == 1 else None,
        n_inputs=n,
        tolerance=tolerance,
        reason=reason,
    )


def _top1(a: np.ndarray) -> tuple[int, ...]:
    """Arg-max along the last axis (per row); the whole array's arg-max for 1-D outputs."""
    a = np.asarray(a)
    if a.ndim <= 1:
        return (int(np.argmax(a)),)
    return tuple(int(i) for i in np.argmax(a.reshape(-1, a.shape[-1]), axis=-1))
