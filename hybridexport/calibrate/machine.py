"""What machine a host calibration ran on, and how fast it is now: a fingerprint and a roofline probe.

Rules:

* :func:`fingerprint` reads the CPU (``/proc/cpuinfo``: model name, vendor, family/model/stepping, the
  speed-relevant flags of :data:`SPEED_FLAGS`), the logical cores and the threads used, the cache sizes
  (``/sys/devices/system/cpu/cpu0/cache``), the onnxruntime version and the 1-minute load average.
  Two fingerprints describe the same kind of machine when :func:`mismatch` is empty (CPU model, flags,
  arch and onnxruntime version equal); a probe can correct speed between those, not across them.
* :func:`probe` measures this machine's own roofline with ONNX Runtime at the calibration's settings
  (``threads`` intra-op threads, sequential, ORT_ENABLE_ALL; thread CPU time like ``calibrate
  --timer cpu``, or wall time): fp32 GEMM throughput (a 512³ MatMul, GFLOP/s) and memory bandwidth
  (an Add over 128 MB in, 128 MB out: four times a 32 MB L3, GB/s), each the median of its repeats.
  A repeat is a block of back-to-back runs lasting at least :data:`BLOCK_S` (longer than a scheduler
  time slice): a core shared with another process then shows as the share of it this thread gets, as it
  does for a model's inference, instead of a single short run that fits in one slice at full speed.
  Inputs and outputs are bound to buffers allocated once (IOBinding), so no repeat pays page faults for
  a fresh output. Its *spread* is the distribution-free 95 % confidence interval of that median (the
  order statistics around it, hi/lo): how far the figure itself can be off, which shrinks with more
  repeats, not the p90/p10 of single repeats (memory bandwidth in a VM varies ±20-40 % repeat to repeat
  on an idle machine).
  It takes 3-4 s; it is cached per boot (boot id + fingerprint + threads + timer) for at most
  :data:`PROBE_MAX_AGE_S` (load comes and goes within a boot) under
  ``$HYBRIDEXPORT_CACHE`` (default ``~/.cache/hybridexport``)/machine, written atomically, with its
  spread (a caller judges it against :data:`MAX_SPREAD`); a corrupt cache file is measured again.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.latency.costmodel import SECONDS_PARAMS

#: CPU flags that change how fast ONNX Runtime's kernels are (x86 vector/matrix units, Arm SIMD)
SPEED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp",
               "asimddp", "sve", "sve2", "i8mm", "bf16")
MAX_SPREAD = 1.10  # hi/lo of the 95 % CI of a probe's median beyond which the machine is too noisy to calibrate on
MEDIAN_Z = 1.96
GEMM_N = 512
PROBE_MAX_AGE_S = 600.0  # a cached probe is this boot's and this recent: a machine's load changes within a boot
BLOCK_S = 0.025  # a repeat's least duration: several scheduler slices (CFS gives a busy core's tasks 3-4 ms each)
COPY_ELEMS = 32 * 2**20  # 128 MB of fp32 read, 128 MB written
CPUINFO = Path("/proc/cpuinfo")
CACHE_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass
class Fingerprint:
    """The machine's identity as far as speed goes (``load_1m`` is a condition, not identity)."""

    cpu_model: str
    vendor: str = ""
    cpu_id: str = ""  # "family/model/stepping" (x86) or "implementer/part" (Arm): tells generations apart
    flags: list[str] = field(default_factory=list)  # the SPEED_FLAGS present
    arch: str = ""
    logical_cores: int = 0
    threads: int = 1
    caches: dict[str, str] = field(default_factory=dict)  # "L1d", "L1i", "L2", "L3" → "48K"
    onnxruntime: str = ""
    load_1m: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "fingerprint") -> Fingerprint:
        from hybridexport.records import structure

        return structure(d, cls, source, "run `hybridexport calibrate --device host` again")

    def key(self) -> str:
        """A hash of the identity fields (everything but the load)."""
        ident = {k: v for k, v in self.to_dict().items() if k != "load_1m"}
        return hashlib.sha256(repr(sorted(ident.items())).encode()).hexdigest()[:16]


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, vendor, cpu id, speed flags and processor count of a ``/proc/cpuinfo`` text."""
    first: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        k = k.lower()
        if k == "processor":
            processors += 1
        first.setdefault(k, v)
    flags = set((first.get("flags") or first.get("features") or "").split())
    if "cpu family" in first:
        cpu_id = "/".join(first.get(k, "?") for k in ("cpu family", "model", "stepping"))
    else:
        cpu_id = "/".join(first.get(k, "?") for k in ("cpu implementer", "cpu part")) if "cpu part" in first else ""
    model = first.get("model name") or first.get("hardware") or first.get("cpu model") or platform.processor()
    vendor = first.get("vendor_id", first.get("cpu implementer", ""))
    return {"cpu_model": model or platform.machine(), "vendor": vendor,
            "cpu_id": cpu_id, "flags": [f for f in SPEED_FLAGS if f in flags], "processors": processors}


def read_caches(root: Path = CACHE_SYSFS) -> dict[str, str]:
    """Cache sizes of cpu0 by level and type (``L1d``, ``L1i``, ``L2``, ``L3``); empty where sysfs lacks them."""
    out: dict[str, str] = {}
    for d in sorted(root.glob("index*")) if root.is_dir() else []:
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[f"L{level}{suffix}"] = size
    return out


def load_1m() -> float:
    """The 1-minute load average (0 where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def fingerprint(threads: int = 1, cpuinfo: str | None = None, cache_root: Path = CACHE_SYSFS) -> Fingerprint:
    """This machine's fingerprint (``cpuinfo``: a recorded ``/proc/cpuinfo`` text instead of this one's)."""
    import onnxruntime as ort

    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    info = parse_cpuinfo(cpuinfo)
    return Fingerprint(cpu_model=info["cpu_model"], vendor=info["vendor"], cpu_id=info["cpu_id"], flags=info["flags"],
                       arch=platform.machine(), logical_cores=os.cpu_count() or info["processors"] or 1,
                       threads=threads, caches=read_caches(cache_root), onnxruntime=ort.__version__, load_1m=load_1m())


def mismatch(calibrated: Fingerprint, here: Fingerprint) -> list[str]:
    """What differs beyond what a probe can correct (another CPU, other vector units, another runtime)."""
    out = []
    if (calibrated.cpu_model, calibrated.cpu_id) != (here.cpu_model, here.cpu_id):
        out.append(f"CPU {calibrated.cpu_model} ({calibrated.cpu_id or '?'}) → "
                   f"{here.cpu_model} ({here.cpu_id or '?'})")
    if calibrated.arch != here.arch:
        out.append(f"arch {calibrated.arch} → {here.arch}")
    lost, gained = sorted(set(calibrated.flags) - set(here.flags)), sorted(set(here.flags) - set(calibrated.flags))
    if lost or gained:
        out.append("CPU flags " + ", ".join([*(f"-{f}" for f in lost), *(f"+{f}" for f in gained)]))
    if calibrated.onnxruntime != here.onnxruntime:
        out.append(f"onnxruntime {calibrated.onnxruntime} → {here.onnxruntime}")
    return out


@dataclass
class Probe:
    """This machine's roofline at one thread count, and how steady it was while measured."""

    gemm_gflops: float
    bandwidth_gbs: float
    gemm_spread: float  # hi/lo of the 95 % confidence interval of the median (≥ 1)
    bandwidth_spread: float
    threads: int = 1
    timer: str = "cpu"  # "cpu": thread CPU time; "wall": perf_counter
    repeats: int = 0
    wall_over_cpu: float = 1.0  # median wall/CPU time of a repeat: > 1 when the thread waited for a core
    load_1m: float = 0.0
    seconds: float = 0.0  # how long the probe took
    when: str = ""

    @property
    def spread(self) -> float:
        return max(self.gemm_spread, self.bandwidth_spread)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "probe") -> Probe:
        from hybridexport.records import FieldError, finite, structure

        def number(v: Any, _t: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise FieldError("is not a number")
            return finite(float(v), "the value")

        fix = "run the probe again (delete the cache file)"
        p = structure(d, cls, source, fix, hooks={float: number})
        if min(p.gemm_gflops, p.bandwidth_gbs) <= 0 or min(p.gemm_spread, p.bandwidth_spread) < 1:
            raise InputFileError(f"{source}: a throughput ≤ 0 or a spread < 1 is not a probe's; {fix}")
        if p.threads < 1 or p.timer not in ("cpu", "wall"):
            raise InputFileError(f"{source}: threads {p.threads} or timer {p.timer!r} is not a probe's; {fix}")
        return p


def _ratio_spread(xs: list[float]) -> float:
    """hi/lo of the distribution-free confidence interval of the median of ``xs`` (order statistics
    n/2 ∓ z·√n/2)."""
    x = sorted(xs)
    n = len(x)
    half = MEDIAN_Z * math.sqrt(n) / 2
    lo, hi = x[max(0, math.floor(n / 2 - half))], x[min(n - 1, math.ceil(n / 2 + half) - 1)]
    return hi / lo if lo > 0 else math.inf


def _models() -> tuple[bytes, bytes]:
    import numpy as np
    import onnx
    import onnx.helper as oh
    import onnx.numpy_helper as onh

    def model(nodes: list[Any], inputs: list[Any], output: Any, inits: list[Any]) -> bytes:
        m = oh.make_model(oh.make_graph(nodes, "probe", inputs, [output], initializer=inits),
                          opset_imports=[oh.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()

    f = onnx.TensorProto.FLOAT
    n = GEMM_N
    w = onh.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) / n, "w")
    gemm = model([oh.make_node("MatMul", ["x", "w"], ["y"])], [oh.make_tensor_value_info("x", f, [n, n])],
                 oh.make_tensor_value_info("y", f, [n, n]), [w])
    one = onh.from_array(np.ones((1,), np.float32), "one")  # not 0: ORT removes an Add of zero
    copy = model([oh.make_node("Add", ["x", "one"], ["y"])], [oh.make_tensor_value_info("x", f, [COPY_ELEMS])],
                 oh.make_tensor_value_info("y", f, [COPY_ELEMS]), [one])
    return gemm, copy


def measure_probe(threads: int = 1, timer: str = "cpu", gemm_repeats: int = 41, copy_repeats: int = 61,
                  block_s: float = BLOCK_S) -> Probe:
    """Measure now (no cache): GEMM GFLOP/s and copy GB/s, the median of the repeats (blocks of runs lasting
    ≥ ``block_s``), each with its spread (95 % CI hi/lo)."""
    import numpy as np
    import onnxruntime as ort

    t_start = time.perf_counter()
    clock = time.thread_time_ns if timer == "cpu" else time.perf_counter_ns
    if timer == "cpu" and threads != 1:  # other intra-op threads' work is not on this thread's clock
        clock = time.perf_counter_ns
        timer = "wall"
    gemm_blob, copy_blob = _models()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    rng = np.random.default_rng(0)
    ratios: list[float] = []

    def times(blob: bytes, x: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        y = np.empty(tuple(sess.get_outputs()[0].shape), np.float32)
        bind = sess.io_binding()  # buffers allocated once: no repeat pays page faults for a new output
        bind.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
        bind.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
        w0 = time.perf_counter()
        for _ in range(warmup):
            sess.run_with_iobinding(bind)
        runs = max(1, math.ceil(block_s / max((time.perf_counter() - w0) / warmup, 1e-6)))
        out = []
        for _ in range(repeats):
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            t0 = clock()
            for _ in range(runs):
                sess.run_with_iobinding(bind)
            t = clock() - t0
            cpu = time.thread_time_ns() - c0
            ratios.append((time.perf_counter_ns() - w0) / cpu if cpu > 0 else 1.0)
            out.append(max(t, 1) / 1e9 / runs)
        return out

    g = times(gemm_blob, rng.standard_normal((GEMM_N, GEMM_N)).astype(np.float32), gemm_repeats)
    c = times(copy_blob, rng.standard_normal(COPY_ELEMS).astype(np.float32), copy_repeats)
    flops = 2.0 * GEMM_N**3
    moved = 2.0 * COPY_ELEMS * 4
    gf = [flops / t / 1e9 for t in g]
    gb = [moved / t / 1e9 for t in c]
    return Probe(gemm_gflops=statistics.median(gf), bandwidth_gbs=statistics.median(gb), gemm_spread=_ratio_spread(gf),
                 bandwidth_spread=_ratio_spread(gb), threads=threads, timer=timer, repeats=len(g) + len(c),
                 wall_over_cpu=statistics.median(ratios), load_1m=load_1m(),
                 seconds=time.perf_counter() - t_start, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def cache_dir() -> Path:
    base = os.environ.get("HYBRIDEXPORT_CACHE") or Path.home() / ".cache" / "hybridexport"
    return Path(base) / "machine"


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def cache_path(fp: Fingerprint, timer: str) -> Path:
    key = hashlib.sha256(f"{boot_id()}|{fp.key()}|{fp.threads}|{timer}".encode()).hexdigest()[:20]
    return cache_dir() / f"probe-{key}.json"


def recent(path: Path) -> bool:
    """Whether a cached figure at ``path`` exists and was written at most :data:`PROBE_MAX_AGE_S` ago."""
    try:
        return time.time() - path.stat().st_mtime <= PROBE_MAX_AGE_S
    except OSError:
        return False


def probe(threads: int = 1, timer: str = "cpu", fresh: bool = False) -> Probe:
    """This machine's probe at ``threads``: from the cache when it was measured this boot at most
    :data:`PROBE_MAX_AGE_S` ago and ``fresh`` is not set; otherwise measured now and cached."""
    import json

    from hybridexport.atomic import write_json

    path = cache_path(fingerprint(threads), timer)
    if not fresh and recent(path):
        try:
            return Probe.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError, InputFileError):
            pass  # corrupt or foreign: measured again below
    p = measure_probe(threads, timer)
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next call another second
        write_json(path, p.to_dict())
    return p


# --- calibration: refuse to fit on a busy or unsteady machine ---------------------------------------------

MAX_DRIFT = 0.10  # probes before and after a calibration may differ by this much
CALIBRATE = "hybridexport calibrate --device host"


def refusals_before(fp: Fingerprint, before: Probe) -> list[str]:
    """Why the machine is too busy to start calibrating (load average ≥ cores − 0.5, the probe's median uncertain by > 10 %)."""
    out = []
    if fp.load_1m >= fp.logical_cores - 0.5:
        out.append(f"1-minute load average {fp.load_1m:.2f} ≥ {fp.logical_cores} cores − 0.5")
    if before.spread > MAX_SPREAD:
        out.append(f"probe median uncertain by {(before.spread - 1) * 100:.0f}% (95% CI hi/lo) > {(MAX_SPREAD - 1) * 100:.0f}%")
    return out


def drift(before: Probe, after: Probe) -> float:
    """The largest relative change of a probe figure between two probes (0.12: 12 %)."""
    return max(abs(after.gemm_gflops / before.gemm_gflops - 1), abs(after.bandwidth_gbs / before.bandwidth_gbs - 1))


def timing_drift(round_ms: dict[str, list[float]], resamples: int = 2000) -> dict[str, Any] | None:
    """How the calibration's own timings moved from its first round to its last: the median over models
    of last/first round median, with a 95 % bootstrap interval over models (seeded: deterministic).
    None with fewer than 5 models timed in more than one round."""
    import numpy as np

    ratios = np.array([r[-1] / r[0] for r in round_ms.values() if len(r) > 1 and r[0] > 0])
    if len(ratios) < 5:
        return None
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    lo, hi = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
    return {"last_over_first": float(np.median(ratios)), "lo": lo, "hi": hi, "models": int(len(ratios))}


def refusals_after(before: Probe, after: Probe, timings: dict[str, Any] | None = None
                   ) -> tuple[list[str], list[str]]:
    """(refusals, conditions to record) once the measurements are done.

    Refused: the probe after is noisy; its GEMM figure (the core's speed, what work sharing the core takes)
    moved by more than :data:`MAX_DRIFT`; or the calibration's own timings drifted from the first round to the
    last by more than :data:`MAX_DRIFT` (the whole 95 % interval beyond it). The copy-bandwidth figure varies
    by ±11 % between idle probes on these VMs, so its drift alone is recorded (the band widens) when the
    timings themselves show no drift, and refused when there are no round timings to judge by."""
    refusals, noted = [], []
    if after.spread > MAX_SPREAD:
        refusals.append(f"probe median after uncertain by {(after.spread - 1) * 100:.0f}% (95% CI hi/lo) > "
                        f"{(MAX_SPREAD - 1) * 100:.0f}%")
    figures = (f"GEMM {before.gemm_gflops:.0f} → {after.gemm_gflops:.0f} GFLOP/s, bandwidth "
               f"{before.bandwidth_gbs:.1f} → {after.bandwidth_gbs:.1f} GB/s")
    gemm = abs(after.gemm_gflops / before.gemm_gflops - 1)
    d = drift(before, after)
    if gemm > MAX_DRIFT or (d > MAX_DRIFT and timings is None):
        refusals.append(f"probes before/after differ by {d * 100:.0f}% (> {MAX_DRIFT * 100:.0f}%: {figures})")
    elif d > MAX_DRIFT:
        noted.append(f"bandwidth probe before/after differ by {d * 100:.0f}% (> {MAX_DRIFT * 100:.0f}%: {figures}); "
                     f"the timings did not drift (last/first round ×{timings['last_over_first']:.3f})")
    if timings is not None and (timings["lo"] > 1 + MAX_DRIFT or timings["hi"] < 1 / (1 + MAX_DRIFT)):
        refusals.append(f"the timings drifted from the first round to the last: ×{timings['last_over_first']:.3f} "
                        f"[{timings['lo']:.3f}, {timings['hi']:.3f}] over {timings['models']} models "
                        f"(beyond ±{MAX_DRIFT * 100:.0f}%)")
    return refusals, noted


def refuse(reasons: list[str], when: str) -> None:
    """One-line MachineBusyError naming why and the way out."""
    from hybridexport.errors import MachineBusyError

    raise MachineBusyError(f"calibration refused {when}: " + "; ".join(reasons) + " — wait for a quiet machine, or "
                           "pass --allow-load to fit anyway (conditions recorded, band widened)")


def widen_band(band: dict[str, Any], before: Probe, after: Probe) -> float:
    """Widen a fitted band in place by the variation seen (largest probe spread, before/after change); returns
    the factor (≥ 1)."""
    w = max(before.spread, after.spread, 1 + drift(before, after), 1.0)
    band["p10_ratio"] = float(band.get("p10_ratio", 1.0)) / w
    band["p90_ratio"] = float(band.get("p90_ratio", 1.0)) * w
    band["widened_by"] = w
    band["meaning"] = str(band.get("meaning", "")) + f"; widened x{w:.2f} (calibrated under load, --allow-load)"
    return w


# --- prediction: rescale a host model's peaks to this machine ---------------------------------------------

def calibration_time() -> str:
    """How long a host calibration takes, from how it measures (see :mod:`hybridexport.calibrate.host`)."""
    from hybridexport.calibrate.host import HOST_TRAIN

    return (f"estimated ~10-15 min: {len(HOST_TRAIN)} models exported once (~4 min), each timed 3 rounds × 25 "
            "runs and profiled once (~4 min), then fitted; longer on a busy machine")


def _calibration_record(lm: dict[str, Any]) -> tuple[Fingerprint | None, Probe | None, str]:
    """The calibration's fingerprint and probe (geometric mean of before/after), or why there is none."""
    m = (lm.get("provenance") or {}).get("machine") or {}
    if not isinstance(m, dict) or "probe_before" not in m:
        return None, None, "records no speed probe"
    try:
        fp = Fingerprint.from_dict(m.get("fingerprint"), "latency_model.provenance.machine.fingerprint")
        b = Probe.from_dict(m["probe_before"], "latency_model.provenance.machine.probe_before")
        a = Probe.from_dict(m.get("probe_after", m["probe_before"]), "latency_model.provenance.machine.probe_after")
    except InputFileError as exc:
        return None, None, f"has an unreadable machine record ({exc})"
    mean = Probe(gemm_gflops=math.sqrt(b.gemm_gflops * a.gemm_gflops),
                 bandwidth_gbs=math.sqrt(b.bandwidth_gbs * a.bandwidth_gbs),
                 gemm_spread=max(b.gemm_spread, a.gemm_spread), bandwidth_spread=max(b.bandwidth_spread,
                                                                                     a.bandwidth_spread),
                 threads=b.threads, timer=b.timer, repeats=b.repeats + a.repeats, load_1m=max(b.load_1m, a.load_1m),
                 when=b.when)
    return fp, mean, ""


def adapt_to_this_machine(lm: dict[str, Any], device: str = "host", fresh: bool = False
                          ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A host latency model rescaled to this machine, what was compared, and one note line.

    With a calibration probe: ``peak_macs`` and ``fallback_macs`` scale by this machine's GEMM throughput over
    the calibration's, ``bandwidth`` by the bandwidth ratio, and the parameters that are CPU time per op or per
    inference (``costmodel.SECONDS_PARAMS``: dispatch, switch, reorder, row, overhead) by the inverse GEMM ratio (a core that
    runs a GEMM at half the speed runs the runtime's own code at half the speed); the fitted efficiencies stay.
    This machine's speed is probed on the thread's CPU clock (a calibration is refused unless its machine
    was quiet, so its CPU and wall figures agree): a core shared with another process is not a slower core,
    and the wall time it adds is measured apart, at the run's own length (:mod:`.sharing`, applied by the
    predicted runner). Without a calibration probe, or when the
    fingerprint differs beyond what a probe corrects (CPU, flags, arch, onnxruntime), the note says so and
    names the recalibration. ``fresh`` measures now instead of taking this boot's cached probe."""
    prov = lm.get("provenance") or {}
    cal_fp, cal, why = _calibration_record(lm)
    threads = cal.threads if cal else 1
    here_fp = fingerprint(threads)
    t0 = time.perf_counter()
    here = probe(threads, "cpu", fresh=fresh)
    took = time.perf_counter() - t0
    info: dict[str, Any] = {"probe": here.to_dict(), "probe_s": round(took, 3), "fingerprint": here_fp.to_dict(),
                            "calibration_probe": cal.to_dict() if cal else None}
    fix = f"run `{CALIBRATE}` here ({calibration_time()})"
    now = f"this machine: {here.gemm_gflops:.0f} GFLOP/s, {here.bandwidth_gbs:.1f} GB/s"
    if cal is None:
        cpu = ((prov.get("machine") or {}).get("cpu") or {}).get("model", "?")
        return lm, info, (f"the host latency model (calibrated on '{cpu}') {why}, so it cannot be rescaled to "
                          f"{now}; same-kind machines run one ONNX file 1.3-2.2x apart: {fix} for predictions of "
                          "this machine")
    g, b = here.gemm_gflops / cal.gemm_gflops, here.bandwidth_gbs / cal.bandwidth_gbs
    info["ratios"] = {"gemm": g, "bandwidth": b}
    info["mismatch"] = diffs = mismatch(cal_fp, here_fp) if cal_fp else ["no fingerprint recorded"]
    scaled = (f"the host latency model's peaks rescaled by probe to {now} vs {cal.gemm_gflops:.0f} GFLOP/s, "
              f"{cal.bandwidth_gbs:.1f} GB/s at calibration (compute x{g:.2f}, memory x{b:.2f})")
    noisy = (f"; this probe's median is uncertain by {(here.spread - 1) * 100:.0f}% (busy machine)" if here.spread > MAX_SPREAD
             else "")
    if diffs:
        note = (f"{scaled}, but this machine differs beyond what the probe corrects ({'; '.join(diffs)}): {fix}"
                f"{noisy}")
    else:
        note = scaled + noisy
    return rescaled(lm, g, b), info, note


def rescaled(lm: dict[str, Any], gemm: float, bandwidth: float, fallback: float | None = None) -> dict[str, Any]:
    """``lm`` on a unit ``gemm`` × as fast at GEMMs and ``bandwidth`` × at copies: peaks scale by the first,
    DRAM bandwidth by the second, the runtime's own seconds (``costmodel.SECONDS_PARAMS``) by 1/``gemm``, the
    fallback unit's peak by ``fallback`` (default ``gemm``: on a CPU it is the same core)."""
    dev = dict(lm["device"])
    dev["peak_macs"] = float(dev["peak_macs"]) * gemm
    dev["fallback_macs"] = float(dev["fallback_macs"]) * (gemm if fallback is None else fallback)
    dev["bandwidth"] = float(dev["bandwidth"]) * bandwidth
    params = {k: (float(v) / gemm if k in SECONDS_PARAMS else v) for k, v in lm["params"].items()}
    return {**lm, "device": dev, "params": params}
