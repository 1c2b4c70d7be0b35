"""Timeouts for external device tools (adb, devicectl) and probes shared by everything in one report.

Rules:

* A *probe* (``adb devices``, ``getprop``, ``devicectl list``) answers in well under a second when the
  tool is healthy, so it gets a short timeout: ``probe_timeout`` option / ``$HYBRIDEXPORT_PROBE_TIMEOUT``
  (s, default 10).
* A *transfer* scales with the file: probe timeout + size at a pessimistic 2 MB/s (USB 2 with a slow
  phone).
* A *benchmark* scales with the work asked for: ``bench_timeout`` option / ``$HYBRIDEXPORT_BENCH_TIMEOUT``
  when given, else 120 s of set-up + 5 s per warm-up or timed run (a phone model slower than 5 s per
  inference is no mobile model).
* Inside :func:`probe_scope` a probe with the same key runs once, whatever thread asks: ``hybridexport
  devices`` checks every profile's runners in parallel, and the four Android profiles share one
  ``adb devices`` (a hung adb costs one probe timeout, not one per profile). Outside a scope nothing is
  cached, so a later command sees a phone plugged in meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hybridexport.errors import HybridExportError

PROBE_ENV = "HYBRIDEXPORT_PROBE_TIMEOUT"
BENCH_ENV = "HYBRIDEXPORT_BENCH_TIMEOUT"
DEFAULT_PROBE_S = 10.0
TRANSFER_BYTES_PER_S = 2e6
BENCH_SETUP_S = 120.0
BENCH_PER_RUN_S = 5.0

T = TypeVar("T")


def _seconds(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        s = float(value)
    except (TypeError, ValueError):
        s = math.nan
    if not math.isfinite(s) or s <= 0:
        raise HybridExportError(f"{what} must be a positive number of seconds, got {value!r}")
    return s


def probe_timeout(options: dict[str, Any] | None = None, default: float = DEFAULT_PROBE_S) -> float:
    """Seconds a device probe may take (see the module docstring); ``default`` when none is configured."""
    opts = options or {}
    return (_seconds(opts.get("probe_timeout"), "--probe-timeout")
            or _seconds(os.environ.get(PROBE_ENV), f"${PROBE_ENV}") or default)


def transfer_timeout(nbytes: int, options: dict[str, Any] | None = None) -> float:
    """Seconds to move ``nbytes`` to or from a device."""
    return probe_timeout(options) + max(0, nbytes) / TRANSFER_BYTES_PER_S


def bench_timeout(runs: int, warmup: int, options: dict[str, Any] | None = None) -> float:
    """Seconds one on-device benchmark of ``warmup`` + ``runs`` inferences may take."""
    opts = options or {}
    given = (_seconds(opts.get("bench_timeout"), "--bench-timeout")
             or _seconds(os.environ.get(BENCH_ENV), f"${BENCH_ENV}"))
    return given or BENCH_SETUP_S + BENCH_PER_RUN_S * (max(0, runs) + max(0, warmup))


class _Scope:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[tuple[Any, ...], threading.Lock] = {}
        self.results: dict[tuple[Any, ...], tuple[bool, Any]] = {}


_active: _Scope | None = None
_active_lock = threading.Lock()


@contextlib.contextmanager
def probe_scope() -> Iterator[None]:
    """Within the block, :func:`once` runs each probe key once (nested scopes share the outer one)."""
    global _active
    with _active_lock:
        outer, _active = _active, _active or _Scope()
    try:
        yield
    finally:
        with _active_lock:
            _active = outer


def once(key: tuple[Any, ...], probe: Callable[[], T]) -> T:
    """``probe()``, or inside a :func:`probe_scope` the result (or error) of its first call with ``key``.

    Threads asking for the same key while the first call runs wait for it rather than probing again.
    """
    scope = _active
    if scope is None:
        return probe()
    with scope.lock:
        key_lock = scope.keys.setdefault(key, threading.Lock())
    with key_lock:
        if key not in scope.results:
            try:
                scope.results[key] = (True, probe())
            except Exception as exc:  # noqa: BLE001 - replayed to every caller of the key
                scope.results[key] = (False, exc)
        ok, value = scope.results[key]
    if not ok:
        raise value
    return value
