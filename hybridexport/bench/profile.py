"""The Profile: one versioned JSON schema for per-layer latency from every runner.

A Profile holds end-to-end statistics and per-layer rows. Every row names the ``nn.Module`` path
it came from, so profiles of one model from different runtimes, or from before and after a
rewrite, compare layer by layer. ``obtained`` says whether the numbers were measured or predicted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport import modpath
from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json

SCHEMA_VERSION = 1
OBTAINED = ("measured", "predicted")


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    if not sorted_xs:
        return math.nan
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass
class Stats:
    """Time statistics in milliseconds.

    With raw ``samples`` they are the one truth: ``median``, ``p10``, ``p90`` and ``n`` are derived from
    them (whatever a file says). Without samples (a prediction, or a tool that reports summaries only)
    the given values stand.
    """

    median: float
    p10: float
    p90: float
    n: int
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.samples:
            self.samples = [float(x) for x in self.samples]
            xs = sorted(self.samples)
            self.median, self.p10, self.p90 = _quantile(xs, 0.5), _quantile(xs, 0.1), _quantile(xs, 0.9)
            self.n = len(xs)

    @classmethod
    def from_samples(cls, samples: list[float]) -> Stats:
        return cls(median=math.nan, p10=math.nan, p90=math.nan, n=0, samples=list(samples))

    @classmethod
    def point(cls, value: float, p10: float | None = None, p90: float | None = None, n: int = 1) -> Stats:
        """A single (e.g. predicted) value with an optional uncertainty band."""
        return cls(median=value, p10=value if p10 is None else p10, p90=value if p90 is None else p90, n=n, samples=[])


@dataclass
class LayerRow:
    """One runtime row (a node, op or module) with the nn.Module path it maps back to."""

    name: str  # the runtime's own name for the node/op
    op_type: str
    module: str  # nn.Module path ("" = could not be mapped; say so in Profile.notes)
    compute_unit: str  # "cpu", "gpu", "ane", "npu", "xnnpack", ...
    ms: Stats
    macs: int | None = None
    bytes: int | None = None
    share: float = 0.0  # fraction of the summed layer time
    module_source: str = ""  # how ``module`` was found (hybridexport.modpath.SOURCES)


@dataclass
class Profile:
    """Per-layer latency of one artifact on one device, measured or predicted."""

    model: str
    format: str  # "onnx" | "tflite" | "coreml" | "executorch" | "pytorch"
    device: str  # device profile name, e.g. "host", "iphone13"
    runner: str  # e.g. "host-onnxruntime", "android-adb", "predicted"
    obtained: str  # "measured" | "predicted"
    total_ms: Stats
    layers: list[LayerRow] = field(default_factory=list)
    artifact_sha256: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    method: str = ""  # how per-layer times were obtained (profiler, ETDump, op profiling, model)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # runner-specific data (e.g. prediction error)
    input_shapes: list[list[int]] = field(default_factory=list)  # the artifact's inputs (part of its identity)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.obtained not in OBTAINED:
            raise InputFileError(f"profile 'obtained' must be one of {OBTAINED}, got {self.obtained!r}")

    def fill_shares(self) -> None:
        """Set each row's ``share`` of the summed per-layer median time."""
        total = sum(r.ms.median for r in self.layers) or 1.0
        for r in self.layers:
            r.share = r.ms.median / total

    def layer_sum_ms(self) -> float:
        """Sum of the per-layer medians (compare with ``total_ms.median`` to see what the rows cover)."""
        return sum(r.ms.median for r in self.layers)

    def layer_total(self) -> Stats:
        """Statistics of the per-run sum of all rows (sum of medians when rows lack aligned samples)."""
        lengths = {len(r.ms.samples) for r in self.layers}
        if self.layers and len(lengths) == 1 and next(iter(lengths)) > 0:
            return Stats.from_samples([sum(v) for v in zip(*(r.ms.samples for r in self.layers))])
        s = self.layer_sum_ms()
        return Stats.point(s, sum(r.ms.p10 for r in self.layers), sum(r.ms.p90 for r in self.layers))

    def coverage(self) -> float:
        """How much of the end-to-end time the rows explain (1.0 = all of it).

        When the rows and the total kept per-run samples of the same runs (the host runners time a
        plain run and a profiled run alternately), it is the median over runs of layer total ÷ total,
        which stays stable on a busy machine where whole runs slow down; otherwise the ratio of medians.
        """
        lt = self.layer_total()
        t = self.total_ms
        if lt.samples and len(lt.samples) == len(t.samples) and all(x > 0 for x in t.samples):
            return _quantile(sorted(a / b for a, b in zip(lt.samples, t.samples)), 0.5)
        return lt.median / t.median if t.median else math.nan

    def by_module(self, depth: int | None = None) -> list[LayerRow]:
        """Rows summed per nn.Module path (cut to ``depth`` components); see :func:`aggregate_by_module`."""
        return aggregate_by_module(self.layers, depth)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        from hybridexport.atomic import write_text

        return write_text(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Profile:
        """A Profile from its JSON form, every field's type and every timing checked (numbers, finite, not
        negative; every end-to-end sample and the total positive; p10 ≤ median ≤ p90 without samples) and
        at least one layer: anything else is a one-line InputFileError."""
        if not isinstance(d, dict):
            raise InputFileError(f"{source}: a profile is a JSON object, not {type(d).__name__}; {REBENCH}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputFileError(
                f"{source}: profile schema_version {version!r} is not supported (expected {SCHEMA_VERSION}); "
                "re-run `hybridexport bench` with this version"
            )
        layers = d.get("layers")
        if not isinstance(layers, list) or not layers:
            raise InputFileError(f"{source}: the profile has no layers (empty or truncated); re-run `hybridexport "
                                 "bench --json`")
        if d.get("obtained") not in OBTAINED:
            raise InputFileError(f"{source}: profile 'obtained' must be one of {OBTAINED}, got {d.get('obtained')!r}; "
                                 f"{REBENCH}")
        from hybridexport.records import structure

        body = {k: v for k, v in d.items() if k != "schema_version"}
        prof = structure(body, cls, source, REBENCH, hooks={Stats: _stats_hook})
        t = prof.total_ms
        if t.median <= 0 or any(x <= 0 for x in t.samples):
            raise InputFileError(f"{source}: $.total_ms has a time ≤ 0 (median {t.median!r}); an end-to-end time is "
                                 f"positive; the profile is corrupt ({REBENCH})")
        for i, r in enumerate(prof.layers):
            where = f"{source}: $.layers[{i}]"
            if not 0 <= r.share < math.inf or (r.macs is not None and r.macs < 0) or (r.bytes is not None and r.bytes < 0):
                raise InputFileError(f"{where} has a negative or non-finite share, macs or bytes; {REBENCH}")
        if any(not s or any(x < 1 for x in s) for s in prof.input_shapes):
            raise InputFileError(f"{source}: $.input_shapes {prof.input_shapes!r} has an empty shape or a size < 1; "
                                 f"{REBENCH}")
        return prof

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        data = read_json(path, "profile", "pass a file written by `hybridexport bench --json`", expect_object=True)
        return cls.from_dict(data, source=str(Path(path)))


REBENCH = "re-run `hybridexport bench --json`"


def _stats_hook(d: Any, _t: Any) -> Stats:
    """Stats from JSON with every value checked; raw samples (when given) are checked and become the truth."""
    from hybridexport.records import FieldError, finite

    if not isinstance(d, dict):
        raise FieldError("is not a statistics object ({median, p10, p90, n, samples})")
    unknown = sorted(set(d) - {"median", "p10", "p90", "n", "samples"})
    if unknown:
        raise FieldError(f"has unknown key(s) {unknown[:5]}")
    samples = d.get("samples") or []
    if not isinstance(samples, list):
        raise FieldError("samples is not a list")
    xs = _samples(samples)
    if xs:
        return Stats.from_samples(xs)
    vals = {k: finite(_num(d.get(k), k), k) for k in ("median", "p10", "p90")}
    n = d.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise FieldError(f"n is {n!r}, not a count")
    lo, mid, hi = vals["p10"], vals["median"], vals["p90"]
    if not lo <= mid * (1 + 1e-9) or not mid <= hi * (1 + 1e-9):
        raise FieldError(f"has p10 {lo:g}, median {mid:g}, p90 {hi:g}, not p10 ≤ median ≤ p90")
    return Stats(median=mid, p10=lo, p90=hi, n=n)


def _samples(samples: list[Any]) -> list[float]:
    """Raw timings as floats, each a finite number ≥ 0 (FieldError naming the first that is not)."""
    from hybridexport.records import FieldError

    try:
        if all(type(x) is float or type(x) is int for x in samples):
            xs = [float(x) for x in samples]
            if all(0.0 <= x < math.inf for x in xs):  # NaN fails the comparison
                return xs
    except OverflowError:
        pass
    for i, x in enumerate(samples):
        v = _num(x, f"samples[{i}]")
        if not 0.0 <= v < math.inf:
            raise FieldError(f"samples[{i}] is {v!r}, not a number ≥ 0")
    raise AssertionError("unreachable")  # pragma: no cover


def measured_samples(samples: Any, what: str) -> list[float]:
    """Raw timings a tool returned (ms) as floats: a list of finite numbers ≥ 0 (numpy scalars taken as
    numbers), else one InputFileError naming ``what`` — a runner's measurement obeys a loaded profile's rules."""
    from hybridexport.records import FieldError

    if not isinstance(samples, list | tuple):
        raise InputFileError(f"{what}: the timings are {type(samples).__name__}, not a list; the measurement is damaged")
    xs = [x.item() if hasattr(x, "item") and not isinstance(x, int | float) else x for x in samples]
    try:
        return _samples(xs)
    except FieldError as exc:
        raise InputFileError(f"{what}: {exc}; the measurement is damaged") from None


def _num(value: Any, what: str) -> float:
    from hybridexport.records import FieldError

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"{what} is {value!r}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise FieldError(f"{what} is a number too large for a float") from None


def aggregate_by_module(layers: list[LayerRow], depth: int | None = None) -> list[LayerRow]:
    """Sum rows that share an nn.Module path (cut to ``depth`` components), in first-seen order.

    Per-run samples are summed run by run when every row in a group kept the same number of
    samples, so the aggregated row's median/p10/p90 are those of the per-run sums; otherwise the
    medians (and p10/p90) are added. Unmapped rows (``module == ""``) stay one group per row name.
    The result's ``op_type`` lists the distinct op types, ``compute_unit`` the distinct units.
    """
    groups: dict[str, list[LayerRow]] = {}
    for row in layers:
        key = modpath.cut(row.module, depth) if row.module else f"<unmapped>/{row.name}"
        groups.setdefault(key, []).append(row)
    out: list[LayerRow] = []
    for key, rows in groups.items():
        lengths = {len(r.ms.samples) for r in rows}
        if len(lengths) == 1 and next(iter(lengths)) > 0:
            ms = Stats.from_samples([sum(v) for v in zip(*(r.ms.samples for r in rows))])
        else:
            ms = Stats(
                median=sum(r.ms.median for r in rows),
                p10=sum(r.ms.p10 for r in rows),
                p90=sum(r.ms.p90 for r in rows),
                n=min(r.ms.n for r in rows),
            )
        macs = [r.macs for r in rows if r.macs is not None]
        nbytes = [r.bytes for r in rows if r.bytes is not None]
        out.append(LayerRow(
            name=key if rows[0].module else rows[0].name,
            op_type=",".join(dict.fromkeys(r.op_type for r in rows if r.op_type)),
            module=key if rows[0].module else "",
            compute_unit=",".join(dict.fromkeys(r.compute_unit for r in rows if r.compute_unit)),
            ms=ms,
            macs=sum(macs) if macs else None,
            bytes=sum(nbytes) if nbytes else None,
            share=sum(r.share for r in rows),
        ))
    return out
