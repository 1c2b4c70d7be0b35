"""Synthetic Profiles from seeded noise: for tests, demos and checking the comparison's statistics."""

from __future__ import annotations

import numpy as np

from hybridexport.bench.profile import LayerRow, Profile, Stats

DEFAULT_LAYERS = {
    "stem.conv": ("Conv", 0.40),
    "stages.0.blocks.0.mixer": ("Conv", 0.60),
    "stages.1.blocks.0.attn": ("MatMul", 1.20),
    "stages.1.blocks.0.mlp": ("Gemm", 0.80),
    "head.fc": ("Gemm", 0.10),
}


def measured_profile(
    model: str = "iformer-t",
    device: str = "host",
    fmt: str = "onnx",
    layers: dict[str, tuple[str, float]] | None = None,
    scale: dict[str, float] | None = None,
    units: dict[str, str] | None = None,
    noise: float = 0.03,
    n: int = 50,
    seed: int = 0,
    environment: dict | None = None,
    contention: float = 0.0,
) -> Profile:
    """A measured Profile: per-run layer times = base ms × scale × lognormal noise; total = their sum.

    ``scale`` multiplies chosen layers (a known slowdown); ``units`` overrides compute units;
    ``contention`` is the share of runs slowed 20-60 % by other processes (a busy machine).
    Two rows map to each module (op + activation), as runtimes report them.
    """
    rng = np.random.default_rng(seed)
    layers = dict(DEFAULT_LAYERS if layers is None else layers)
    scale = scale or {}
    units = units or {}
    # one shared per-run factor (machine state) plus independent per-layer noise
    run_factor = rng.lognormal(0.0, noise, size=n)
    if contention > 0:
        busy = rng.random(n) < contention
        run_factor[busy] *= rng.uniform(1.2, 1.6, size=int(busy.sum()))
    rows: list[LayerRow] = []
    per_run_total = np.zeros(n)
    for module, (op, ms) in layers.items():
        for part, frac in (("", 0.8), ("/act", 0.2)):
            samples = ms * frac * scale.get(module, 1.0) * run_factor * rng.lognormal(0.0, noise / 2, size=n)
            per_run_total += samples
            rows.append(LayerRow(name=f"/{module.replace('.', '/')}/{op}{part}", op_type=op if not part else "Relu",
                                 module=module, compute_unit=units.get(module, "cpu"),
                                 ms=Stats.from_samples(samples.tolist())))
    p = Profile(model=model, format=fmt, device=device, runner="host-onnxruntime", obtained="measured",
                total_ms=Stats.from_samples(per_run_total.tolist()), layers=rows,
                environment=dict(environment or {"machine": "x86_64", "cpu_count": 2}), method="synthetic")
    p.fill_shares()
    return p


def predicted_profile(
    model: str = "iformer-t",
    device: str = "iphone13",
    fmt: str = "coreml",
    layers: dict[str, tuple[str, float]] | None = None,
    scale: dict[str, float] | None = None,
    units: dict[str, str] | None = None,
) -> Profile:
    """A predicted (deterministic) Profile: point values, no samples."""
    layers = dict(DEFAULT_LAYERS if layers is None else layers)
    scale = scale or {}
    units = units or {}
    rows = [LayerRow(name=module, op_type=op, module=module, compute_unit=units.get(module, "ane"),
                     ms=Stats.point(ms * scale.get(module, 1.0))) for module, (op, ms) in layers.items()]
    total = sum(r.ms.median for r in rows)
    p = Profile(model=model, format=fmt, device=device, runner="predicted", obtained="predicted",
                total_ms=Stats.point(total), layers=rows, method="synthetic")
    p.fill_shares()
    return p
