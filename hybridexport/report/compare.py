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
fails the exit code. So does a measured pair of the *same artifact* (equal ``artifact_sha256``) run with
the same runtime and settings: nothing the change under test made differs, so a timing difference
between the two runs is the machine's (same-kind CI machines were seen 1.3-2.2x apart on identical
files); a changed artifact is still gated. Layers are matched by ``nn.Module`` path (runtime rows of one module summed,
per run when raw samples exist; per-layer intervals use the median); layers found on one side only
are listed as added or removed, and layers whose compute units changed are flagged as moved.
"""

from __future__ import annotations

import math
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.bench.results import Side, load_side
from hybridexport.errors import InputFileError
from hybridexport.export.manifest import shape_tag
from hybridexport.report import stats
from hybridexport.report.comparison import (
    DEFAULT_THRESHOLD,
    MACHINE_KEYS,
    VERDICTS,
    Comparison,
    Entry,
    LayerDelta,
    Missing,
)
from hybridexport.report.layers import aggregate_layers, compare_layers

__all__ = ["DEFAULT_THRESHOLD", "VERDICTS", "Comparison", "Entry", "LayerDelta", "Missing", "aggregate_layers",
           "compare", "compare_layers", "compare_profiles"]


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


# environment entries that vary between runs without changing what was run
_VOLATILE_ENV = frozenset({"load_average", "os", "python", "runs", "warmup", "priority", "date", "hostname"})


def _same_run_setup(base: Profile, new: Profile) -> str:
    """'sha256 5253b4c8…' when both sides ran the same artifact with the same runtime and settings, else ''."""
    if not (base.artifact_sha256 and base.artifact_sha256 == new.artifact_sha256 and base.runner == new.runner):
        return ""
    eb, en = base.environment or {}, new.environment or {}
    keys = (set(eb) | set(en)) - _VOLATILE_ENV
    if any(eb.get(k) != en.get(k) for k in keys):
        return ""
    return f"sha256 {base.artifact_sha256[:8]}…"


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
    if not _same(base, new):
        notes.append(f"comparing {_label(base)} with {_label(new)}")
    if (base.device, base.format) != (new.device, new.format):
        informational = True
        notes.append("different devices or formats: informational, not gating")
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
        same = _same_run_setup(base, new)
        if same:
            informational = True
            notes.append(f"same artifact ({same}) and runtime settings on both sides: the change under test did "
                         "not alter what ran, a timing difference is the machine's (informational, not gating)")
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
        if min(bs) <= 0 or min(ns) <= 0 or not all(map(math.isfinite, (*bs, *ns))):
            # a zero base quantile would make every ratio infinite, which no statistic calls a regression
            raise InputFileError(f"{base.model}@{base.device}: every end-to-end sample must be a positive, finite time "
                                 "(a profile holds a sample ≤ 0); re-run the benchmark")
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
    return [stats.parse_statistic(part) for part in str(statistic).split("+")]


def _key(p: Profile) -> tuple[str, str, str, str]:
    return (p.model, p.device, p.format, shape_tag(p.input_shapes) if p.input_shapes else "")


def _label(p: Profile) -> str:
    shape = f" @{shape_tag(p.input_shapes)}" if p.input_shapes else ""
    return f"{p.model}{shape} on {p.device} ({p.format})"


def _index(side: Side, label: str) -> dict[tuple[str, str, str, str], Profile]:
    out: dict[tuple[str, str, str, str], Profile] = {}
    for p in side.profiles:
        if _key(p) in out:
            raise InputFileError(
                f"{side.source}: {label} holds two profiles for {p.model}@{p.device}/{p.format}; "
                "keep one per model × device × format"
            )
        out[_key(p)] = p
    return out


def _adopt_shapes(a: dict[tuple[str, str, str, str], Profile], b: dict[tuple[str, str, str, str], Profile]) -> None:
    """A profile written before input shapes were recorded (shape "") pairs with the other side's one profile
    of the same model × device × format."""
    for key in [k for k in a if k[3] == "" and k not in b]:
        others = [k for k in b if k[:3] == key[:3]]
        if len(others) == 1 and others[0] not in a:
            a[others[0]] = a.pop(key)


def _same(bp: Profile, np_: Profile) -> bool:
    kb, kn = _key(bp), _key(np_)
    return kb == kn or (kb[:3] == kn[:3] and "" in (kb[3], kn[3]))


def _failure_reason(side: Side, key: tuple[str, ...]) -> str:
    for f in side.failures:
        if (f.get("model"), f.get("device"), f.get("format")) == tuple(key[:3]):
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
    allow_different: bool = False,
) -> Comparison:
    """Compare two runs: each a Profile, a SuiteResult, a list of Profiles, or a path to their JSON.

    Two lone profiles are paired only like with like (model, device, format, input shapes); another pair is
    bad input unless ``allow_different`` (an ablation: two variants of one design), and a pair from two
    devices or formats is then informational.

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
        bp, np_ = b.profiles[0], n.profiles[0]
        if not _same(bp, np_) and not allow_different:
            raise InputFileError(
                f"{b.source} is {_label(bp)} but {n.source} is {_label(np_)}: not like with like; pass "
                "--allow-different to compare two designs anyway")
        cmp.entries.append(compare_profiles(bp, np_, **opts))
        return cmp
    bi, ni = _index(b, "base"), _index(n, "new")
    _adopt_shapes(bi, ni)
    _adopt_shapes(ni, bi)
    for key, bp in bi.items():
        if key in ni:
            cmp.entries.append(compare_profiles(bp, ni[key], **opts))
        else:
            reason = _failure_reason(n, key) or "not in the new results"
            cmp.missing.append(Missing(*key[:3], side="new", reason=reason))
    for key in ni:
        if key not in bi:
            reason = _failure_reason(b, key) or "not in the baseline"
            cmp.missing.append(Missing(*key[:3], side="base", reason=reason))
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
    if not cmp.entries:
        # a gate that compared nothing must not pass: e.g. every item of the new run failed, or another suite ran
        failed = [m for m in cmp.missing if m.side in ("new", "both") and m.reason]
        why = f"; first failure: {failed[0].key}: {failed[0].reason}" if failed else ""
        raise InputFileError(f"nothing to compare: no model × device × format is in both {b.source} and {n.source} "
                             f"({len(cmp.missing)} missing on one side{why}); run the same suite for both")
    return cmp
