"""TFLite/LiteRT ``benchmark_model --enable_op_profiling=true`` text output.

Two layouts are in the field: older builds print a ``[start]`` column (tab-separated), newer
ones drop it (space-aligned, lines prefixed ``INFO:``)::

    Operator-wise Profiling Info for Regular Benchmark Runs:
    ============================== Run Order ==============================
        [node type]  [start]  [first]  [avg ms]  [%]  [cdf%]  [mem KB]  [times called]  [Name]
        CONV_2D      0.066    87.754   60.957    2.066%  ...   1        [MobilenetV1/.../Relu6]:0

``[avg ms]`` is per call; a row's time per inference is ``avg ms × times called``. Rows of
delegated XNNPACK operators are named ``Delegate/<XNNPACK op>:<index>``; rows of a whole delegated
partition (GPU, NNAPI) have node type ``TfLiteGpuDelegateV2`` / ``TfLiteNnapiDelegate`` and list the
partition's output tensors in the name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hybridexport.errors import InputFileError

SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?"
_STATS = re.compile(r"count=(\d+)(?:\s+first=(\S+))?\s+curr=(\S+)(?:\s+min=(\S+)\s+max=(\S+)\s+avg=(\S+)\s+std=(\S+))?")
_PREFIX = re.compile(r"^(?:INFO|WARNING|I\d+ [\d:.]+\s+\d+\s+\S+\]):?\s?")


@dataclass
class OpRow:
    node_type: str
    name: str  # the [Name] column, e.g. "[MobilenetV1/Conv2d_0/Relu6]:0" or "Delegate/Add (ND, QS8):9"
    first_ms: float
    avg_ms: float  # per call
    pct: float
    mem_kb: float
    times_called: int
    start_ms: float | None = None  # only in the older layout

    @property
    def ms_per_run(self) -> float:
        return self.avg_ms * self.times_called

    @property
    def tensor_names(self) -> list[str]:
        """Output tensor names inside ``[...]`` (empty for XNNPACK delegate rows)."""
        m = re.match(r"^\[(.*)\]:\d+$", self.name)
        return [t.strip() for t in m.group(1).split(", ")] if m else []

    @property
    def node_index(self) -> int | None:
        m = re.search(r":(\d+)$", self.name)
        return int(m.group(1)) if m else None


@dataclass
class RunStats:
    count: int
    first_us: float | None
    curr_us: float
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None


@dataclass
class BenchmarkModelOutput:
    rows: list[OpRow]
    layout: str  # "with-start" (older) | "without-start" (newer)
    inference: RunStats | None  # the regular benchmark runs
    profiled: RunStats | None  # the "Timings (microseconds)" line under the operator table
    init_ms: float | None = None
    nodes_executed: int | None = None
    settings: dict[str, str] = field(default_factory=dict)  # "Num threads: [1]" etc.

    @property
    def total(self) -> RunStats:
        stats = self.inference or self.profiled
        if stats is None:
            raise InputFileError("benchmark_model output has no run timings (parsed with require_total=False)")
        return stats


def _clean(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1)


def _time(text: str, what: str, source: str) -> float:
    """A time or count from the output: a finite number ≥ 0, else InputFileError."""
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise InputFileError(f"{source}: {what} is {text!r}, not a time ≥ 0 (damaged output?)")
    return value


def _count(text: str, what: str, source: str) -> int:
    """A count from the output: ASCII digits, at most 18 of them (int() refuses over 4300), else InputFileError."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise InputFileError(f"{source}: {what} is {text[:30]!r}, not a count (damaged output?)")
    return int(text)


def _run_stats(line: str, source: str = "benchmark_model output") -> RunStats | None:
    """``count=N first=.. curr=.. min=.. max=.. avg=.. std=..`` (µs); values checked, min ≤ avg ≤ max."""
    m = _STATS.search(line)
    if not m:
        return None
    names = ("first", "curr", "min", "max", "avg", "std")
    f = [None if g is None else _time(g, f"'{n}='", source) for n, g in zip(names, m.groups()[1:])]
    st = RunStats(_count(m.group(1), "'count='", source), f[0], f[1], f[2], f[3], f[4], f[5])
    if st.avg_us is not None and not st.min_us <= st.avg_us <= st.max_us:
        raise InputFileError(f"{source}: run timings have min {st.min_us:g} ≤ avg {st.avg_us:g} ≤ max "
                             f"{st.max_us:g} broken (damaged output?)")
    return st


