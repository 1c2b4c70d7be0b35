"""Layers of two profiles matched by ``nn.Module`` path, each pair with a noise-aware verdict."""

from __future__ import annotations

from dataclasses import dataclass

from hybridexport.bench.profile import LayerRow, Profile, aggregate_by_module
from hybridexport.report import stats
from hybridexport.report.comparison import LAYER_BOOTSTRAP, LayerDelta


@dataclass
class _Layer:
    ms: float
    samples: list[float] | None
    units: list[str]
    op_types: list[str]


def layer_key(row: LayerRow) -> str:
    return row.module if row.module else f"<unmapped>/{row.name}"


def aggregate_layers(profile: Profile) -> dict[str, _Layer]:
    """Sum the runtime rows of each nn.Module path (per run when every row kept equal-length samples)."""
    out: dict[str, _Layer] = {}
    for row in aggregate_by_module(profile.layers):
        samples = row.ms.samples if stats.has_samples(row.ms.samples) else None
        out[layer_key(row)] = _Layer(
            ms=row.ms.median,
            samples=samples,
            units=sorted({u for u in row.compute_unit.split(",") if u}),
            op_types=sorted({t for t in row.op_type.split(",") if t}),
        )
    return out


def compare_layers(
    base: Profile, new: Profile, threshold: float, confidence: float, seed: int = 0, q: float = 0.5
) -> list[LayerDelta]:
    b, n = aggregate_layers(base), aggregate_layers(new)
    order = list(b) + [k for k in n if k not in b]
    deltas = []
    for key in order:
        lb, ln = b.get(key), n.get(key)
        status = "matched" if lb and ln else ("removed" if lb else "added")
        d = LayerDelta(
            module=key,
            status=status,
            base_ms=lb.ms if lb else None,
            new_ms=ln.ms if ln else None,
            base_units=lb.units if lb else [],
            new_units=ln.units if ln else [],
            op_types=sorted(set((lb.op_types if lb else []) + (ln.op_types if ln else []))),
            verdict="unchanged" if status == "matched" else status,
        )
        if lb and ln and lb.ms > 0:
            if lb.samples and ln.samples:
                ratio, lo, hi = stats.bootstrap_ratio_ci(lb.samples, ln.samples, confidence, LAYER_BOOTSTRAP, seed, q)
                d.ci = (lo, hi)
                d.verdict = stats.classify(ratio, threshold, lo, hi)
            else:
                d.verdict = stats.classify(ln.ms / lb.ms, threshold)
        deltas.append(d)
    return deltas
