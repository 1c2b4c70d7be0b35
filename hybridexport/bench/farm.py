"""Device farms: many benchmark jobs in flight at once, bounded, each result recorded as it finishes.

A farm job spends minutes waiting for a hosted phone, so a suite of models × devices submits several
at once instead of one after another::

    from hybridexport.bench.farm import run_many
    outcomes = run_many(requests, max_in_flight=4, on_done=lambda o: print(o.index, o.profile or o.error))

Rules: at most ``max_in_flight`` items run at once (one thread each: the work is waiting on the farm);
``on_done`` is called in the caller's thread, in the order items finish; an item that raises (a failed
job, a timeout) becomes an outcome with its exception and the others go on; the returned list is in
input order. ``run`` defaults to a fresh ``qai-hub`` runner per request (runners keep options, so
threads never share one).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hybridexport.bench.profile import Profile
from hybridexport.errors import HybridExportError, InputFileError

#: runner names whose items a suite runs concurrently through :func:`run_many`
FARM_RUNNERS = ("qai-hub",)
DEFAULT_FARM_JOBS = 4

T = TypeVar("T")


@dataclass
class FarmOutcome(Generic[T]):
    """One item's result: its Profile, or the exception that stopped it, and how long it took."""

    index: int
    item: T
    profile: Profile | None
    error: BaseException | None
    seconds: float


def _run_request(request: Any) -> Profile:
    from hybridexport.bench.runners import get_runner

    return get_runner(FARM_RUNNERS[0]).run(request)


def _timed(run: Callable[[Any], Profile], item: Any) -> tuple[Profile | None, Exception | None, float]:
    """(profile, None, seconds) or (None, the exception, seconds), timed in the worker."""
    t0 = time.perf_counter()
    try:
        profile = run(item)
        if not isinstance(profile, Profile):
            raise HybridExportError(f"a farm job returned a {type(profile).__name__}, not a Profile")
        return profile, None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - one failed job is recorded; the others go on
        return None, exc, time.perf_counter() - t0


def run_many(
    items: Sequence[T],
    run: Callable[[T], Profile] | None = None,
    max_in_flight: int = DEFAULT_FARM_JOBS,
    on_done: Callable[[FarmOutcome[T]], None] | None = None,
) -> list[FarmOutcome[T]]:
    """Run every item (a ``BenchRequest`` by default) with at most ``max_in_flight`` at once."""
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise InputFileError(f"farm jobs in flight must be a whole number ≥ 1, got {max_in_flight!r}")
    fn = run or _run_request
    outcomes: dict[int, FarmOutcome[T]] = {}
    if not items:
        return []
    pool = cf.ThreadPoolExecutor(max_workers=min(max_in_flight, len(items)), thread_name_prefix="farm")
    try:
        started = {pool.submit(_timed, fn, item): (i, item) for i, item in enumerate(items)}
        for fut in cf.as_completed(started):
            i, item = started[fut]
            outcome = FarmOutcome(i, item, *fut.result())
            outcomes[i] = outcome
            if on_done is not None:
                on_done(outcome)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [outcomes[i] for i in range(len(items))]
