"""Which ops an accelerator cannot run (they fall back to the CPU/GPU, and each switch costs a transfer).

The Neural Engine rules are those of ``hybridexport.analyze.ane_rules`` (its "off-ane" rules with
their sources: rank > 4, gathers, recurrent layers, dimensions > 16384), applied to op-table rows.
One deliberate difference: rank counts non-singleton dimensions (``erank``), so a (1, 1, C, H, W)
tensor, as in a one-group GroupNorm, counts as rank 3 (it predicts held-out families better:
``benchmarks/predictor_accuracy.py``). TFLite GPU and EdgeTPU delegates likewise reject rank-5 tensors
and gathers.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridexport.analyze.ane_rules import GATHER_OPS, MAX_DIM, RNN_OPS
from hybridexport.optable import OpRow

_NO_ACCEL_KINDS = {"gather", "other"}


def _generic(max_rank: int, max_dim: int | None, no_ops: frozenset[str] = frozenset()) -> Callable[[OpRow], bool]:
    def falls_back(op: OpRow) -> bool:
        if op.kind == "view":
            return False
        if op.erank > max_rank:
            return True
        if max_dim is not None and op.max_dim > max_dim:
            return True
        return op.kind in _NO_ACCEL_KINDS or op.op_type in no_ops

    return falls_back


def rule_for(unit: str) -> Callable[[OpRow], bool]:
    """The fallback test for a compute unit: ``ane``, ``gpu``, ``npu`` (accelerators) or ``cpu`` (none)."""
    if unit == "ane":
        return _generic(4, MAX_DIM, frozenset(GATHER_OPS) | frozenset(RNN_OPS))
    if unit in ("gpu", "npu"):
        return _generic(4, None)
    return lambda op: False
