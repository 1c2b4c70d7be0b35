"""Suite files: models × devices × formats from a small TOML file.

A suite file::

    name = "hybridexport-ci"             # required; also names its results file (letters, digits, - _ .)
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
    input_shapes = [[1, 3, 512, 384]]    # optional: one shape per model input (instead of resolution)

Models are what every command takes: zoo names, ``timm:<name>``, ``file.py:factory(kw=value)`` and
``.pt2`` files (paths relative to the suite file).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridexport.errors import HybridExportError, InputFileError, shown
from hybridexport.export.formats import NAMES

SUITE_FORMATS = (*NAMES, "pytorch")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TOP_KEYS = {"name", "description", "defaults", "run"}
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "runs": int,
    "warmup": int,
    "threads": int,
    "precision": str,
    "resolution": int,
    "runner": str,
    "checkpoint": str,
    "input_shapes": list,
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
    input_shapes: tuple[tuple[int, ...], ...] | None = None
    #: the model reference with file paths made absolute (``model`` is as written, and names the item)
    ref: str | None = None

    def bench_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``hybridexport.bench.bench`` (only what the suite set)."""
        kwargs: dict[str, Any] = {"device": self.device, "format": self.format}
        for key in ("runs", "warmup", "threads", "precision", "resolution", "runner", "checkpoint"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.input_shapes is not None:
            kwargs["input_shapes"] = [list(s) for s in self.input_shapes]
        return kwargs

    @property
    def model_ref(self) -> str:
        return self.ref or self.model

    @property
    def key(self) -> str:
        if self.input_shapes is None:
            return f"{self.model}@{self.device}/{self.format}"
        from hybridexport.export.manifest import shape_tag

        return f"{self.model}[{shape_tag([list(s) for s in self.input_shapes])}]@{self.device}/{self.format}"


@dataclass
class Suite:
    name: str
    items: list[SuiteItem]
    description: str = ""
    source: str = ""
    farm_jobs: int | None = None  # [defaults] farm_jobs: device-farm items in flight at once


#: the same ranges as the bench command's options (``hybridexport.cliargs.ranged``)
_RANGES = {"runs": (1, 100000), "warmup": (0, 100000), "threads": (1, 1024), "resolution": (1, 8192)}
FARM_JOBS_MAX = 256


def _check_options(where: str, table: dict[str, Any]) -> dict[str, Any]:
    from hybridexport.bench.runners import RUNNERS
    from hybridexport.export.options import PRECISIONS

    out = {}
    for key, value in table.items():
        if key == "input_shapes":
            out[key] = _check_shapes(where, value)
            continue
        want = _OPTION_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, want):
            tname = want.__name__ if isinstance(want, type) else "/".join(t.__name__ for t in want)
            raise InputFileError(f"{where}: '{key}' must be a {tname}, got {shown(value)}")
        lo, hi = _RANGES.get(key, (None, None))
        if lo is not None and not lo <= value <= hi:
            bound = f"at least {lo}" if value < lo else f"at most {hi}"
            raise InputFileError(f"{where}: '{key}' must be {bound}, got {shown(value)}")
        if key == "runner" and value not in RUNNERS:
            raise InputFileError(f"{where}: unknown runner '{value}'; known runners: {', '.join(RUNNERS)}")
        if key == "precision" and value not in PRECISIONS:
            raise InputFileError(f"{where}: unknown precision '{value}'; use one of: {', '.join(PRECISIONS)}")
        out[key] = value
    return out


def _check_device(where: str, name: str) -> None:
    from hybridexport.bench.devices import load_device

    try:
        load_device(name)
    except HybridExportError as exc:
        raise InputFileError(f"{where}: {exc}") from None


def _check_shapes(where: str, value: Any) -> tuple[tuple[int, ...], ...]:
    ok = isinstance(value, list) and value and all(
        isinstance(s, list) and s and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s)
        for s in value)
    if not ok:
        raise InputFileError(f"{where}: 'input_shapes' must be a list of shapes of whole numbers ≥ 1, one per model "
                             f"input, e.g. input_shapes = [[1, 3, 512, 384]]; got {shown(value)}")
    return tuple(tuple(s) for s in value)


