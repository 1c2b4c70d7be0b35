"""``convert``: model → (rewrite) → artifact per format → verify → manifest, with caching and atomic writes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.atomic import atomic_path, write_json
from hybridexport.errors import ConversionError, HybridExportError
from hybridexport.export.base import NotRunnableHere, format_module
from hybridexport.export.cache import (
    cache_key,
    code_fingerprint,
    reusable,
    sha256_path,
    size_bytes,
    tool_versions,
)
from hybridexport.export.diagnose import FORMAT_TITLES, converter_failure
from hybridexport.export.manifest import DEFAULT_OUT, Manifest, Parity, artifact_path, manifest_path
from hybridexport.export.options import EXPORTER_REVISION, ExportOptions, parse_formats, resolve_precision
from hybridexport.export.quiet import converter_output

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.zoo import LoadedModel


@dataclasses.dataclass
class _Rewrite:
    """The rewrite step, run at most once per ``convert`` call and shared by all formats."""

    loaded: LoadedModel
    enabled: bool
    passes: list[str] | None
    requested: list[str]  # resolved pass names (for the cache key); [] when disabled
    module: nn.Module | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    report: dict[str, Any] | None = None
    seconds: float = 0.0

    def run(self, example: torch.Tensor) -> nn.Module:
        if self.module is not None:
            return self.module
        if not self.enabled:
            self.module = self.loaded.module
            return self.module
        run_pipeline = _pipeline()[0]
        t0 = time.perf_counter()
        module, report = run_pipeline(self.loaded.module, example, passes=self.passes, count=False)
        self.seconds = time.perf_counter() - t0
        self.module, self.applied = module.eval(), list(report.applied())
        d = report.to_dict()
        self.report = {k: v for k, v in d.items() if k not in ("ops_before", "ops_after")}
        return self.module


def _pipeline() -> tuple[Callable[..., Any], Callable[..., list[str]]]:
    """``(run_pipeline, resolve_passes)`` from the rewrite stage, or a clear error when it cannot load."""
    try:
        from hybridexport.rewrite import pipeline

        pipeline.resolve_passes(None)  # loads every registered pass module
    except ImportError as exc:
        if not (getattr(exc, "name", None) or "").startswith("hybridexport.rewrite") and "hybridexport.rewrite" not in str(
            exc
        ):
            raise
        raise ConversionError(
            f"the rewrite stage (hybridexport.rewrite.pipeline) cannot be loaded ({exc}); "
            "re-run with --no-rewrite (rewrite=False) to export the reference model unchanged"
        ) from None
    return pipeline.run_pipeline, pipeline.resolve_passes


def convert(
    model: str | LoadedModel,
    to: str | Sequence[str] = "onnx",
    out: str | Path = DEFAULT_OUT,
    precision: str | None = None,
    resolution: int | None = None,
    checkpoint: str | Path | None = None,
    force: bool = False,
    rewrite: bool = True,
    passes: Sequence[str] | str | None = None,
    verbose: bool = False,
    *,
    allow_mismatch: bool = False,
    verify_inputs: int = 4,
    coreml_target: str | None = None,
    coreml_image_input: bool = False,
    keep_going: bool = False,
    on_result: Callable[[Manifest], None] | None = None,
    on_error: Callable[[str, HybridExportError], None] | None = None,
) -> list[Manifest]:
    """Export ``model`` to each format in ``to`` and return one manifest per artifact.

    ``precision=None`` uses each format's default (fp16 for Core ML, fp32 otherwise). The default rewrite
    pipeline runs first unless ``rewrite=False``; ``passes`` picks passes. An artifact whose inputs
    (weights, options, passes, tool versions) are unchanged is reused unless ``force``. With
    ``keep_going`` a failing format is reported through ``on_error`` and the others still run.
    """
    formats = parse_formats(to)
    loaded = _load(model, resolution, checkpoint)
    if passes is not None and isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    requested = _pipeline()[1](passes) if rewrite else []
    rw = _Rewrite(loaded=loaded, enabled=rewrite, passes=list(passes) if passes is not None else None,
                  requested=list(requested))
    common = {
        "model": loaded.name,
        "resolution": loaded.resolution,
        "weights_sha256": loaded.weights_sha256(),
        "passes_requested": rw.requested,
        "versions": tool_versions(),
        "exporter_revision": EXPORTER_REVISION,
        "code": code_fingerprint(),
    }
    manifests: list[Manifest] = []
    for fmt in formats:
        try:
            opts = ExportOptions(
                precision=resolve_precision(fmt, precision),
                verify_inputs=verify_inputs,
                coreml_target=coreml_target,
                coreml_image_input=coreml_image_input,
                allow_mismatch=allow_mismatch,
                verbose=verbose,
            )
            opts.check_for(fmt)
            man = _convert_one(fmt, loaded, rw, opts, Path(out), common, force)
        except HybridExportError as exc:
            if not keep_going:
                raise
            if on_error is not None:
                on_error(fmt, exc)
            continue
        manifests.append(man)
        if on_result is not None:
            on_result(man)
    return manifests


def _load(model: str | LoadedModel, resolution: int | None, checkpoint: str | Path | None) -> LoadedModel:
    from hybridexport.zoo import LoadedModel, build_model

    if isinstance(model, LoadedModel):
        if checkpoint is not None:
            raise ConversionError("pass either a built LoadedModel or a checkpoint, not both")
        if resolution is not None and int(resolution) != model.resolution:
            return dataclasses.replace(model, resolution=int(resolution))
        return model
    return build_model(model, checkpoint=checkpoint, resolution=resolution)


def _convert_one(
    fmt: str,
    loaded: LoadedModel,
    rw: _Rewrite,
    opts: ExportOptions,
    out: Path,
    common: dict[str, Any],
    force: bool,
) -> Manifest:
    path = artifact_path(out, loaded.name, fmt, opts.precision).absolute()
    key = cache_key({**common, "format": fmt, "options": opts.key_fields(fmt)})
    if not force:
        cached = reusable(path, key, allow_mismatch=opts.allow_mismatch)
        if cached is not None:
            cached.extra["reused"] = True
            cached.path = str(path)  # where it is now, should the output folder have moved
            return cached

    from hybridexport.export.verify import reference_outputs, verification_inputs

    fmod = format_module(fmt)
    title = FORMAT_TITLES[fmt]
    example = loaded.example_input()
    with converter_output(opts.verbose, f"{loaded.name} → {title} {opts.precision}: converting and verifying"):
        module = rw.run(example)
        t0 = time.perf_counter()
        hook = getattr(fmod, "reference_inputs", None)
        inputs = (hook(opts, list(loaded.input_shape), opts.verify_inputs) if hook else None) or (
            verification_inputs(loaded.input_shape, opts.verify_inputs)
        )
        reference = reference_outputs(loaded.module, inputs)  # the unrewritten fp32 model is the reference
        with atomic_path(path) as tmp:
            try:
                built = fmod.build(module, example, tmp, opts)
            except Exception as exc:
                raise converter_failure(fmt, loaded.name, exc, module, example) from exc
            t_verify = time.perf_counter()
            parity = _verify(fmt, fmod, tmp, inputs, reference, opts, loaded.name, module, example)
            verify_seconds = time.perf_counter() - t_verify
            sha, size = sha256_path(tmp), size_bytes(tmp)
            manifest_path(path).unlink(missing_ok=True)  # the old manifest must not describe the new file
    seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "cache_key": key,
        "reused": False,
        "parity_ok": None if not parity.n_inputs else parity.verified,
        "converter_seconds": round(built.converter_seconds, 3),
        "verify_seconds": round(verify_seconds, 3),
        "rewrite_seconds": round(rw.seconds, 3),
        "options": opts.key_fields(fmt),
        "weights_sha256": common["weights_sha256"],
        "checkpoint": loaded.checkpoint,
        "checkpoint_resized": loaded.load_report.get("resized", []),
        "input_shape": list(loaded.input_shape),
        "rewrite": rw.report,
        "workarounds": [],
        "exporter_revision": EXPORTER_REVISION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    extra.update(built.extra)
    man = Manifest(
        model=loaded.name,
        resolution=loaded.resolution,
        format=fmt,
        precision=opts.precision,
        path=str(path),
        size_bytes=size,
        sha256=sha,
        versions=common["versions"],
        passes=list(rw.applied),
        parity=parity,
        ops=built.ops,
        rank5_tensors=built.rank5_tensors,
        seconds=round(seconds, 3),
        extra=extra,
    )
    try:
        write_json(manifest_path(path), man.to_dict())
    except BaseException:
        _remove(path)  # no artifact without its manifest
        raise
    return man


def _verify(
    fmt: str,
    fmod: Any,
    artifact: Path,
    inputs: list[torch.Tensor],
    reference: list[Any],
    opts: ExportOptions,
    model_name: str,
    module: nn.Module,
    example: torch.Tensor,
) -> Parity:
    from hybridexport.export.verify import compare

    if opts.verify_inputs == 0:
        return Parity(verified=False, tolerance=opts.tolerance, reason="not verified: --verify-inputs 0")
    try:
        actual = fmod.run(artifact, [x.numpy() for x in inputs])
    except NotRunnableHere as why:
        return Parity(verified=False, tolerance=opts.tolerance, reason=str(why))
    except Exception as exc:
        raise converter_failure(fmt, model_name, exc, module, example) from exc
    parity = compare(reference, actual, opts.tolerance)
    if parity.verified:
        return parity
    title = FORMAT_TITLES[fmt]
    if not opts.allow_mismatch:
        raise ConversionError(
            f"{title} {opts.precision} artifact of {model_name} does not match PyTorch: rel L2 error "
            f"{parity.rel_l2_err:.2e} > tolerance {opts.tolerance:g}, top-1 agreement "
            f"{parity.top1_agreement:.0%}; nothing was written. Re-run with --allow-mismatch to keep it, "
            f"or try --no-rewrite / --precision fp32"
        )
    parity.reason += " (kept with --allow-mismatch)"
    return parity


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