def parse_benchmark_model(text: str, source: str = "benchmark_model output", require_total: bool = True) -> BenchmarkModelOutput:
    """Parse the whole stdout of one benchmark_model run with op profiling.

    ``require_total=False`` also accepts a bare operator table (as quoted in docs and issues),
    without the run timings that follow it in a complete output.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputFileError(f"{source} is empty; did benchmark_model run at all?")
    lines = [_clean(ln) for ln in text.splitlines()]
    try:
        start = next(i for i, ln in enumerate(lines) if SECTION in ln)
    except StopIteration:
        raise InputFileError(
            f"{source} has no '{SECTION[:-1]}' table; run benchmark_model with --enable_op_profiling=true"
        ) from None
    settings = {}
    inference = None
    init_ms = None
    for ln in lines[:start]:
        m = re.match(r"^([A-Za-z#][^:\[]*): \[(.*)\]$", ln.strip())
        if m:
            settings[m.group(1).strip()] = m.group(2)
        st = _run_stats(ln, source)
        if st and st.avg_us is not None:
            inference = st  # the last full line before the tables is the regular benchmark run
        m = re.search(r"Inference timings in us: Init: ([\d.e+]+)", ln)
        if m:
            init_ms = _time(m.group(1), "Init", source) / 1000.0
    try:
        header_i = next(i for i in range(start + 1, min(start + 4, len(lines))) if "[node type]" in lines[i])
    except StopIteration:
        raise InputFileError(f"{source}: the operator table after line {start + 1} has no '[node type]' header (truncated?)") from None
    cols = re.findall(r"\[([^\]]+)\]", lines[header_i])
    needed = {"node type", "first", "avg ms", "%", "mem KB", "times called", "Name"}
    if not needed <= set(cols) or cols[0] != "node type" or cols[-1] != "Name" or len(set(cols)) != len(cols):
        raise InputFileError(f"{source}: unexpected operator-table columns {cols} (line {header_i + 1})")
    numeric = cols[1:-1]
    row_re = re.compile(r"^\s*(?P<type>\S.*?)\s+(?P<nums>(?:" + _NUM + r"\s+){" + str(len(numeric)) + r"})(?P<name>\S.*)$")
    rows: list[OpRow] = []
    i = header_i + 1
    while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("==="):
        ln = lines[i]
        m = row_re.match(ln)
        if not m:
            raise InputFileError(f"{source}: cannot read operator row at line {i + 1}: {ln.strip()[:80]!r} (truncated?)")
        vals = {c: _time(v, f"[{c}] at line {i + 1}", source) for c, v in zip(numeric, m.group("nums").split())}
        if vals["times called"] != int(vals["times called"]):
            raise InputFileError(f"{source}: [times called] at line {i + 1} is {vals['times called']:g}, not a count")
        rows.append(OpRow(
            node_type=m.group("type").strip(),
            name=m.group("name").strip(),
            first_ms=vals["first"],
            avg_ms=vals["avg ms"],
            pct=vals["%"],
            mem_kb=vals["mem KB"],
            times_called=int(vals["times called"]),
            start_ms=vals.get("start"),
        ))
        i += 1
    if not rows:
        raise InputFileError(f"{source}: the operator table has no rows (truncated output?)")
    if i >= len(lines) and require_total:
        raise InputFileError(f"{source}: output ends inside the operator table (line {i}); it was truncated")
    profiled = None
    nodes = None
    for ln in lines[i:]:
        m = re.search(r"Number of nodes executed: (\d+)", ln)
        if m and nodes is None:
            nodes = _count(m.group(1), "'Number of nodes executed'", source)
        if ln.startswith("Timings (microseconds):") and profiled is None:
            profiled = _run_stats(ln, source)
    if inference is None and profiled is None and require_total:
        raise InputFileError(f"{source}: no run timings ('count=... avg=...') found; the output looks truncated")
    return BenchmarkModelOutput(
        rows=rows,
        layout="with-start" if "start" in numeric else "without-start",
        inference=inference,
        profiled=profiled,
        init_ms=init_ms,
        nodes_executed=nodes,
        settings=settings,
    )
