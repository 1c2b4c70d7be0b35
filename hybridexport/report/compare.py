"""Compare two latency runs (Profiles or suite results) with noise-aware verdicts.

Method. Every model × device × format present on both sides gets a verdict from its end-to-end
latency. *Measured* profiles carry their raw per-run timings (``total_ms.samples``). For each of two
statistics of those timings, the 20th percentile and the median, the change is the ratio new/base
and a seeded percentile bootstrap (2000 resamples of both sample sets, 99 % interval by default)
gives its confidence interval. A statistic calls ``regression`` only when its ratio exceeds
1 + threshold **and** its whole interval lies above 1 (large enough to matter and statistically
clear), ``improvement`` mirrors that, and the verdict is the one both statistics agree on, else
``unchanged``; the weaker of the two is reported. A genuine slowdown moves every quantile alike,
while the two fail differently under noise: intermittent background load drags the median (in one
A/A series on a busy 2-core machine per-benchmark medians spread 48 % while p20 spread 10 %), and
occasional unusually fast runs drag p20 (another series: medians within 2 %, p20 spread 21 %).
Requiring both gave 0 false positives in 66 A/A pairs at 5 % in each of those series (p20 alone:
0 and 9; the median alone: 10 and 0). ``statistic`` can pick one (``"median"``, ``"p20"``, any
``pNN``) or another ``+`` combination. The Mann-Whitney U p-value is reported beside it; the RNG is
seeded, so the same files always give the same verdict. *Predicted* profiles are deterministic, so
a plain relative threshold on the medians decides; so does a measured profile with fewer than 5 raw
samples (noted in the report). Measured pairs can get their own, more generous threshold
(``measured_threshold``), since a within-run interval cannot see drift between runs. Under
sustained load nothing helps (runs spread up to 3×), so a measured pair taken on a busy machine
(1-minute load average at least the core count + 1 when the runner started), on different
machines, or a measured/predicted mix, still gets a verdict but is marked *informational* and never
fails the exit code. Layers are matched by ``nn.Module`` path (runtime rows of one module summed,
per run when raw samples exist; per-layer intervals use the median); layers found on one side only
are listed as added or removed, and layers whose compute units changed are flagged as moved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import LayerRow, Profile, aggregate_by_module
from hybridexport.errors import InputFileError
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


# ----------------------------------------------------------------------------- loading


@dataclass
class Side:
    """One side of a comparison: its profiles and the failures its suite run recorded."""

    source: str
    profiles: list[Profile]
    failures: list[dict[str, Any]] = field(default_factory=list)
    single: bool = False  # a lone Profile (pair it with the other side whatever its key)


def load_side(obj: Any) -> Side:
    """A path (Profile JSON or suite results JSON), a Profile, a SuiteResult or a list of Profiles."""
    from hybridexport.bench.suite import SuiteResult

    if isinstance(obj, Profile):
        return Side(source=f"{obj.model}@{obj.device}", profiles=[obj], single=True)
    if isinstance(obj, SuiteResult):
        return Side(source=obj.suite, profiles=list(obj.profiles), failures=[f.to_dict() for f in obj.failures])
    if isinstance(obj, list) and all(isinstance(p, Profile) for p in obj):
        return Side(source="<profiles>", profiles=list(obj))
    if isinstance(obj, str | Path):
        return _load_path(Path(obj))
    raise InputFileError(f"cannot compare a {type(obj).__name__}; pass a Profile, a suite result or a JSON file path")


def _load_path(path: Path) -> Side:
    from hybridexport.bench.suite import SuiteResult, read_text_maybe_gzip

    try:
        text = read_text_maybe_gzip(path)
    except FileNotFoundError:
        raise InputFileError(f"'{path}' does not exist; pass a file written by `hybridexport bench --json`") from None
    except IsADirectoryError:
        raise InputFileError(f"'{path}' is a directory; pass a profile or suite results JSON file") from None
    except (UnicodeDecodeError, OSError, EOFError):
        raise InputFileError(f"'{path}' is not a text file; pass a profile or suite results JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); pass a file written by "
            "`hybridexport bench --json` or `bench --suite`"
        ) from None
    if isinstance(data, list) and data and all(isinstance(d, dict) and "total_ms" in d for d in data):
        # `bench --json` writes a list when it produced several profiles
        return Side(source=str(path), profiles=[Profile.from_dict(d, source=f"{path}[{i}]") for i, d in enumerate(data)],
                    single=len(data) == 1)
    if not isinstance(data, dict):
        raise InputFileError(f"'{path}' holds a JSON {type(data).__name__}, not a profile, a list of profiles or "
                             "suite results")
    if "profiles" in data:
        result = SuiteResult.from_dict(data, source=str(path))
        return Side(source=str(path), profiles=list(result.profiles), failures=[f.to_dict() for f in result.failures])
    if "total_ms" in data:
        return Side(source=str(path), profiles=[Profile.from_dict(data, source=str(path))], single=True)
    raise InputFileError(
        f"'{path}' is neither a Profile (no 'total_ms') nor suite results (no 'profiles'); "
        "pass a file written by `hybridexport bench --json` or `bench --suite`"
    )


# ----------------------------------------------------------------------------- layers


@dataclass
class _Layer:
    ms: float
    samples: list[float] | None
    units: list[str]
    op_types: list[str]


def _layer_key(row: LayerRow) -> str:
    return row.module if row.module else f"<unmapped>/{row.name}"


def aggregate_layers(profile: Profile) -> dict[str, _Layer]:
    """Sum the runtime rows of each nn.Module path (per run when every row kept equal-length samples)."""
    out: dict[str, _Layer] = {}
    for row in aggregate_by_module(profile.layers):
        samples = row.ms.samples if stats.has_samples(row.ms.samples) else None
        out[_layer_key(row)] = _Layer(
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


# ----------------------------------------------------------------------------- entries


def _busy(profile: Profile) -> str:
    """'load 5.7 on 2 cores' when the 1-minute load average reached the core count + 1, else ''.

    The benchmark itself accounts for about 1, so this means at least one process more than cores.
    """
    env = profile.environment or {}
    load, cores = env.get("load_average"), env.get("cpu_cores") or env.get("cpu_count")
    try:
        if profile.obtained == "measured" and load and cores and float(load[0]) >= float(cores) + 1:
            return f"load {float(load[0]):.1f} on {int(cores)} cores"
    except (TypeError, ValueError, IndexError, KeyError):
        pass
    return ""


def _machine(profile: Profile) -> dict[str, Any]:
    env = profile.environment or {}
    return {k: env[k] for k in MACHINE_KEYS if k in env}


def compare_profiles(
    base: Profile,
    new: Profile,
    threshold: float = DEFAULT_THRESHOLD,
    measured_threshold: float | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    statistic: str = stats.DEFAULT_STATISTIC,
    layers: bool = True,
) -> Entry:
    """Compare one pair of Profiles (end to end and, unless ``layers=False``, per layer).

    ``statistic`` is what raw samples are compared by (see the module docstring).
    """
    qs = _quantiles_of(statistic)
    notes: list[str] = []
    informational = False
    both_measured = base.obtained == new.obtained == "measured"
    thr = (measured_threshold if measured_threshold is not None else threshold) if both_measured else threshold
    if (base.model, base.device, base.format) != (new.model, new.device, new.format):
        notes.append(
            f"comparing {base.model}@{base.device}/{base.format} with {new.model}@{new.device}/{new.format}"
        )
    if base.obtained != new.obtained:
        informational = True
        notes.append(f"base is {base.obtained} and new is {new.obtained}: not like for like (informational)")
    if both_measured:
        mb, mn = _machine(base), _machine(new)
        diff = sorted(k for k in set(mb) & set(mn) if mb[k] != mn[k])
        if diff:
            informational = True
            what = ", ".join(f"{k}: {mb[k]!r} vs {mn[k]!r}" for k in diff)
            notes.append(f"measured on different machines ({what}): informational, not gating")
    for side, prof in (("base", base), ("new", new)):
        busy = _busy(prof)
        if busy and both_measured:
            informational = True
            notes.append(f"{side} was measured on a busy machine ({busy}): informational, not gating")
    b_ms, n_ms = base.total_ms.median, new.total_ms.median
    if not (math.isfinite(b_ms) and math.isfinite(n_ms)) or b_ms <= 0:
        raise InputFileError(f"{base.model}@{base.device}: end-to-end median must be a positive number (base {b_ms}, "
                             f"new {n_ms}); re-run the benchmark")
    ratio = n_ms / b_ms
    ci = p = conf = None
    stat_name = "median"
    if both_measured and stats.has_samples(base.total_ms.samples) and stats.has_samples(new.total_ms.samples):
        bs, ns = base.total_ms.samples, new.total_ms.samples
        # every statistic must show the change (clearing its interval); the weakest one is reported
        ests = [stats.ratio_of_quantiles(bs, ns, q=q, confidence=confidence, seed=seed, with_p_value=k == 0)
                for k, q in enumerate(qs)]
        verdicts = {stats.classify(e.ratio, thr, e.lo, e.hi) for e in ests}
        verdict = verdicts.pop() if len(verdicts) == 1 else "unchanged"
        k = min(range(len(qs)), key=lambda j: abs(math.log(ests[j].ratio)) if ests[j].ratio > 0 else math.inf)
        est, q = ests[k], qs[k]
        ratio, ci, p, conf = est.ratio, (est.lo, est.hi), ests[0].p_value, confidence
        b_ms, n_ms, stat_name = stats.quantile(bs, q), stats.quantile(ns, q), stats.statistic_name(q)
        method = "bootstrap"
    else:
        if both_measured:
            notes.append(f"fewer than {stats.MIN_SAMPLES} raw samples on a side: plain threshold, no noise test")
        verdict = stats.classify(ratio, thr)
        method = "threshold"
    entry = Entry(
        model=new.model, device=new.device, format=new.format, base=base, new=new, threshold=thr, method=method,
        verdict=verdict, ratio=ratio, base_ms=b_ms, new_ms=n_ms, statistic=stat_name, ci=ci, confidence=conf, p_value=p,
        informational=informational, notes=notes,
        layers=compare_layers(base, new, thr, confidence, seed, 0.5 if 0.5 in qs else qs[0]) if layers else [],
    )
    moved = entry.moved()
    if moved:
        notes.append(f"{len(moved)} layer(s) moved between compute units")
    return entry


def _quantiles_of(statistic: str) -> list[float]:
    """``p20+median`` → [0.2, 0.5]."""
    try:
        return [stats.parse_statistic(part) for part in str(statistic).split("+")]
    except ValueError as exc:
        raise InputFileError(f"{exc}; use e.g. --statistic p20+median, p20 or median") from None


def _key(p: Profile) -> tuple[str, str, str]:
    return (p.model, p.device, p.format)


def _index(side: Side, label: str) -> dict[tuple[str, str, str], Profile]:
    out: dict[tuple[str, str, str], Profile] = {}
    for p in side.profiles:
        if _key(p) in out:
            raise InputFileError(
                f"{side.source}: {label} holds two profiles for {p.model}@{p.device}/{p.format}; "
                "keep one per model × device × format"
            )
        out[_key(p)] = p
    return out


def _failure_reason(side: Side, key: tuple[str, str, str]) -> str:
    for f in side.failures:
        if (f.get("model"), f.get("device"), f.get("format")) == key:
            return str(f.get("reason", ""))
    return ""


def compare(
    base: Any,
    new: Any,
    threshold: float = DEFAULT_THRESHOLD,
    measured_threshold: float | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    statistic: str = stats.DEFAULT_STATISTIC,
) -> Comparison:
    """Compare two runs: each a Profile, a SuiteResult, a list of Profiles, or a path to their JSON.

    ``threshold`` is relative (0.05 = 5 %); ``measured_threshold`` (default: ``threshold``) applies to
    measured-vs-measured pairs; ``statistic`` (``p20+median``: both must agree; or ``median``, ``p20``,
    ...) is what measured samples are compared by. See the module docstring for the method.
    """
    qs = _quantiles_of(statistic)
    if not (0 <= threshold < 10):
        raise InputFileError(f"threshold {threshold} is out of range; give a fraction such as 0.05 (= 5%)")
    if not (0.5 <= confidence < 1):
        raise InputFileError(f"confidence {confidence} is out of range; give a value such as 0.99")
    b, n = load_side(base), load_side(new)
    cmp = Comparison(
        base_source=b.source, new_source=n.source, threshold=threshold,
        measured_threshold=threshold if measured_threshold is None else measured_threshold, confidence=confidence,
        statistic="+".join(stats.statistic_name(q) for q in qs),
    )
    opts = {"threshold": threshold, "measured_threshold": measured_threshold, "confidence": confidence, "seed": seed,
            "statistic": statistic}
    if b.single and n.single:
        cmp.entries.append(compare_profiles(b.profiles[0], n.profiles[0], **opts))
        return cmp
    bi, ni = _index(b, "base"), _index(n, "new")
    for key, bp in bi.items():
        if key in ni:
            cmp.entries.append(compare_profiles(bp, ni[key], **opts))
        else:
            reason = _failure_reason(n, key) or "not in the new results"
            cmp.missing.append(Missing(*key, side="new", reason=reason))
    for key in ni:
        if key not in bi:
            reason = _failure_reason(b, key) or "not in the baseline"
            cmp.missing.append(Missing(*key, side="base", reason=reason))
    # items that failed in new and were never in base's profiles still deserve a line; "both" when
    # base failed too (not a regression, so --fail-on-missing ignores it)
    listed = {m.key for m in cmp.missing} | {e.key for e in cmp.entries}
    base_failed = {(f.get("model"), f.get("device"), f.get("format")) for f in b.failures}
    for f in n.failures:
        key = (f.get("model"), f.get("device"), f.get("format"))
        side = "both" if key in base_failed else "new"
        m = Missing(str(key[0]), str(key[1]), str(key[2]), side=side, reason=str(f.get("reason", "")))
        if m.key not in listed:
            cmp.missing.append(m)
            listed.add(m.key)
    return cmp


def parse_threshold(text: str) -> float:
    """``5%`` → 0.05, ``0.05`` → 0.05; a bare number ≥ 1 is ambiguous and refused."""
    s = str(text).strip()
    try:
        if s.endswith("%"):
            value = float(s[:-1]) / 100.0
        else:
            value = float(s)
            if value >= 1:
                raise InputFileError(f"threshold '{text}' is ambiguous; write it as a percent ('{s}%') or a fraction")
    except ValueError:
        raise InputFileError(f"threshold '{text}' is not a number; write e.g. 5% or 0.05") from None
    if not (0 <= value < 10) or not math.isfinite(value):
        raise InputFileError(f"threshold '{text}' is out of range; write e.g. 5% or 0.05")
    return value
