"""Benchmark suites: models × devices × formats from a small TOML file, into one results file.

A suite file::

    name = "hybridexport-ci"             # required
    description = "what it is for"       # optional

    [defaults]                           # optional, applies to every [[run]]; unset options take
    runs = 30                            # the bench stage's defaults and the device protocol's
    warmup = 5                           # threads and precision
    farm_jobs = 4                        # device-farm jobs (runner = "qai-hub") in flight at once

    [[run]]                              # one or more; each is a cross product
    models = ["iformer-t", "mobilevit-xxs"]
    devices = ["host"]
    formats = ["onnx"]
    runner = "host-onnxruntime"          # optional: force one runner (default: the device's order)
    checkpoint = "weights/my.pth"        # optional: local weights (relative to this file)

The results file (JSON) holds the suite name, when it ran, every Profile, and a failure with its
reason for each combination that could not be benchmarked (an unsupported op, no phone attached,
...): one failure never stops the suite. ``hybridexport compare`` reads it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.errors import HybridExportError, InputFileError

RESULTS_KIND = "hybridexport-suite-results"
RESULTS_SCHEMA_VERSION = 1
SUITE_FORMATS = ("onnx", "tflite", "coreml", "executorch", "pytorch")
_TOP_KEYS = {"name", "description", "defaults", "run"}
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "runs": int,
    "warmup": int,
    "threads": int,
    "precision": str,
    "resolution": int,
    "runner": str,
    "checkpoint": str,
}
_LIST_KEYS = ("models", "devices", "formats")


@dataclass(frozen=True)
class SuiteItem:
    """One model × device × format to benchmark, with its options."""

    model: str
    device: str
    format: str
    runs: int | None = None  # None: the bench stage's default (and the device protocol's threads/precision)
    warmup: int | None = None
    threads: int | None = None
    precision: str | None = None
    resolution: int | None = None
    runner: str | None = None
    checkpoint: str | None = None

    def bench_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hybridexport.bench.bench`` (only what the suite set)."""
        kwargs: dict[str, Any] = {"device": self.device, "format": self.format}
        for key in ("runs", "warmup", "threads", "precision", "resolution", "runner", "checkpoint"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        return kwargs

    @property
    def key(self) -> str:
        return f"{self.model}@{self.device}/{self.format}"


@dataclass
class Suite:
    name: str
    items: list[SuiteItem]
    description: str = ""
    source: str = ""
    farm_jobs: int | None = None  # [defaults] farm_jobs: device-farm items in flight at once (farm hook)


@dataclass
class SuiteFailure:
    model: str
    device: str
    format: str
    reason: str
    runner: str = ""
    error: str = ""  # exception class name

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "format": self.format, "runner": self.runner,
                "error": self.error, "reason": self.reason}


