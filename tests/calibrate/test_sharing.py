"""The wall/CPU stretch of a run of a given length (a core shared with other work), measured and cached."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from hybridexport.calibrate import machine, sharing


class FakeClock:
    """A thread whose wall clock runs ``ratio`` times faster than its CPU clock (it gets 1/ratio of a core)."""

    def __init__(self, ratio: float) -> None:
        self.ratio, self.cpu = ratio, 0.0

    def thread_time(self) -> float:
        self.cpu += 1e-6
        return self.cpu

    def perf_counter(self) -> float:
        return self.cpu * self.ratio

    def time(self) -> float:
        return time.time()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path))
    return tmp_path


def test_buckets_are_a_root_two_grid_within_the_measured_range() -> None:
    assert sharing.bucket(0.0) == sharing.bucket(1e-6) == pytest.approx(sharing.MIN_S)
    assert sharing.bucket(10.0) == pytest.approx(sharing.MIN_S * math.sqrt(2) ** round(2 * math.log2(250)))
    for s in (0.0013, 0.004, 0.02, 0.09):
        b = sharing.bucket(s)
        assert 1 / 2**0.25 <= b / s <= 2**0.25  # within half a grid step
        assert sharing.bucket(b) == pytest.approx(b)


@pytest.mark.parametrize("ratio", [1.0, 2.0, 3.1])
def test_the_stretch_is_the_wall_over_cpu_ratio_of_the_blocks(monkeypatch, ratio: float) -> None:
    monkeypatch.setattr(sharing, "time", FakeClock(ratio))
    assert sharing.measure_stretch(0.002, repeats=5) == pytest.approx(ratio, rel=1e-2)


def test_a_thread_that_gets_the_whole_core_is_never_stretched_below_one(monkeypatch) -> None:
    monkeypatch.setattr(sharing, "time", FakeClock(0.9))  # clock jitter: wall below CPU
    assert sharing.measure_stretch(0.002, repeats=3) == 1.0


def test_a_measured_stretch_is_real_and_cached_per_length_until_it_is_old(cache: Path, monkeypatch) -> None:
    calls: list[float] = []
    real = sharing.measure_stretch

    def counted(seconds: float, repeats: int = sharing.REPEATS) -> float:
        calls.append(seconds)
        return real(seconds, repeats=3)

    monkeypatch.setattr(sharing, "measure_stretch", counted)
    v, block = sharing.stretch(0.002)
    assert v >= 1.0 and math.isfinite(v) and block == pytest.approx(sharing.bucket(0.002)) and len(calls) == 1
    assert sharing.stretch(0.0021) == (v, block) and len(calls) == 1  # same bucket: cached
    sharing.stretch(0.008)
    assert len(calls) == 2  # another length: measured
    for f in cache.glob("machine/stretch-*.json"):
        old = time.time() - machine.PROBE_MAX_AGE_S - 5
        os.utime(f, (old, old))
    sharing.stretch(0.002)
    assert len(calls) == 3
    (cache / "machine" / sharing._cache_path(block).name).write_text("{not json")  # corrupt: measured again
    sharing.stretch(0.002)
    assert len(calls) == 4
    sharing.forget()
    assert not list(cache.glob("machine/stretch-*.json"))
