"""Bench stage: per-layer latency of exported artifacts, measured by a runner or predicted.

``bench(model, device=...)`` finds (or converts) the artifact for the format the device and runner
agree on, picks the first runner of the device profile that can run here, and returns one
:class:`Profile` per artifact. ``model`` may also be the path of an artifact (made by ``convert`` or
elsewhere); with ``model=None`` it benchmarks every artifact ``convert`` wrote into ``out``. Every
artifact is checked against its manifest (size, sha256) before a runner sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.bench.profile import LayerRow, Profile, Stats, aggregate_by_module
from hybridexport.export.manifest import DEFAULT_OUT

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile
    from hybridexport.bench.runners import BenchRequest, Runner
    from hybridexport.export.manifest import Manifest
    from hybridexport.zoo import LoadedModel

__all__ = ["LayerRow", "Profile", "Stats", "aggregate_by_module", "bench", "plan"]

DEFAULT_RUNS = 50
DEFAULT_WARMUP = 10


def _device(device: str | DeviceProfile) -> DeviceProfile:
    from hybridexport.bench.devices import load_device

    return load_device(device) if isinstance(device, str) else device


def is_artifact_path(model: Any) -> bool:
    """Whether ``model`` names an artifact file (by its suffix) rather than a model."""
    if not isinstance(model, (str, Path)):
        return False
    from hybridexport.export import formats

    try:
        formats.for_path(model)
    except formats.BadOptionError:
        return False
    return True


def _find_or_convert(model: str | LoadedModel, fmt: str, out: Path, precision: str, resolution: int | None,
                     checkpoint: str | Path | None, input_shapes: list[list[int]] | None = None,
                     judge_on: str | None = None) -> Manifest:
    """The manifest of ``model`` in ``fmt`` under ``out`` (checked); converts it (export stage) when missing,
    its passes judged on ``judge_on`` (None: the format's device).

    A name is not built to find its artifact: its identity (name, input shapes) is read off the reference."""
    from hybridexport.errors import ConversionError
    from hybridexport.export import convert
    from hybridexport.export.manifest import Manifest, artifact_path, manifest_path
    from hybridexport.zoo.refs import model_identity

    ident = model_identity(model, resolution, input_shapes) if isinstance(model, str) else (
        model.name, [list(s) for s in model.input_shapes])
    if ident is not None and checkpoint is None:
        mp = manifest_path(artifact_path(out, ident[0], fmt, precision, ident[1]))
        if mp.exists():
            man = Manifest.load(mp)
            man.check_artifact()
            return man
    made = [m for m in convert(model, to=fmt, out=out, precision=precision, resolution=resolution,
                               checkpoint=checkpoint, input_shapes=input_shapes, device=judge_on) if m.format == fmt]
    if not made:
        raise ConversionError(f"converting {ident[0] if ident else model} to {fmt} produced no artifact")
    return made[0]


def _artifact_request(path: Path) -> tuple[Manifest | None, Path]:
    """The manifest beside an artifact file (checked), if it has one."""
    from hybridexport.errors import InputFileError
    from hybridexport.export.manifest import Manifest, manifest_path

    if not path.exists():
        raise InputFileError(f"artifact '{path}' does not exist")
    mp = manifest_path(path)
    if mp.exists():
        man = Manifest.load(mp)
        man.check_artifact()
        return man, path
    return None, path


def _format_for(device: DeviceProfile, fmt: str | None, runner: str | None, options: dict[str, Any]) -> str:
    """The format the device and a forced runner agree on (the device's own when the runner takes it)."""
    if fmt is not None:
        return fmt
    if runner is None:
        return device.format
    from hybridexport.bench.runners import get_runner

    takes = get_runner(runner).configure(options).formats_for(device)
    return device.format if not takes or device.format in takes else takes[0]


def plan(
    model: str | Path | LoadedModel | Any | None,
    device: DeviceProfile,
    fmt: str | None,
    runner: str | None,
    out: Path,
    precision: str | None,
    resolution: int | None,
    checkpoint: str | Path | None,
    options: dict[str, Any],
    input_shapes: list[list[int]] | None = None,
) -> list[tuple[Runner, Manifest | None, LoadedModel | None, Path | None]]:
    """(runner, manifest, model, artifact made elsewhere) for every benchmark ``bench`` will run."""
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
        for m in usable:
            m.check_artifact()
        return [(choose_runner(device, m.format, runner, options), m, None, None) for m in usable]
    if is_artifact_path(model):
        from hybridexport.export import formats

        path = Path(model)
        man, path = _artifact_request(path)
        kind = man.format if man is not None else formats.for_path(path).name
        if fmt is not None and fmt != kind:
            raise InputFileError(f"'{path}' is a {formats.title(kind)} artifact, not {fmt}; leave out --format")
        return [(choose_runner(device, kind, runner, options), man, None, None if man is not None else path)]
    fmt = _format_for(device, fmt, runner, options)
    chosen = choose_runner(device, fmt, runner, options)
    from hybridexport.zoo.refs import load_model

    if not isinstance(model, str):  # a module or a built model: it is its own identity
        model = load_model(model, input_shapes=input_shapes)
    if fmt == "pytorch":
        loaded = load_model(model, resolution=resolution, checkpoint=checkpoint, input_shapes=input_shapes)
        return [(chosen, None, loaded, None)]
    if precision is None:
        from hybridexport.export.options import resolve_precision

        precision = device.precision if fmt == device.format else resolve_precision(fmt, None)
    # passes are judged on the benchmarked device when its latency model prices this format
    manifest = _find_or_convert(model, fmt, Path(out), precision, resolution, checkpoint, input_shapes,
                                judge_on=device.name if device.priced_format == fmt else None)
    return [(chosen, manifest, None if isinstance(model, str) else model, None)]


def bench(
    model: str | Path | LoadedModel | None = None,
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
    input_shapes: list[list[int]] | None = None,
) -> list[Profile]:
    """Benchmark ``model`` (a name or reference, an ``nn.Module`` with ``input_shapes``, a built model, an
    artifact's path, or every artifact in ``out``) on ``device``; one Profile per artifact.

    ``fmt``/``format`` defaults to the device's own (Core ML for iPhones, TFLite for Android, ONNX on
    the host; ``pytorch`` runs the eager model), or the forced ``runner``'s. ``threads`` defaults to the
    device protocol's. ``options`` reach the runners (``serial``, ``benchmark_binary``,
    ``android_delegate``, ...). ``progress=True`` shows a progress bar.
    """
    from hybridexport.bench.runners import BenchRequest
    from hybridexport.errors import InputFileError

    if runs < 1 or warmup < 0:
        raise InputFileError(f"runs must be ≥ 1 and warmup ≥ 0 (got runs={runs}, warmup={warmup})")
    if threads is not None and threads < 1:
        raise InputFileError(f"threads must be ≥ 1 (got {threads})")
    dev = _device(device)
    fmt = fmt or format
    opts = dict(options or {})
    n_threads = int(threads if threads is not None else dev.protocol.get("threads", 1))
    jobs = plan(model, dev, fmt, runner, Path(out), precision, resolution, checkpoint, opts, input_shapes)
    profiles = []
    for r, manifest, loaded, artifact in jobs:
        req = BenchRequest(device=dev, manifest=manifest, model=loaded, runs=runs, warmup=warmup, threads=n_threads,
                           options=dict(opts), artifact=artifact)
        profiles.append(_run(r, req, progress))
    return profiles


def _run(r: Runner, req: BenchRequest, progress: bool) -> Profile:
    if not progress:
        return r.run(req)
    from hybridexport.console import plain
    from hybridexport.console import progress as bar

    label = plain(f"{r.name} · {req.label} · {req.artifact_format() or 'pytorch'}")
    total = (req.runs + req.warmup) if r.obtained == "measured" else None
    with bar(label, total=total) as (prog, task):
        req.options["progress"] = lambda k, _p=prog, _t=task: _p.advance(_t, k)
        return r.run(req)


from hybridexport.api import make_callable  # noqa: E402 - after bench() exists

make_callable(__name__)