@dataclass
class SuiteResult:
    suite: str
    created: str
    profiles: list[Profile] = field(default_factory=list)
    failures: list[SuiteFailure] = field(default_factory=list)
    source: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    item_seconds: dict[str, float] = field(default_factory=dict)  # wall time per item (conversion included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": RESULTS_KIND,
            "schema_version": RESULTS_SCHEMA_VERSION,
            "suite": self.suite,
            "created": self.created,
            "source": self.source,
            "seconds": round(self.seconds, 2),
            "item_seconds": {k: round(v, 2) for k, v in self.item_seconds.items()},
            "environment": self.environment,
            "profiles": [p.to_dict() for p in self.profiles],
            "failures": [f.to_dict() for f in self.failures],
        }

    def to_json(self) -> str:
        """Compact but diffable: one line per profile and failure, floats to 6 significant digits."""
        d = _round_floats(self.to_dict())
        head = {k: v for k, v in d.items() if k not in ("profiles", "failures")}
        lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
        for key in ("profiles", "failures"):
            items = [f"    {json.dumps(x, separators=(',', ':'))}" for x in d[key]]
            body = ",\n".join(items)
            lines.append(f'  "{key}": [\n{body}\n  ]' if items else f'  "{key}": []')
            lines[-1] += "," if key == "profiles" else ""
        return "\n".join(lines + ["}"]) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the results; a ``.gz`` path is gzip-compressed (reproducibly: no timestamp inside)."""
        from hybridexport.atomic import atomic_path, write_text

        if str(path).endswith(".gz"):
            import gzip

            with atomic_path(path) as tmp:
                tmp.write_bytes(gzip.compress(self.to_json().encode("utf-8"), compresslevel=9, mtime=0))
            return Path(path)
        return write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> SuiteResult:
        if d.get("kind", RESULTS_KIND) != RESULTS_KIND:
            raise InputFileError(f"{source}: kind {d.get('kind')!r} is not {RESULTS_KIND!r}")
        version = d.get("schema_version")
        if version != RESULTS_SCHEMA_VERSION:
            raise InputFileError(
                f"{source}: suite results schema_version {version!r} is not supported (expected "
                f"{RESULTS_SCHEMA_VERSION}); re-run `hybridexport bench --suite`"
            )
        if not isinstance(d.get("profiles"), list) or not isinstance(d.get("failures", []), list):
            raise InputFileError(f"{source}: 'profiles' and 'failures' must be lists")
        profiles = []
        for i, p in enumerate(d["profiles"]):
            if not isinstance(p, dict):
                raise InputFileError(f"{source}: profiles[{i}] is not an object")
            profiles.append(Profile.from_dict(p, source=f"{source}: profiles[{i}]"))
        failures = []
        for i, f in enumerate(d.get("failures", [])):
            try:
                failures.append(SuiteFailure(**f))
            except TypeError as exc:
                raise InputFileError(f"{source}: failures[{i}] is malformed ({exc})") from None
        return cls(suite=str(d.get("suite", "")), created=str(d.get("created", "")), profiles=profiles,
                   failures=failures, source=str(d.get("source", "")), environment=dict(d.get("environment", {})),
                   seconds=float(d.get("seconds", 0.0)), item_seconds=dict(d.get("item_seconds", {})))

    @classmethod
    def load(cls, path: str | Path) -> SuiteResult:
        p = Path(path)
        try:
            data = json.loads(read_text_maybe_gzip(p))
        except FileNotFoundError:
            raise InputFileError(f"suite results '{p}' do not exist; run `hybridexport bench --suite FILE --json {p}`") from None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
            raise InputFileError(f"suite results '{p}' are not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputFileError(f"suite results '{p}' are not a JSON object")
        return cls.from_dict(data, source=str(p))


def read_text_maybe_gzip(path: Path) -> str:
    """The file's text; gzip-compressed files (by their magic bytes) are decompressed."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        import gzip

        data = gzip.decompress(data)
    return data.decode("utf-8")


def _round_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _round_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- parsing


def _check_options(where: str, table: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        want = _OPTION_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, want):
            tname = want.__name__ if isinstance(want, type) else "/".join(t.__name__ for t in want)
            raise InputFileError(f"{where}: '{key}' must be a {tname}, got {value!r}")
        if key in ("runs", "threads", "resolution") and value < 1:
            raise InputFileError(f"{where}: '{key}' must be at least 1, got {value}")
        if key == "warmup" and value < 0:
            raise InputFileError(f"{where}: 'warmup' must be 0 or more, got {value}")
        out[key] = value
    return out


def _check_model(where: str, name: str) -> None:
    if name.startswith("timm:"):
        return  # checked when built (resolving asks timm, which is slow to import)
    from hybridexport.zoo.registry import resolve

    try:
        resolve(name)
    except HybridExportError as exc:
        raise InputFileError(f"{where}: {exc}") from None


