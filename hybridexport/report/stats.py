"""Statistics for noise-aware latency comparison.

``ratio_of_quantiles`` estimates how much slower (ratio > 1) or faster (< 1) ``new`` is than ``base``
from raw timing samples, with a seeded percentile-bootstrap confidence interval: both sample sets
are resampled with replacement ``n_boot`` times and the ratio of the two quantiles (the median, or
a low quantile such as p20) is taken each time. The RNG is seeded, so the same inputs always give
the same interval (and the same verdict). ``mann_whitney_p`` (scipy) is reported beside it as a
second, rank-based opinion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridexport.errors import InputFileError, shown

DEFAULT_CONFIDENCE = 0.99
DEFAULT_BOOTSTRAP = 2000
MIN_SAMPLES = 5  # fewer raw samples than this on either side: no statistical test, plain threshold
# a measured change must show in both: p20 resists intermittent background load, the median resists a
# lucky fast tail (see hybridexport.report.compare)
DEFAULT_STATISTIC = "p20+median"


@dataclass(frozen=True)
class RatioEstimate:
    """``new``/``base`` ratio of a quantile with a confidence interval (``lo`` ≤ ``ratio`` ≤ ``hi``)."""

    ratio: float
    lo: float
    hi: float
    confidence: float
    p_value: float | None = None  # two-sided Mann-Whitney U p-value, when computed

    @property
    def excludes_one(self) -> bool:
        return self.lo > 1.0 or self.hi < 1.0


def has_samples(samples: Sequence[float] | None, minimum: int = MIN_SAMPLES) -> bool:
    return samples is not None and len(samples) >= minimum


def parse_statistic(name: str) -> float:
    """``median`` → 0.5, ``p20`` → 0.2 (the quantile a comparison uses)."""
    s = str(name).strip().lower()
    if s == "median":
        return 0.5
    digits = s[1:]
    if s.startswith("p") and digits.isascii() and digits.isdigit() and len(digits) <= 2 and 1 <= int(digits) <= 99:
        return int(digits) / 100.0
    raise InputFileError(f"statistic {shown(str(name), 40)} is not 'median' or pNN (e.g. p20); use e.g. "
                         "--statistic p20+median, p20 or median")


def statistic_name(q: float) -> str:
    return "median" if q == 0.5 else f"p{round(100 * q)}"


def quantile(samples: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(samples, dtype=np.float64), q))


def bootstrap_ratio_ci(
    base: Sequence[float],
    new: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    q: float = 0.5,
) -> tuple[float, float, float]:
    """(ratio, lo, hi): ratio new/base of the ``q`` quantile (median by default) and its bootstrap interval."""
    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    if b.size == 0 or n.size == 0:
        raise ValueError("bootstrap needs samples on both sides")
    ratio = float(np.quantile(n, q) / np.quantile(b, q))
    rng = np.random.default_rng(seed)
    mb = np.quantile(b[rng.integers(0, b.size, size=(n_boot, b.size))], q, axis=1)
    mn = np.quantile(n[rng.integers(0, n.size, size=(n_boot, n.size))], q, axis=1)
    ratios = mn / mb
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return ratio, float(lo), float(hi)


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (NaN when scipy cannot compute it, e.g. all values equal)."""
    from scipy.stats import mannwhitneyu

    try:
        return float(mannwhitneyu(list(new), list(base), alternative="two-sided").pvalue)
    except ValueError:
        return math.nan


def ratio_of_quantiles(
    base: Sequence[float],
    new: Sequence[float],
    q: float = 0.5,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    with_p_value: bool = True,
) -> RatioEstimate:
    """Bootstrap CI of the ratio of the ``q`` quantiles (plus the Mann-Whitney p-value if asked)."""
    ratio, lo, hi = bootstrap_ratio_ci(base, new, confidence=confidence, n_boot=n_boot, seed=seed, q=q)
    p = mann_whitney_p(base, new) if with_p_value else None
    return RatioEstimate(ratio=ratio, lo=lo, hi=hi, confidence=confidence, p_value=p)


def classify(ratio: float, threshold: float, lo: float | None = None, hi: float | None = None) -> str:
    """``regression`` / ``improvement`` / ``unchanged``.

    A change counts only when it is beyond ``threshold`` (relative, e.g. 0.05) and, when an
    interval is given, the interval lies wholly on that side of 1 (statistically clear).
    """
    if not math.isfinite(ratio):
        return "unchanged"
    if ratio > 1.0 + threshold and (lo is None or lo > 1.0):
        return "regression"
    if ratio < 1.0 - threshold and (hi is None or hi < 1.0):
        return "improvement"
    return "unchanged"
