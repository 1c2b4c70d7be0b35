"""How much longer than its CPU time a run of a given length takes here: a core shared with other work.

Rules:

* :func:`stretch` is the median wall/CPU-time ratio of :data:`REPEATS` CPU-bound blocks of this thread, each
  ``seconds`` of its CPU time: 1.0 on a quiet machine, about 2 when another busy process shares the core.
* It is measured at the run's own length, not once: a scheduler shares a core in slices of a few ms, so a
  run shorter than the other task's slice waits for all of it or for none, and a 4 ms inference on a shared
  core is stretched ×3 where a 25 ms one is stretched ×2 (``benchmarks/predictor_accuracy.py
  --only-portability --measure``).
* Lengths are bucketed a factor √2 apart; a bucket's figure is cached like the speed probe (this boot, at
  most :data:`~hybridexport.calibrate.machine.PROBE_MAX_AGE_S` old). It costs about ``REPEATS × seconds ×
  stretch`` of wall time.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from pathlib import Path

REPEATS = 11
MIN_S, MAX_S = 0.001, 0.25  # block lengths measured: shorter runs are priced as 1 ms, longer ones as 250 ms


def bucket(seconds: float) -> float:
    """The block length a run of ``seconds`` is measured with (a factor √2 grid, clamped to MIN_S..MAX_S)."""
    s = min(max(seconds, MIN_S), MAX_S)
    return MIN_S * math.sqrt(2) ** round(2 * math.log2(s / MIN_S))


def measure_stretch(seconds: float, repeats: int = REPEATS) -> float:
    """Median wall/CPU ratio of ``repeats`` blocks that each spin ``seconds`` of this thread's CPU time."""
    import numpy as np

    a, b = np.random.default_rng(0).standard_normal((2, 48, 48)).astype(np.float32)
    c = np.empty_like(a)
    ratios = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        while time.thread_time() - c0 < seconds:
            np.dot(a, b, out=c)
        cpu = time.thread_time() - c0
        ratios.append((time.perf_counter() - w0) / cpu if cpu > 0 else 1.0)
    return max(1.0, statistics.median(ratios))


def boot_id_prefix() -> str:
    """This boot's id, shortened, in the cache files' names."""
    from hybridexport.calibrate.machine import boot_id

    return boot_id()[:12] or "noboot"


def _cache_path(length: float) -> Path:
    from hybridexport.calibrate.machine import cache_dir

    return cache_dir() / f"stretch-{boot_id_prefix()}-{length * 1e6:.0f}us.json"


def stretch(seconds: float, fresh: bool = False) -> tuple[float, float]:
    """(wall/CPU ratio, block length measured) for a run of ``seconds`` CPU time here (see the module rules)."""
    from hybridexport.atomic import write_json
    from hybridexport.calibrate.machine import recent

    length = bucket(seconds)
    path = _cache_path(length)
    if not fresh and recent(path):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            v = float(json.loads(path.read_text(encoding="utf-8"))["stretch"])
            if math.isfinite(v) and v >= 1.0:
                return v, length
    v = measure_stretch(length)
    with contextlib.suppress(OSError):
        write_json(path, {"stretch": v, "block_s": length})
    return v, length


def forget() -> None:
    """Drop this boot's cached stretch figures (the next :func:`stretch` of each length measures again)."""
    from hybridexport.calibrate.machine import cache_dir

    for p in cache_dir().glob(f"stretch-{boot_id_prefix()}-*.json"):
        with contextlib.suppress(OSError):
            p.unlink()