def parse_suite(text: str, source: str = "<suite>", check_models: bool = True) -> Suite:
    """Parse and validate a suite TOML document (every mistake is a one-line InputFileError)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{source}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise InputFileError(f"{source}: unknown top-level key(s) {unknown}; allowed: name, description, [defaults], [[run]]")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputFileError(f"{source}: missing 'name = \"...\"' (a non-empty string naming the suite)")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputFileError(f"{source}: 'defaults' must be a table ([defaults])")
    # ---- farm hook: [defaults] farm_jobs is a suite-wide setting, not an item option
    defaults = dict(defaults)
    farm_jobs = defaults.pop("farm_jobs", None)
    if farm_jobs is not None and (isinstance(farm_jobs, bool) or not isinstance(farm_jobs, int) or farm_jobs < 1):
        raise InputFileError(f"{source}: [defaults] 'farm_jobs' must be a whole number ≥ 1, got {farm_jobs!r}")
    # ---- end farm hook
    bad = sorted(set(defaults) - set(_OPTION_TYPES))
    if bad:
        raise InputFileError(f"{source}: [defaults] has unknown key(s) {bad}; allowed: {', '.join(_OPTION_TYPES)}, "
                             "farm_jobs")
    defaults = _check_options(f"{source}: [defaults]", defaults)
    runs = doc.get("run")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise InputFileError(f"{source}: needs at least one [[run]] table with models, devices and formats")
    items: list[SuiteItem] = []
    seen: dict[str, int] = {}
    for i, run in enumerate(runs, start=1):
        where = f"{source}: [[run]] #{i}"
        bad = sorted(set(run) - set(_OPTION_TYPES) - set(_LIST_KEYS))
        if bad:
            raise InputFileError(f"{where} has unknown key(s) {bad}; allowed: models, devices, formats, {', '.join(_OPTION_TYPES)}")
        lists = {}
        for key in _LIST_KEYS:
            value = run.get(key)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise InputFileError(f"{where}: '{key}' must be a non-empty list of names, e.g. {key} = [\"...\"]")
            lists[key] = value
        for fmt in lists["formats"]:
            if fmt not in SUITE_FORMATS:
                raise InputFileError(f"{where}: unknown format '{fmt}'; choose from {', '.join(SUITE_FORMATS)}")
        if check_models:
            for model in lists["models"]:
                _check_model(where, model)
        opts = {**defaults, **_check_options(where, {k: v for k, v in run.items() if k in _OPTION_TYPES})}
        if "checkpoint" in opts and source != "<suite>":
            opts["checkpoint"] = str((Path(source).parent / opts["checkpoint"]).resolve())
        for model in lists["models"]:
            for device in lists["devices"]:
                for fmt in lists["formats"]:
                    item = SuiteItem(model=model, device=device, format=fmt, **opts)
                    if item.key in seen:
                        raise InputFileError(f"{where}: {item.key} is already listed in [[run]] #{seen[item.key]}")
                    seen[item.key] = i
                    items.append(item)
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise InputFileError(f"{source}: 'description' must be a string")
    return Suite(name=name.strip(), items=items, description=desc, source=source, farm_jobs=farm_jobs)


def load_suite(path: str | Path, check_models: bool = True) -> Suite:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"suite file '{p}' does not exist; see benchmarks/suite.toml for an example") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise InputFileError(f"suite file '{p}' is not a TOML text file") from None
    return parse_suite(text, source=str(p), check_models=check_models)


# ----------------------------------------------------------------------------- running

BenchFn = Callable[[SuiteItem], Profile]


def _default_bench(item: SuiteItem, artifacts: str | Path | None = None) -> Profile:
    """Benchmark one item with the bench stage's public function (converting the artifact if needed)."""
    from hybridexport.bench import bench

    kwargs = item.bench_kwargs()
    if artifacts is not None:
        kwargs["out"] = Path(artifacts)
    result = bench(item.model, **kwargs)
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

    plan(item.model, load_device(item.device), item.format, item.runner, Path(artifacts or DEFAULT_OUT),
         item.precision, item.resolution, item.checkpoint, {})


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
    if farm_jobs is not None and farm_jobs < 1:  # farm hook
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
    # ---- farm hook (hybridexport.bench.farm): device-farm items run concurrently, bounded
    from hybridexport.bench.farm import DEFAULT_FARM_JOBS, FARM_RUNNERS, run_many

    farm = [i for i in sorted(pending_measure) if items[i].runner in FARM_RUNNERS]
    if farm and bench_fn is None and not (jobs > 1 and len(items) > 1):  # convert first, one at a time
        for i in list(farm):
            try:
                (prepare_fn or (lambda it: _prepare(it, artifacts)))(items[i])
            except Exception as exc:  # noqa: BLE001 - recorded as the item's failure
                farm.remove(i)
                pending_measure.discard(i)
                record(i, items[i], _failure(items[i], exc), 0.0)

    def farm_done(o: Any) -> None:
        i = farm[o.index]
        pending_measure.discard(i)
        record(i, items[i], o.profile if o.profile is not None else _failure(items[i], o.error), o.seconds)

    if farm:
        run_many([items[i] for i in farm], fn, farm_jobs or suite.farm_jobs or DEFAULT_FARM_JOBS, farm_done)
    # ---- end farm hook
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


