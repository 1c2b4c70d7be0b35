"""Which runner serves a device here, and why the others cannot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybridexport.bench.probing import probe_scope
from hybridexport.bench.runners import RUNNERS, Runner, get_runner
from hybridexport.errors import HybridExportError, RunnerUnavailableError


@dataclass
class RunnerStatus:
    name: str
    available: bool
    reason: str  # why not ("" when available)
    formats: tuple[str, ...]
    runner: Runner | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "reason": self.reason, "formats": list(self.formats)}


def _load(name: str, options: dict[str, Any]) -> tuple[Runner | None, str]:
    try:
        return get_runner(name).configure(options), ""
    except RunnerUnavailableError as exc:
        return None, str(exc)


def runner_status(device: Any, options: dict[str, Any] | None = None, names: list[str] | None = None) -> list[RunnerStatus]:
    """Every runner in ``device.runners`` (or ``names``), in preference order, with availability here
    (their device probes shared: :func:`hybridexport.bench.probing.probe_scope`)."""
    with probe_scope():
        return _statuses(device, options, names)


def _statuses(device: Any, options: dict[str, Any] | None, names: list[str] | None) -> list[RunnerStatus]:
    out = []
    for name in names or device.runners:
        runner, why = _load(name, options or {})
        formats = runner.formats_for(device) if runner is not None else ()
        if runner is None:
            out.append(RunnerStatus(name, False, why, formats))
            continue
        try:
            ok, why = runner.availability(device)
        except HybridExportError as exc:
            ok, why = False, str(exc)
        out.append(RunnerStatus(name, bool(ok), "" if ok else (why or "unavailable"), formats, runner))
    return out


def serves(status: RunnerStatus, fmt: str | None) -> bool:
    """Whether the runner takes ``fmt`` for the device (a runner that cannot load here is a candidate too,
    so its reason is reported)."""
    return fmt is None or fmt in status.formats or (status.runner is None and not status.formats)


def choose_runner(device: Any, fmt: str | None = None, runner: str | None = None,
                  options: dict[str, Any] | None = None) -> Runner:
    """The first available runner of the device for ``fmt`` (or the named one), else a one-line error.

    The error names every runner tried and why it cannot run, e.g. ``iphone13: ios-coreml: measuring on an
    iPhone needs macOS with Xcode 15+ (this is Linux); predicted: not calibrated yet — run ...``.
    """
    if runner is not None:
        if runner not in RUNNERS:
            raise RunnerUnavailableError(f"unknown runner '{runner}'; known runners: {', '.join(RUNNERS)}")
        statuses = runner_status(device, options, [runner])
    else:
        statuses = runner_status(device, options)
    candidates = [s for s in statuses if serves(s, fmt)]
    for s in candidates:
        if s.available and s.runner is not None:
            return s.runner
    if runner is not None and statuses and not candidates:
        raise RunnerUnavailableError(
            f"runner '{runner}' runs {', '.join(statuses[0].formats)} artifacts, not {fmt}; "
            f"pass --format {statuses[0].formats[0]}" if statuses[0].formats else f"runner '{runner}' cannot run {fmt}"
        )
    tried = candidates or [RunnerStatus(s.name, False, s.reason or f"runs {', '.join(s.formats)} artifacts, not {fmt}",
                                        s.formats, s.runner) for s in statuses]
    if not tried:
        raise RunnerUnavailableError(f"{device.name}: no runner listed in its profile runs {fmt} artifacts "
                                     f"(runners: {', '.join(device.runners)})")
    reasons = "; ".join(f"{s.name}: {s.reason}" for s in tried)
    raise RunnerUnavailableError(f"{device.name}: no runner can run here — {reasons}")
