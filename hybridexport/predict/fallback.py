"""Which ops an accelerator cannot run (they fall back to the CPU/GPU, and each switch costs a transfer).

Rules are deliberately few and public: the Neural Engine runs tensors of rank ≤ 4 whose dimensions
stay within its limits, and no gathers; TFLite GPU and EdgeTPU delegates likewise reject rank-5
tensors and gathers. Rank counts non-singleton dimensions (``erank``): a (1, 1, C, H, W) tensor, as
in a one-group GroupNorm, squeezes to rank 3 and stays on the accelerator. When the rewrite stage's Core ML/ANE rules module exists
(``hybridexport.analyze.ane_rules``) and exposes ``op_falls_back(op_type, rank, max_dim)``, the ANE
uses it instead.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridexport.predict.features import OpFeature

ANE_MAX_DIM = 16384  # the Neural Engine tiles tensors up to this many elements along one axis
_NO_ACCEL_KINDS = {"gather", "other"}


def _generic(max_rank: int, max_dim: int | None) -> Callable[[OpFeature], bool]:
    def falls_back(op: OpFeature) -> bool:
        if op.kind in ("view",):
            return False
        if op.erank > max_rank:
            return True
        if max_dim is not None and op.max_dim > max_dim:
            return True
        return op.kind in _NO_ACCEL_KINDS

    return falls_back


def _ane_rule() -> Callable[[OpFeature], bool]:
    try:
        from hybridexport.analyze import ane_rules  # type: ignore[attr-defined]
    except ImportError:
        return _generic(4, ANE_MAX_DIM)
    fn = getattr(ane_rules, "op_falls_back", None)
    if fn is None:
        return _generic(4, ANE_MAX_DIM)
    return lambda op: op.kind != "view" and bool(fn(op.op_type, op.erank, op.max_dim))


def rule_for(unit: str) -> Callable[[OpFeature], bool]:
    """The fallback test for a compute unit: ``ane``, ``gpu``, ``npu`` (accelerators) or ``cpu`` (none)."""
    if unit == "ane":
        return _ane_rule()
    if unit in ("gpu", "npu"):
        return _generic(4, None)
    return lambda op: False