# ----------------------------------------------------------------------------- CLI glue (bench command)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--suite FILE`` (and ``--only``) to the bench command; it owns ``--json``."""
    parser.add_argument("--suite", metavar="FILE", help="run a suite (models × devices × formats, TOML) and write one "
                        "results file (--json FILE, default results/<suite>.json)")
    parser.add_argument("--only", metavar="NAME", action="append", default=None,
                        help="with --suite: keep only items whose model, device or format is NAME (repeatable)")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="with --suite: convert artifacts and run predicted items in N processes; measured "
                             "items still run one at a time (default 1)")
    parser.add_argument("--farm-jobs", type=int, default=None, metavar="N",  # farm hook
                        help="with --suite: device-farm jobs (runner qai-hub) in flight at once (default: the "
                             "suite's [defaults] farm_jobs, else 4)")


def run_suite(args: argparse.Namespace) -> int:
    """Run ``args.suite``; print a table; 0 when every item produced a profile, 1 when some failed."""
    from rich.table import Table

    from hybridexport.console import console, err_console

    json_out = getattr(args, "json", None)
    if not isinstance(json_out, str | Path):  # a boolean --json flag, or none: pick the default path
        suite = load_suite(args.suite)
        json_out = Path("results") / f"{suite.name}.json"

    def on_item(item: SuiteItem, profile: Profile | None, failure: SuiteFailure | None, seconds: float) -> None:
        took = f"[{seconds:.0f} s]"
        if profile is not None:
            err_console.print(f"  [green]ok[/]   {item.key}: {profile.total_ms.median:.3f} ms ({profile.obtained}, "
                              f"{profile.runner}) {took}", highlight=False)
        elif failure is not None:
            err_console.print(f"  [red]fail[/] {item.key}: {failure.reason} {took}", highlight=False)

    result = run_suite_file(args.suite, out=json_out, only=getattr(args, "only", None), on_item=on_item,
                            artifacts=getattr(args, "out", None), jobs=getattr(args, "jobs", 1) or 1,
                            farm_jobs=getattr(args, "farm_jobs", None))
    table = Table(title=f"suite {result.suite} ({result.seconds:.0f} s)")
    for col in ("model", "device", "format", "runner", "obtained", "median ms", "p10–p90 ms"):
        table.add_column(col, justify="right" if "ms" in col else "left", overflow="fold")
    for p in result.profiles:
        t = p.total_ms
        table.add_row(p.model, p.device, p.format, p.runner, p.obtained, f"{t.median:.3f}", f"{t.p10:.3f}–{t.p90:.3f}")
    for f in result.failures:
        table.add_row(f.model, f.device, f.format, f.runner or "-", "[red]failed[/]", "-", "-")
    console.print(table)
    for f in result.failures:
        console.print(f"[red]failed[/] {f.model}@{f.device}/{f.format}: {f.reason}", highlight=False, soft_wrap=True)
    console.print(f"wrote {json_out} ({len(result.profiles)} profiles, {len(result.failures)} failures)")
    return 1 if result.failures else 0
