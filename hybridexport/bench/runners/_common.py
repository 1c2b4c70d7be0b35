"""Helpers shared by the measuring runners: timing loops, environment records, inputs, source model."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.errors import RunnerUnavailableError

if TYPE_CHECKING:
    from hybridexport.bench.runners import BenchRequest

HOST_ONLY = "runs on this machine only"


def host_only(device: Any, module: str | None = None, package: str | None = None) -> tuple[bool, str]:
    """Availability for host runners: (True, "") for the host profile with ``module`` importable
    (``package``: its pip name), else why not."""
    if device.kind != "host":
        return False, f"{HOST_ONLY} (device '{device.name}' is an {device.kind} device)"
    if module is not None and not have_module(module):
        return False, f"{package} is not installed (pip install {package})"
    return True, ""


def have_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def host_environment(threads: int, **extra: Any) -> dict[str, Any]:
    """OS, CPU model, cores, Python, thread count, plus runtime-specific fields."""
    from hybridexport.bench.devices import host_facts

    facts = host_facts()
    return {
        "os": facts["os"],
        "cpu_model": facts["cpu"]["model"],
        "cpu_cores": facts["cpu"]["cores"],
        "arch": facts["cpu"]["arch"],
        "python": platform.python_version(),
        "threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        **extra,
    }


def time_runs(
    fn: Callable[[], Any],
    runs: int,
    warmup: int,
    tick: Callable[[int], None] | None = None,
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times; return each timed call in ms."""
    for _ in range(warmup):
        fn()
        if tick:
            tick(1)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if tick:
            tick(1)
    return out


@contextlib.contextmanager
def elevated_priority(nice: int = -10) -> Iterator[str]:
    """Run the measurement at a higher scheduling priority when allowed (root / CAP_SYS_NICE).

    On a shared machine other processes otherwise preempt the benchmark mid-run and inflate wall
    times (by ~2x on a busy 2-core box). Yields what happened, for ``Profile.environment``; the
    previous priority is restored afterwards.
    """
    if not hasattr(os, "getpriority"):
        yield "unchanged (not supported here)"
        return
    old = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(old, nice))
    except OSError:
        yield f"unchanged (nice {old}; raising it needs CAP_SYS_NICE)"
        return
    try:
        yield f"nice {os.getpriority(os.PRIO_PROCESS, 0)} during measurement"
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, old)


def time_interleaved(
    timed: Callable[[], Any],
    traced: Callable[[], Any],
    runs: int,
    warmup: int,
    tick: Callable[[int], None] | None = None,
    cpu: list[float] | None = None,
) -> list[float]:
    """Alternate a timed call (wall ms returned) with a traced (profiled) call, ``warmup`` + ``runs`` times.

    Interleaving puts the end-to-end and the per-layer measurements under the same machine load.
    The first ``warmup`` of each are discarded (the traced ones by the caller, which sees every
    traced run). When ``cpu`` is given, the calling thread's CPU time of each timed call is appended
    to it: with one thread the runtimes compute on the calling thread, so this is the time the
    model needed, without the time a busy machine kept it waiting.
    """
    out = []
    for i in range(warmup + runs):
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        timed()
        dt = (time.perf_counter_ns() - t0) / 1e6
        dc = (time.thread_time_ns() - c0) / 1e6
        traced()
        if i >= warmup:
            out.append(dt)
            if cpu is not None:
                cpu.append(dc)
        if tick:
            tick(1)
    return out


def ticker(request: BenchRequest) -> Callable[[int], None] | None:
    """The progress callback the bench command put in ``options['progress']`` (or None)."""
    cb = request.options.get("progress")
    return cb if callable(cb) else None


def artifact(request: BenchRequest, fmt: str) -> Path:
    """The artifact path of the request, checked to exist and to have the expected format."""
    path, kind = request.artifact_path(), request.artifact_format()
    if path is None:
        raise RunnerUnavailableError(f"this runner needs a {fmt} artifact; run `hybridexport convert MODEL --to {fmt}`")
    if kind != fmt:
        raise RunnerUnavailableError(f"this runner runs {fmt} artifacts, not {kind} ({path})")
    if not path.exists():
        raise RunnerUnavailableError(f"artifact {path} does not exist; re-run `hybridexport convert`")
    return path


def random_input(shape: tuple[int, ...] | list[int], dtype: str = "float32", seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.standard_normal(tuple(int(d) for d in shape)).astype(dtype)


def layer_summary(profile: Any, traced_run_ms: list[float] | None = None,
                  cpu_ms: list[float] | None = None, traced_rows_ms: list[float] | None = None) -> dict[str, Any]:
    """What the rows cover, for ``Profile.extra``.

    ``layer_total_ms``: median per-run sum of the rows; ``coverage``: the same runs' layer total ÷
    wall total (median of ratios); ``total_cpu_ms``: thread CPU time of the timed runs (see
    :func:`time_interleaved`); ``cpu_coverage``: sum of the row medians ÷ median CPU time.

    On a busy machine the two answer differently: ``coverage`` cancels load shared by the paired
    runs but not a profiled run's extra exposure (ORT profiling doubles the wall time of models with
    hundreds of tiny kernels); ``cpu_coverage`` leaves out waiting, except inside long ops (which
    get preempted even in their median). On an idle machine both are ~1.

    ``traced_coverage`` (with ``traced_rows_ms``, the rows' raw total in each profiled run): the median
    over profiled runs of that total ÷ the same run's duration. Both come from one run, so load cancels
    except for waits between rows; rows missing or counted twice move it away from (just under) 1.
    """
    lt = profile.layer_total()
    out: dict[str, Any] = {
        "layer_total_ms": round(lt.median, 4),
        "layer_sum_of_medians_ms": round(profile.layer_sum_ms(), 4),
        "coverage": round(profile.coverage(), 4),
    }
    if cpu_ms:
        from hybridexport.bench.profile import Stats

        c = Stats.from_samples(cpu_ms)
        out["total_cpu_ms"] = {"median": round(c.median, 4), "p10": round(c.p10, 4), "p90": round(c.p90, 4), "n": c.n}
        out["cpu_coverage"] = round(profile.layer_sum_ms() / c.median, 4) if c.median else None
    if traced_run_ms:
        import statistics

        out["traced_run_ms_median"] = round(statistics.median(traced_run_ms), 4)
        if traced_rows_ms and len(traced_rows_ms) == len(traced_run_ms):
            ratios = [a / b for a, b in zip(traced_rows_ms, traced_run_ms, strict=True) if b > 0]
            out["traced_coverage"] = round(statistics.median(ratios), 4) if ratios else None
    return out
