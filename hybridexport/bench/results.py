"""Reading and writing latency results: a Profile, a list of Profiles (``bench --json``), or suite results.

Suite results (``bench --suite``) hold the suite name, when it ran, every Profile and a failure with its
reason for each item that could not be benchmarked. :func:`load_side` reads any of these for
``compare``; gzip-compressed files are read too, up to :data:`MAX_TEXT_BYTES` once decompressed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.bench.profile import Profile
from hybridexport.errors import InputFileError
from hybridexport.jsonfile import MAX_TEXT_BYTES, parse_json, read_bytes

RESULTS_KIND = "hybridexport-suite-results"
RESULTS_SCHEMA_VERSION = 1
__all__ = ["MAX_TEXT_BYTES", "Side", "SuiteFailure", "SuiteResult", "load_side", "read_text_maybe_gzip"]


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
        """Suite results from JSON, every field checked (each profile as by :meth:`Profile.from_dict`)."""
        if not isinstance(d, dict):
            raise InputFileError(f"{source}: suite results are a JSON object, not {type(d).__name__}; {RERUN}")
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
        from hybridexport.records import structure

        head = structure({k: v for k, v in d.items() if k not in ("kind", "schema_version", "profiles", "failures")},
                         _ResultsHead, source, RERUN)
        if not math.isfinite(head.seconds) or head.seconds < 0 or any(
                not math.isfinite(v) or v < 0 for v in head.item_seconds.values()):
            raise InputFileError(f"{source}: 'seconds' and 'item_seconds' must be durations ≥ 0; {RERUN}")
        profiles = [Profile.from_dict(p, source=f"{source}: profiles[{i}]") for i, p in enumerate(d["profiles"])]
        failures = [structure(f, SuiteFailure, f"{source}: failures[{i}]", RERUN)
                    for i, f in enumerate(d.get("failures", []))]
        return cls(suite=head.suite, created=head.created, profiles=profiles, failures=failures, source=head.source,
                   environment=head.environment, seconds=head.seconds, item_seconds=head.item_seconds)

    @classmethod
    def load(cls, path: str | Path) -> SuiteResult:
        p = Path(path)
        hint = f"run `hybridexport bench --suite FILE --json {p}`"
        data = parse_json(read_bytes(p, "suite results", hint, gunzip=True), f"suite results '{p}'", hint)
        if not isinstance(data, dict):
            raise InputFileError(f"suite results '{p}' are not a JSON object")
        return cls.from_dict(data, source=str(p))


RERUN = "re-run `hybridexport bench --suite`"


@dataclass
class _ResultsHead:
    """The scalar fields of a results file (what :meth:`SuiteResult.from_dict` checks before the profiles)."""

    suite: str = ""
    created: str = ""
    source: str = ""
    seconds: float = 0.0
    item_seconds: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)


def read_text_maybe_gzip(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The file's text; gzip-compressed files (by their magic bytes) are decompressed, to at most ``limit`` bytes."""
    data = read_bytes(path, "results file", "pass a file written by `hybridexport bench --json`", limit=limit,
                      gunzip=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"'{path}' is not UTF-8 text; pass a profile or suite results JSON file") from None


def _round_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _round_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v) for v in obj]
    return obj




@dataclass
class Side:
    """One side of a comparison: its profiles and the failures its suite run recorded."""

    source: str
    profiles: list[Profile]
    failures: list[dict[str, Any]] = field(default_factory=list)
    single: bool = False  # a lone Profile (pair it with the other side whatever its key)


def load_side(obj: Any) -> Side:
    """A path (Profile JSON or suite results JSON), a Profile, a SuiteResult or a list of Profiles."""
    if isinstance(obj, Profile):
        return Side(source=f"{obj.model}@{obj.device}", profiles=[obj], single=True)
    if isinstance(obj, SuiteResult):
        return Side(source=obj.suite, profiles=list(obj.profiles), failures=[f.to_dict() for f in obj.failures])
    if isinstance(obj, list) and all(isinstance(p, Profile) for p in obj):
        return Side(source="<profiles>", profiles=list(obj))
    if isinstance(obj, str | Path):
        return _load_path(Path(obj))
    raise InputFileError(f"cannot compare a {type(obj).__name__}; pass a Profile, a suite result or a JSON file path")


def _load_path(path: Path) -> Side:
    hint = "pass a file written by `hybridexport bench --json` or `bench --suite`"
    data = parse_json(read_bytes(path, "results file", hint, gunzip=True), f"'{path}'", hint)
    if isinstance(data, list) and data and all(isinstance(d, dict) and "total_ms" in d for d in data):
        # `bench --json` writes a list when it produced several profiles
        return Side(source=str(path), profiles=[Profile.from_dict(d, source=f"{path}[{i}]") for i, d in enumerate(data)],
                    single=len(data) == 1)
    if not isinstance(data, dict):
        raise InputFileError(f"'{path}' holds a JSON {type(data).__name__}, not a profile, a list of profiles or "
                             "suite results")
    if "profiles" in data:
        result = SuiteResult.from_dict(data, source=str(path))
        return Side(source=str(path), profiles=list(result.profiles), failures=[f.to_dict() for f in result.failures])
    if "total_ms" in data:
        return Side(source=str(path), profiles=[Profile.from_dict(data, source=str(path))], single=True)
    raise InputFileError(
        f"'{path}' is neither a Profile (no 'total_ms') nor suite results (no 'profiles'); {hint}"
    )
