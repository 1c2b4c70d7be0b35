"""Running a suite: every item benchmarked (or its failure recorded), conversions in parallel, timings alone."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.bench.results import SuiteFailure, SuiteResult
from hybridexport.bench.suite.spec import SuiteItem, load_suite
from hybridexport.errors import HybridExportError, InputFileError

BenchFn = Callable[[SuiteItem], Profile]


def _default_bench(item: SuiteItem, artifacts: str | Path | None = None) -> Profile:
    """Benchmark one item with the bench stage's public function (converting the artifact if needed)."""
    from hybridexport.bench import bench

    kwargs = item.bench_kwargs()
    if artifacts is not None:
        kwargs["out"] = Path(artifacts)
    result = bench(item.model_ref, **kwargs)
    if isinstance(result, list):  # one Profile per artifact
        if len(result) != 1:
            raise HybridExportError(f"bench returned {len(result)} profiles for {item.key}; expected one")
        result = result[0]
    return result


def _environment() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count()}


def _prepare(item: SuiteItem, artifacts: str | Path | None = None) -> None:
    """Convert (or find) the item's artifact and check a runner can serve it, without benchmarking."""
    from hybridexport.bench import plan
    from hybridexport.bench.devices import load_device
    from hybridexport.export.manifest import DEFAULT_OUT

    plan(item.model_ref, load_device(item.device), item.format, item.runner, Path(artifacts or DEFAULT_OUT),
         item.precision, item.resolution, item.checkpoint, {},
         [list(s) for s in item.input_shapes] if item.input_shapes else None)


def _worker_init() -> None:  # pragma: no cover - runs in the worker processes
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _task(item: SuiteItem, artifacts: str | Path | None, bench_it: bool,
          bench_fn: BenchFn | None = None, prepare_fn: Callable[[SuiteItem], None] | None = None) -> Any:
    """One parallel-phase task: benchmark a predicted item, or only prepare a measured item's artifact.

    Returns (profile or its dict or None, seconds it took in the worker).
    """
    t0 = time.perf_counter()
    if bench_it:
        profile = bench_fn(item) if bench_fn else _default_bench(item, artifacts)
        # a dict crosses the process boundary cheaply
        return (profile if bench_fn else profile.to_dict()), time.perf_counter() - t0
    if prepare_fn:
        prepare_fn(item)
    else:
        _prepare(item, artifacts)
    return None, time.perf_counter() - t0


def _failure(item: SuiteItem, exc: BaseException) -> SuiteFailure:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SuiteFailure(model=item.model, device=item.device, format=item.format, reason=reason,
                        runner=item.runner or "", error=type(exc).__name__)


