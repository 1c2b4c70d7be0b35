"""Bench stage: per-layer latency of exported artifacts, measured by a runner or predicted.

``bench(model, device=...)`` finds (or converts) the artifact for the device's format, picks the
first runner of the device profile that can run here, and returns one :class:`Profile` per
artifact. With ``model=None`` it benchmarks every artifact ``convert`` wrote into ``out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.bench.profile import LayerRow, Profile, Stats, aggregate_by_module
from hybridexport.export.manifest import DEFAULT_OUT

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile
    from hybridexport.export.manifest import Manifest
    from hybridexport.zoo import LoadedModel

__all__ = ["LayerRow", "Profile", "Stats", "aggregate_by_module", "bench", "plan"]

DEFAULT_RUNS = 50
DEFAULT_WARMUP = 10


def _device(device: str | DeviceProfile) -> DeviceProfile:
    from hybridexport.bench.devices import load_device

    return load_device(device) if isinstance(device, str) else device


def _find_or_convert(model: str | LoadedModel, fmt: str, out: Path, precision: str | None,
                     resolution: int | None, checkpoint: str | Path | None) -> Manifest:
    """The manifest of ``model`` in ``fmt`` under ``out``; converts it (export stage) when missing."""
    from hybridexport.errors import ConversionError
    from hybridexport.export.manifest import Manifest, artifact_path, manifest_path

    if isinstance(model, str):
        from hybridexport.zoo.registry import resolve

        name = resolve(model).name
    else:
        name = model.name
    if precision is not None:
        mp = manifest_path(artifact_path(out, name, fmt, precision))
        if mp.exists():
            man = Manifest.load(mp)
            if resolution is None or man.resolution == resolution:
                return man
    try:
        from hybridexport.export import convert
    except ImportError:
        raise ConversionError(f"no {fmt} artifact of {name} in {out} and the export stage is not available; "
                              f"run `hybridexport convert {name} --to {fmt} --out {out}`") from None
    made = [m for m in convert(model, to=fmt, out=out, precision=precision, resolution=resolution,
                               checkpoint=checkpoint) if m.format == fmt]
    if not made:
        raise ConversionError(f"converting {name} to {fmt} produced no artifact")
    return made[0]


def plan(
    model: str | LoadedModel | None,
    device: DeviceProfile,
    fmt: str | None,
    runner: str | None,
    out: Path,
    precision: str | None,
    resolution: int | None,
    checkpoint: str | Path | None,
    options: dict[str, Any],
) -> list[tuple[Any, Manifest | None, LoadedModel | None]]:
    """(runner, manifest, model) for every benchmark ``bench`` will run."""
    from hybridexport.bench.select import choose_runner, runner_status, serves
    from hybridexport.errors import InputFileError
    from hybridexport.export.manifest import find_manifests

    if model is None:
        if not Path(out).is_dir():
            raise InputFileError(f"no artifacts: '{out}' does not exist; run `hybridexport convert MODEL --to FORMAT` "
                                 "first or name a MODEL")
        manifests = [m for m in find_manifests(out) if fmt is None or m.format == fmt]
        if precision is not None:
            manifests = [m for m in manifests if m.precision == precision]
        statuses = runner_status(device, options, [runner] if runner else None)
        usable = [m for m in manifests if any(serves(s, m.format) for s in statuses)]
        own = [m for m in usable if m.format == device.format]
        if fmt is None and device.kind != "host" and own:
            usable = own  # a phone is benchmarked in its own format (other artifacts would only be predicted)
        if not usable:
            have = sorted({m.format for m in manifests}) or ["none"]
            raise InputFileError(f"no artifact in '{out}' that {device.name}'s runners can run (formats there: "
                                 f"{', '.join(have)}); run `hybridexport convert MODEL --to {device.format}`")
        return [(choose_runner(device, m.format, runner, options), m, None) for m in usable]
    if fmt is None:
        if runner is not None:
            r = choose_runner(device, None, runner, options)
            fmt = r.formats[0] if r.formats else device.format
        else:
            fmt = device.format
    chosen = choose_runner(device, fmt, runner, options)
    if fmt == "pytorch":
        from hybridexport.zoo import build_model

        loaded = build_model(model, resolution=resolution, checkpoint=checkpoint) if isinstance(model, str) else model
        return [(chosen, None, loaded)]
    if precision is None and fmt == device.format:
        precision = device.precision
    if precision is None and fmt in ("onnx", "executorch", "tflite"):
        precision = "fp32"
    manifest = _find_or_convert(model, fmt, Path(out), precision, resolution, checkpoint)
    return [(chosen, manifest, None if isinstance(model, str) else model)]


def bench(
    model: str | LoadedModel | None = None,
    device: str | DeviceProfile = "host",
    fmt: str | None = None,
    runner: str | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    out: str | Path = DEFAULT_OUT,
    precision: str | None = None,
    resolution: int | None = None,
    checkpoint: str | Path | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    *,
    format: str | None = None,  # noqa: A002 - the suite and the CLI spell it this way
) -> list[Profile]:
    """Benchmark ``model`` (or every artifact in ``out``) on ``device``; one Profile per artifact.

    ``fmt``/``format`` defaults to the device's own (Core ML for iPhones, TFLite for Android, ONNX on
    the host; ``pytorch`` runs the eager model). ``runner`` forces a runner (e.g. ``predicted``).
    ``threads`` defaults to the device protocol's. ``options`` reach the runners (``serial``,
    ``benchmark_binary``, ``android_delegate``, ``ios_app``). ``progress=True`` shows a progress bar.
    """
    from hybridexport.bench.runners import BenchRequest

    if runs < 1 or warmup < 0:
        from hybridexport.errors import InputFileError

        raise InputFileError(f"runs must be ≥ 1 and warmup ≥ 0 (got runs={runs}, warmup={warmup})")
    dev = _device(device)
    fmt = fmt or format
    opts = dict(options or {})
    n_threads = int(threads if threads is not None else dev.protocol.get("threads", 1))
    jobs = plan(model, dev, fmt, runner, Path(out), precision, resolution, checkpoint, opts)
    profiles = []
    for r, manifest, loaded in jobs:
        label = f"{r.name} · {manifest.model if manifest else loaded.name} · {manifest.format if manifest else 'pytorch'}"
        req = BenchRequest(device=dev, manifest=manifest, model=loaded, runs=runs, warmup=warmup,
                           threads=n_threads, options=dict(opts))
        if progress:
            from hybridexport.console import progress as bar

            total = (runs + warmup) if r.obtained == "measured" else None
            with bar(label, total=total) as (prog, task):
                req.options["progress"] = lambda k, _p=prog, _t=task: _p.advance(_t, k)
                profiles.append(r.run(req))
        else:
            profiles.append(r.run(req))
    return profiles
