"""The comparison's data model: per-layer deltas, per model × device × format entries, the whole run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.report import stats

DEFAULT_THRESHOLD = 0.05
VERDICTS = ("regression", "improvement", "unchanged")
# environment keys that identify the hardware a measurement was taken on
MACHINE_KEYS = ("cpu", "cpu_model", "cpu_cores", "arch", "processor", "machine", "cpu_count", "device_model", "soc")
LAYER_BOOTSTRAP = 500


@dataclass
class LayerDelta:
    """One ``nn.Module`` (or unmapped runtime row) compared between base and new."""

    module: str
    status: str  # "matched" | "added" | "removed"
    base_ms: float | None
    new_ms: float | None
    base_units: list[str] = field(default_factory=list)
    new_units: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)
    verdict: str = "unchanged"  # matched layers: regression/improvement/unchanged; else "added"/"removed"
    ci: tuple[float, float] | None = None

    @property
    def delta_ms(self) -> float:
        return (self.new_ms or 0.0) - (self.base_ms or 0.0)

    @property
    def delta_pct(self) -> float | None:
        if self.base_ms is None or self.new_ms is None or self.base_ms <= 0:
            return None
        return 100.0 * (self.new_ms / self.base_ms - 1.0)

    @property
    def moved(self) -> bool:
        return self.status == "matched" and bool(self.base_units) and bool(self.new_units) and (
            self.base_units != self.new_units
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "status": self.status,
            "base_ms": self.base_ms,
            "new_ms": self.new_ms,
            "delta_ms": self.delta_ms,
            "delta_pct": self.delta_pct,
            "base_units": self.base_units,
            "new_units": self.new_units,
            "moved": self.moved,
            "op_types": self.op_types,
            "verdict": self.verdict,
            "ci": list(self.ci) if self.ci else None,
        }


@dataclass
class Entry:
    """The comparison of one model × device × format."""

    model: str
    device: str
    format: str
    base: Profile
    new: Profile
    threshold: float
    method: str  # "bootstrap" | "threshold"
    verdict: str
    ratio: float
    base_ms: float  # the compared statistic (see ``statistic``), in ms
    new_ms: float
    statistic: str = "median"
    ci: tuple[float, float] | None = None
    confidence: float | None = None
    p_value: float | None = None
    informational: bool = False
    notes: list[str] = field(default_factory=list)
    layers: list[LayerDelta] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.model}@{self.device}/{self.format}"

    @property
    def delta_ms(self) -> float:
        return self.new_ms - self.base_ms

    @property
    def delta_pct(self) -> float:
        return 100.0 * (self.ratio - 1.0) if math.isfinite(self.ratio) else math.nan

    @property
    def gating(self) -> bool:
        """Whether this entry's regression fails the run."""
        return self.verdict == "regression" and not self.informational

    def added(self) -> list[LayerDelta]:
        return [layer for layer in self.layers if layer.status == "added"]

    def removed(self) -> list[LayerDelta]:
        return [layer for layer in self.layers if layer.status == "removed"]

    def moved(self) -> list[LayerDelta]:
        return [layer for layer in self.layers if layer.moved]

    def top_regressed(self, k: int = 5) -> list[LayerDelta]:
        """Matched or added layers that got slower, largest absolute increase first."""
        slower = [layer for layer in self.layers if layer.status != "removed" and layer.delta_ms > 0]
        return sorted(slower, key=lambda layer: layer.delta_ms, reverse=True)[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "format": self.format,
            "base_runner": self.base.runner,
            "new_runner": self.new.runner,
            "base_obtained": self.base.obtained,
            "new_obtained": self.new.obtained,
            "statistic": self.statistic,
            "base_ms": self.base_ms,
            "new_ms": self.new_ms,
            "base_median_ms": self.base.total_ms.median,
            "new_median_ms": self.new.total_ms.median,
            "delta_ms": self.delta_ms,
            "delta_pct": self.delta_pct,
            "ratio": self.ratio,
            "ci": list(self.ci) if self.ci else None,
            "confidence": self.confidence,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "method": self.method,
            "verdict": self.verdict,
            "informational": self.informational,
            "notes": self.notes,
            "layers": [layer.to_dict() for layer in self.layers],
        }


@dataclass
class Missing:
    """A model × device × format found on one side only (or that failed on one side)."""

    model: str
    device: str
    format: str
    side: str  # the side that lacks it: "base" | "new" | "both" (failed in both runs)
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}@{self.device}/{self.format}"

    @property
    def label(self) -> str:
        return "failed in both" if self.side == "both" else f"missing in {self.side}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "format": self.format, "missing_in": self.side,
                "reason": self.reason}


@dataclass
class Comparison:
    base_source: str
    new_source: str
    threshold: float
    measured_threshold: float
    confidence: float
    statistic: str = stats.DEFAULT_STATISTIC
    entries: list[Entry] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.verdict == "regression"]

    def gating_regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.gating]

    def exit_code(self, fail_on_missing: bool = False) -> int:
        """1 when any gating regression (or, if asked, anything missing from ``new``), else 0."""
        if self.gating_regressions():
            return 1
        if fail_on_missing and any(m.side == "new" for m in self.missing):
            return 1
        return 0

    def summary(self) -> dict[str, int]:
        counts = {v: 0 for v in VERDICTS}
        for e in self.entries:
            counts[e.verdict] += 1
        counts["missing"] = len(self.missing)
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "hybridexport-comparison",
            "created": self.created,
            "base": self.base_source,
            "new": self.new_source,
            "threshold": self.threshold,
            "measured_threshold": self.measured_threshold,
            "confidence": self.confidence,
            "statistic": self.statistic,
            "summary": self.summary(),
            "exit_code": self.exit_code(),
            "entries": [e.to_dict() for e in self.entries],
            "missing": [m.to_dict() for m in self.missing],
        }