def run_suite_file(
    path: str | Path,
    out: str | Path | None = None,
    bench_fn: BenchFn | None = None,
    only: list[str] | None = None,
    on_item: Callable[[SuiteItem, Profile | None, SuiteFailure | None, float], None] | None = None,
    artifacts: str | Path | None = None,
    jobs: int = 1,
    prepare_fn: Callable[[SuiteItem], None] | None = None,
    farm_jobs: int | None = None,
) -> SuiteResult:
    """Run every item of the suite at ``path``; write the results JSON to ``out`` when given.

    ``only`` keeps items whose model, device or format is in it; ``artifacts`` is where exported
    artifacts are found or converted to (default: the bench stage's). A HybridExportError (or any
    converter exception) for one item is recorded as a failure with its reason; the suite goes on.

    ``jobs > 1`` first runs, in that many worker processes, every item whose runner is ``predicted``
    and the conversion of every other item's artifact (conversions dominate a suite's time); the
    measured items are then benchmarked one at a time, with nothing else running.

    Items whose runner is a device farm (``qai-hub``) run concurrently instead, at most ``farm_jobs``
    (else the suite's ``[defaults] farm_jobs``, else 4) in flight, each recorded as it finishes.
    """
    suite = load_suite(path)
    items = [i for i in suite.items if not only or {i.model, i.device, i.format} & set(only)]
    if only and not items:
        raise InputFileError(f"--only {only} matches nothing in {path}")
    if jobs < 1:
        raise InputFileError(f"--jobs must be at least 1, got {jobs}")
    if farm_jobs is not None and farm_jobs < 1:
        raise InputFileError(f"--farm-jobs must be at least 1, got {farm_jobs}")
    result = SuiteResult(suite=suite.name, created=datetime.now(UTC).isoformat(timespec="seconds"),
                         source=str(path), environment=_environment())
    done: dict[int, Profile | SuiteFailure] = {}
    t0 = time.perf_counter()

    def record(i: int, item: SuiteItem, outcome: Profile | SuiteFailure, seconds: float) -> None:
        done[i] = outcome
        result.item_seconds[item.key] = result.item_seconds.get(item.key, 0.0) + seconds
        if on_item and (isinstance(outcome, SuiteFailure) or i not in pending_measure):
            on_item(item, outcome if isinstance(outcome, Profile) else None,
                    outcome if isinstance(outcome, SuiteFailure) else None, result.item_seconds[item.key])

    pending_measure: set[int] = set()
    if jobs > 1 and len(items) > 1:
        import concurrent.futures as cf
        import multiprocessing

        custom = bench_fn is not None or prepare_fn is not None  # test doubles: threads (no pickling)
        pool = (cf.ThreadPoolExecutor(max_workers=jobs) if custom else
                cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init))
        with pool:
            futures = {}
            for i, item in enumerate(items):
                predicted = item.runner == "predicted"
                if not predicted:
                    pending_measure.add(i)
                fut = pool.submit(_task, item, artifacts, predicted, bench_fn, prepare_fn)
                futures[fut] = (i, item, time.perf_counter())
            for fut in cf.as_completed(futures):
                i, item, submitted = futures[fut]
                try:
                    value, seconds = fut.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded as the item's failure
                    pending_measure.discard(i)
                    record(i, item, _failure(item, exc), time.perf_counter() - submitted)
                    continue
                if i not in pending_measure:
                    profile = value if isinstance(value, Profile) else Profile.from_dict(value, source=item.key)
                    record(i, item, profile, seconds)
                else:
                    result.item_seconds[item.key] = seconds
    else:
        pending_measure = set(range(len(items)))
    fn = bench_fn or (lambda item: _default_bench(item, artifacts))
    _run_farm_items(items, pending_measure, fn, record, artifacts, prepare_fn,
                    farm_jobs or suite.farm_jobs, convert_first=bench_fn is None and not (jobs > 1 and len(items) > 1))
    for i in sorted(pending_measure):
        item = items[i]
        t_item = time.perf_counter()
        try:
            profile = fn(item)
            if not isinstance(profile, Profile):
                raise HybridExportError(f"bench returned a {type(profile).__name__}, not a Profile")
            outcome: Profile | SuiteFailure = profile
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing item must not stop the suite; its reason is kept
            outcome = _failure(item, exc)
        pending_measure.discard(i)
        record(i, item, outcome, time.perf_counter() - t_item)
    for i in range(len(items)):  # suite order, whatever order they finished in
        if isinstance(done[i], Profile):
            result.profiles.append(done[i])
        else:
            result.failures.append(done[i])
    result.seconds = time.perf_counter() - t0
    if out is not None:
        result.save(out)
    return result


def _run_farm_items(items: list[SuiteItem], pending: set[int], fn: BenchFn, record: Callable[..., None],
                    artifacts: str | Path | None, prepare_fn: Callable[[SuiteItem], None] | None,
                    max_in_flight: int | None, convert_first: bool) -> None:
    """Device-farm items (``hybridexport.bench.farm``): converted one at a time, then run concurrently, bounded;
    each is recorded (and leaves ``pending``) as it finishes."""
    from hybridexport.bench.farm import DEFAULT_FARM_JOBS, FARM_RUNNERS, run_many

    farm = [i for i in sorted(pending) if items[i].runner in FARM_RUNNERS]
    if farm and convert_first:
        for i in list(farm):
            try:
                (prepare_fn or (lambda it: _prepare(it, artifacts)))(items[i])
            except Exception as exc:  # noqa: BLE001 - recorded as the item's failure
                farm.remove(i)
                pending.discard(i)
                record(i, items[i], _failure(items[i], exc), 0.0)

    def done(o: Any) -> None:
        i = farm[o.index]
        pending.discard(i)
        record(i, items[i], o.profile if o.profile is not None else _failure(items[i], o.error), o.seconds)

    if farm:
        run_many([items[i] for i in farm], fn, max_in_flight or DEFAULT_FARM_JOBS, done)