def _model_ref(name: str, base: Path | None) -> str:
    """``name`` with a relative ``file.py`` or ``.pt2`` path made relative to the suite file's folder."""
    from hybridexport.zoo.refs import file_of

    path = file_of(name)
    if path is None or base is None or Path(path).is_absolute():
        return name
    return str((base / path).resolve()) + name.strip()[len(path):]


def _check_model(where: str, name: str) -> None:
    if name.startswith("timm:"):
        return  # checked when built (resolving asks timm, which is slow to import)
    from hybridexport.zoo.refs import check_reference

    try:
        check_reference(name)
    except HybridExportError as exc:
        raise InputFileError(f"{where}: {exc}") from None


def parse_suite(text: str, source: str = "<suite>", check_models: bool = True) -> Suite:
    """Parse and validate a suite TOML document (every mistake is a one-line InputFileError)."""
    if not isinstance(text, str):
        raise InputFileError(f"{source}: a suite is TOML text, not {type(text).__name__}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        raise InputFileError(f"{source}: nests arrays or tables too deeply to be a suite") from None
    except ValueError as exc:  # tomllib converts an over-long integer with int(), which refuses it
        raise InputFileError(f"{source}: not valid TOML ({str(exc).splitlines()[0][:80]})") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise InputFileError(f"{source}: unknown top-level key(s) {unknown}; allowed: name, description, [defaults], [[run]]")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputFileError(f"{source}: missing 'name = \"...\"' (a non-empty string naming the suite)")
    if not _NAME.match(name.strip()):
        raise InputFileError(f"{source}: suite name {name!r} must be letters, digits, '-', '_' or '.' (it names the "
                             "results file), starting with a letter or digit")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputFileError(f"{source}: 'defaults' must be a table ([defaults])")
    defaults = dict(defaults)  # farm_jobs is a suite-wide setting, not an item option
    farm_jobs = defaults.pop("farm_jobs", None)
    if farm_jobs is not None and (isinstance(farm_jobs, bool) or not isinstance(farm_jobs, int)
                                  or not 1 <= farm_jobs <= FARM_JOBS_MAX):
        bound = f"≤ {FARM_JOBS_MAX}" if isinstance(farm_jobs, int) and farm_jobs > FARM_JOBS_MAX else "≥ 1"
        raise InputFileError(f"{source}: [defaults] 'farm_jobs' must be a whole number {bound}, got {shown(farm_jobs)}")
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
        base = Path(source).parent if source != "<suite>" else None
        refs = {model: _model_ref(model, base) for model in lists["models"]}
        if check_models:
            for model in lists["models"]:
                _check_model(where, refs[model])
            for device in lists["devices"]:
                _check_device(where, device)
        opts = {**defaults, **_check_options(where, {k: v for k, v in run.items() if k in _OPTION_TYPES})}
        if "checkpoint" in opts and base is not None:
            ckpt = (base / opts["checkpoint"]).resolve()
            if not ckpt.is_file():
                raise InputFileError(f"{where}: checkpoint '{opts['checkpoint']}' (resolved beside the suite file: "
                                     f"{ckpt}) is not a file; fix the path (relative to the suite file)")
            opts["checkpoint"] = str(ckpt)
        if "input_shapes" in opts and "resolution" in opts:
            raise InputFileError(f"{where}: 'resolution' and 'input_shapes' both set the input; keep one")
        for model in lists["models"]:
            for device in lists["devices"]:
                for fmt in lists["formats"]:
                    item = SuiteItem(model=model, device=device, format=fmt, **opts,
                                     ref=refs[model] if refs[model] != model else None)
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
    except OSError as exc:
        raise InputFileError(f"suite file '{p}' is unreadable ({exc.strerror or type(exc).__name__})") from None
    return parse_suite(text, source=str(p), check_models=check_models)
