"""Which ops an accelerator cannot run (they fall back to the CPU/GPU, and each switch costs a transfer).

The Neural Engine rules are those of ``hybridexport.analyze.ane_rules`` (its "off-ane" rules with
their sources: rank > 4, gathers, recurrent layers, dimensions > 16384), applied to per-op features.
One deliberate difference: rank counts non-singleton dimensions (``erank``). A (1, 1, C, H, W)
tensor, as in a one-group GroupNorm, squeezes to rank 3; on the iPhone 13 calibration data the
squeezed count predicts held-out families better (leave-one-family-out: 53 % of rows within ±20 %
against 47 % with the plain rank). TFLite GPU and EdgeTPU delegates likewise reject rank-5 tensors
and gathers.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridexport.predict.features import OpFeature

try:
    from hybridexport.analyze.ane_rules import GATHER_OPS, MAX_DIM, RNN_OPS
except ImportError:  # the analyze stage is optional for prediction
    GATHER_OPS, MAX_DIM, RNN_OPS = frozenset({"gather", "gather_nd", "gather_along_axis"}), 16384, frozenset()

_NO_ACCEL_KINDS = {"gather", "other"}


def _generic(max_rank: int, max_dim: int | None, no_ops: frozenset[str] = frozenset()) -> Callable[[OpFeature], bool]:
    def falls_back(op: OpFeature) -> bool:
        if op.kind == "view":
            return False
        if op.erank > max_rank:
            return True
        if max_dim is not None and op.max_dim > max_dim:
            return True
        return op.kind in _NO_ACCEL_KINDS or op.op_type in no_ops

    return falls_back


def rule_for(unit: str) -> Callable[[OpFeature], bool]:
    """The fallback test for a compute unit: ``ane``, ``gpu``, ``npu`` (accelerators) or ``cpu`` (none)."""
    if unit == "ane":
        return _generic(4, MAX_DIM, frozenset(GATHER_OPS) | frozenset(RNN_OPS))
    if unit in ("gpu", "npu"):
        return _generic(4, None)
    return lambda op: False
