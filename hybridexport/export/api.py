"""``convert``: model → (rewrite) → artifact per format → verify → op table + manifest, cached, atomic.

Each artifact is written beside three records: its manifest (``<artifact>.json``), its op table
(``<artifact>.ops.json.gz``) and, where the format keeps one, its own sidecar (ExecuTorch's ETRecord).
All are complete before the manifest appears, and the manifest is what later stages trust.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.atomic import atomic_path, write_json
from hybridexport.errors import ConversionError, HybridExportError
from hybridexport.export import formats
from hybridexport.export.cache import (
    cache_key,
    code_fingerprint,
    reusable,
    sha256_path,
    size_bytes,
    tool_versions,
)
from hybridexport.export.diagnose import converter_failure
from hybridexport.export.formats.base import NotRunnableHere
from hybridexport.export.manifest import DEFAULT_OUT, Manifest, Parity, artifact_path, manifest_path
from hybridexport.export.options import EXPORTER_REVISION, BadOptionError, ExportOptions, resolve_precision
from hybridexport.export.quiet import converter_output
from hybridexport.optable import op_table_path

if TYPE_CHECKING:
    from torch import nn

    from hybridexport.export.formats.base import Format
    from hybridexport.zoo import LoadedModel


@dataclasses.dataclass
class _Rewrites:
    """The rewrite step, run at most once per pipeline and shared by the formats that use it."""

    loaded: LoadedModel
    enabled: bool
    passes: list[str] | None
    #: judge the default pipeline's passes by latency on the target (``device``, else the format's):
    #: "predicted", "measured" or "" (keep every verified pass)
    judged: str = "predicted"
    device: str | None = None
    done: dict[tuple[str, ...], tuple[nn.Module, dict[str, Any], float]] = dataclasses.field(default_factory=dict)
    judges: dict[str, Any] = dataclasses.field(default_factory=dict)
    keys: dict[str, str] = dataclasses.field(default_factory=dict)

    def prebuilt(self, fmt: str, module: nn.Module, opts: ExportOptions) -> tuple[Path, Any] | None:
        """The artifact ``fmt``'s judge already made of ``module`` with these options (None: convert it)."""
        judge = self.judges.get(fmt)
        if judge is None or judge.opts != opts:
            return None
        return judge.artifact_of(module)

    def judging(self, fmt: str) -> bool:
        """Whether ``fmt``'s passes are judged (the default pipeline only: ``passes`` forces a set)."""
        return self.enabled and bool(self.judged) and self.passes is None

    def judge_key(self, fmt: str) -> str:
        """What the judge's decisions depend on (part of the cache key): the target and, when predicted,
        its latency model as stored (the judge prices with it as is, so no per-boot probe enters)."""
        if not self.judging(fmt):
            return ""
        from hybridexport.rewrite.judge import target_device

        name = target_device(fmt, self.device)
        if self.judged == "measured":
            return f"{name}:measured"
        if name not in self.keys:
            from hybridexport.bench.devices import load_device

            lm = load_device(name).raw.get("latency_model")
            self.keys[name] = f"{name}:{cache_key({'latency_model': lm})[:16] if lm else 'none'}"
        return self.keys[name]

    def names(self, fmt: str) -> list[str]:
        """The passes ``fmt``'s artifact gets (the format's own pipeline unless passes were named)."""
        if not self.enabled:
            return []
        from hybridexport.rewrite.pipeline import resolve_passes

        return list(resolve_passes(self.passes, target=fmt))

    def run(self, fmt: str, opts: ExportOptions | None = None) -> tuple[nn.Module, dict[str, Any] | None, float]:
        names = tuple(self.names(fmt))
        if not names:
            return self.loaded.module, None, 0.0
        key = (*names, self.judge_key(fmt))
        if key not in self.done:
            from hybridexport.rewrite.judge import judge_for
            from hybridexport.rewrite.pipeline import run_pipeline

            t0 = time.perf_counter()
            judge, why = judge_for(fmt, self.device, opts, self.judged) if self.judging(fmt) else (None, "")
            if judge is not None:
                self.judges[fmt] = judge
            module, report = run_pipeline(self.loaded.module, self.loaded.example_inputs(), passes=list(names),
                                          target=fmt, count=False, judge=judge)
            d = report.to_dict()
            d = {k: v for k, v in d.items() if k not in ("ops_before", "ops_after")}
            d["judge"] = d["judge"] or why
            self.done[key] = (module.eval(), d, time.perf_counter() - t0)
        return self.done[key]


def convert(
    model: str | nn.Module | LoadedModel | Any,
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
    keep_mismatch: bool = False,
    allow_mismatch: bool = False,
    verify_inputs: int = 4,
    coreml_target: str | None = None,
    coreml_image_input: bool = False,
    keep_going: bool = False,
    on_result: Callable[[Manifest], None] | None = None,
    on_error: Callable[[str, HybridExportError], None] | None = None,
    example_inputs: Sequence[Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_names: Sequence[str] | None = None,
    name: str | None = None,
    device: str | None = None,
    judge: bool | str = True,
) -> list[Manifest]:
    """Export ``model`` to each format in ``to`` and return one manifest per artifact.

    ``model``: a zoo or ``timm:`` name, ``file.py:factory(...)``, a ``.pt2``, or an ``nn.Module`` with
    ``example_inputs`` (or ``input_shapes``) and a ``name`` (:func:`hybridexport.zoo.refs.load_model`).

    ``precision=None`` uses each format's default (fp16 for Core ML, fp32 otherwise). Each format's rewrite
    pipeline runs first unless ``rewrite=False``; ``passes`` names the passes instead. An artifact whose
    inputs (weights, input shapes, options, passes, tool versions, code) are unchanged is reused unless
    ``force``. ``keep_mismatch`` keeps an artifact that failed its parity check; ``allow_mismatch`` loads a
    checkpoint's matching keys only. With ``keep_going`` a failing format is reported through ``on_error``
    and the others still run. The default pipeline's passes are judged by latency on ``device`` (default: each
    format's device, iphone13 for Core ML) and kept only if it does not get slower: ``judge`` is True or
    "predicted" (the device's latency model), "measured" (timed here, host only) or False (keep every
    verified pass); see :mod:`hybridexport.rewrite.judge`.
    """
    names = formats.parse(to)
    if passes is not None and isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    if passes is not None and not rewrite:
        raise BadOptionError("passes and rewrite=False contradict each other (--passes with --no-rewrite); give one")
    if resolution is not None and not 1 <= int(resolution) <= 8192:
        raise BadOptionError(f"resolution {resolution} is not an input size; give 1..8192 (e.g. 224)")
    base = ExportOptions(precision=resolve_precision(names[0], precision), verify_inputs=verify_inputs,
                         coreml_target=coreml_target, coreml_image_input=coreml_image_input,
                         keep_mismatch=keep_mismatch, verbose=verbose, input_names=tuple(input_names or ()))
    taken = {o for n in names for o in formats.get(n).own_options}
    stray = sorted(base.given() - taken)
    if stray:
        flags = ", ".join("--" + s.replace("_", "-") for s in stray)
        raise BadOptionError(f"{flags} only applies to {formats.title('coreml')}; add --to coreml or leave it out")
    options = {n: dataclasses.replace(base, precision=resolve_precision(n, precision)) for n in names}
    for n in names:
        formats.get(n).check(options[n])
    if rewrite:
        from hybridexport.rewrite.pipeline import resolve_passes

        for n in names:
            resolve_passes(passes, target=n)  # unknown pass names fail here, before anything is built
    judge_how = "predicted" if judge is True else (judge or "")
    if device is not None:
        from hybridexport.bench.devices import load_device

        load_device(device)  # an unknown device fails here, before anything is built
    if judge_how and rewrite and passes is None:
        from hybridexport.rewrite.judge import check_judge

        for n in names:
            check_judge(judge_how, n, device)
    loaded = _load(model, resolution, checkpoint, allow_mismatch, example_inputs, input_shapes, name)
    if base.input_names and len(base.input_names) != len(loaded.input_shapes):
        raise BadOptionError(f"{len(base.input_names)} --input-name for a model with {len(loaded.input_shapes)} "
                             "inputs; give one name per input")
    rw = _Rewrites(loaded=loaded, enabled=rewrite, passes=list(passes) if passes is not None else None,
                   judged=judge_how, device=device)
    common = {
        "model": loaded.name,
        "resolution": loaded.resolution,
        "input_shapes": [list(s) for s in loaded.input_shapes],
        "weights_sha256": loaded.weights_sha256(),
        "definition": _definition_digest(loaded.spec.source),
        "versions": tool_versions(),
        "exporter_revision": EXPORTER_REVISION,
        "code": code_fingerprint(),
    }
    manifests: list[Manifest] = []
    for n in names:
        try:
            man = _convert_one(formats.get(n), loaded, rw, options[n], Path(out), common, force)
        except HybridExportError as exc:
            if not keep_going:
                raise
            if on_error is not None:
                on_error(n, exc)
            continue
        manifests.append(man)
        if on_result is not None:
            on_result(man)
    return manifests


def _definition_digest(source: str) -> str:
    """sha256 of the user's model file or saved program (``file:``/``pt2:`` sources), so that editing a
    ``forward`` without changing a weight still makes a new artifact; ``""`` for zoo and timm models (the
    installed versions and the weights identify those)."""
    kind, _, path = source.partition(":")
    if kind in ("file", "pt2") and Path(path).is_file():
        return sha256_path(Path(path))
    return ""


def _load(model: Any, resolution: int | None, checkpoint: str | Path | None, allow_mismatch: bool,
          example_inputs: Sequence[Any] | None = None, input_shapes: Sequence[Sequence[int]] | None = None,
          name: str | None = None) -> LoadedModel:
    from hybridexport.zoo import LoadedModel
    from hybridexport.zoo.refs import load_model

    if isinstance(model, LoadedModel):
        if checkpoint is not None:
            raise ConversionError("pass either a built LoadedModel or a checkpoint, not both")
        if resolution is not None and int(resolution) != model.resolution:
            return dataclasses.replace(model, resolution=int(resolution), input_shapes=[], examples=None)
    return load_model(model, checkpoint=checkpoint, resolution=resolution, input_shapes=input_shapes,
                      example_inputs=example_inputs, name=name, strict=not allow_mismatch)


def _convert_one(fmt: Format, loaded: LoadedModel, rw: _Rewrites, opts: ExportOptions, out: Path,
                 common: dict[str, Any], force: bool) -> Manifest:
    path = artifact_path(out, loaded.name, fmt.name, opts.precision, loaded.input_shapes).absolute()
    requested = rw.names(fmt.name)
    key = cache_key({**common, "format": fmt.name, "passes_requested": requested, "options": opts.key_fields(fmt.name),
                     **({"judge": jk} if (jk := rw.judge_key(fmt.name)) else {})})
    if not force:
        cached = reusable(path, key, keep_mismatch=opts.keep_mismatch)
        if cached is not None:
            cached.extra["reused"] = True
            return cached

    import torch

    from hybridexport.export.verify import reference_outputs, verification_inputs

    examples = loaded.example_inputs()
    shapes = [list(s) for s in loaded.input_shapes]
    with converter_output(opts.verbose, f"{loaded.name} → {fmt.title} {opts.precision}: converting and verifying"):
        module, report, rewrite_seconds = rw.run(fmt.name, opts)
        t0 = time.perf_counter()
        inputs = fmt.reference_inputs(opts, shapes, opts.verify_inputs) or verification_inputs(shapes, opts.verify_inputs)
        reference = reference_outputs(loaded.module, inputs)  # the unrewritten fp32 model is the reference
        rewritten = bool(report and report.get("applied"))
        with atomic_path(path) as tmp:
            try:
                made = rw.prebuilt(fmt.name, module, opts)
                if made:
                    built = _copy_prebuilt(made, tmp)
                else:
                    with torch.no_grad():  # every exporter traces without autograd state (formats do too)
                        built = fmt.convert(module, examples, tmp, opts)
            except Exception as exc:
                raise converter_failure(fmt.name, loaded.name, exc, module, examples,
                                        _hints(fmt, opts, fmt.failure_hints(opts), rewritten, rw)) from exc
            t_verify = time.perf_counter()
            parity = _verify(fmt, tmp, inputs, reference, opts, loaded.name, module, examples,
                             lambda hints: _hints(fmt, opts, hints, rewritten, rw))
            verify_seconds = time.perf_counter() - t_verify
            sha, size = sha256_path(tmp), size_bytes(tmp)
            built.table.artifact_sha256 = sha
            built.table.save(op_table_path(tmp))
            manifest_path(path).unlink(missing_ok=True)  # the old manifest must not describe the new file
    seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "cache_key": key,
        "reused": False,
        "parity_ok": None if not parity.n_inputs else parity.verified,
        "converter_seconds": round(built.converter_seconds, 3),
        "verify_seconds": round(verify_seconds, 3),
        "rewrite_seconds": round(rewrite_seconds, 3),
        "options": opts.key_fields(fmt.name),
        "weights_sha256": common["weights_sha256"],
        "checkpoint": loaded.checkpoint,
        "checkpoint_resized": loaded.load_report.get("resized", []),
        "passes_requested": requested,
        "rewrite": report,
        "workarounds": [],
        "module_mapping": built.table.module_mapping,
        "exporter_revision": EXPORTER_REVISION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    extra.update(built.extra)
    man = Manifest(
        model=loaded.name, resolution=loaded.resolution, format=fmt.name, precision=opts.precision, path=str(path),
        size_bytes=size, sha256=sha, versions=common["versions"], passes=list(report["applied"]) if report else [],
        parity=parity, ops=built.table.histogram(), rank5_tensors=built.table.rank5_tensors(),
        seconds=round(seconds, 3), input_shapes=shapes, op_table=op_table_path(path).name, extra=extra,
    )
    try:
        write_json(manifest_path(path), man.to_dict())
    except BaseException:
        _remove(path)  # no artifact without its manifest
        raise
    return man


def _copy_prebuilt(made: tuple[Path, Any], tmp: Path) -> Any:
    """The judge's artifact of the final model, copied to ``tmp`` (its Built as made)."""
    import shutil

    src, built = made
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copy2(src, tmp)
    built.extra = {**built.extra, "converted_by": "the rewrite judge (same model and options)"}
    return built


def _hints(fmt: Format, opts: ExportOptions, hints: list[str], rewritten: bool, rw: _Rewrites) -> list[str]:
    """``hints`` as a user may see them: without the options this conversion already ran with."""
    from hybridexport.export.hints import attempt_flags, honest_hints

    return honest_hints(hints, attempt_flags(fmt, opts, rewritten=rewritten), passes_given=rw.passes is not None)


def _verify(fmt: Format, artifact: Path, inputs: list[list[Any]], reference: list[Any], opts: ExportOptions,
            model_name: str, module: nn.Module, examples: tuple[Any, ...],
            hints: Callable[[list[str]], list[str]]) -> Parity:
    from hybridexport.export.verify import compare

    if opts.verify_inputs == 0:
        return Parity(verified=False, tolerance=opts.tolerance, reason="not verified: --verify-inputs 0")
    try:
        actual = fmt.run(artifact, [[x.numpy() for x in xs] for xs in inputs])
    except NotRunnableHere as why:
        return Parity(verified=False, tolerance=opts.tolerance, reason=str(why))
    except Exception as exc:
        raise converter_failure(fmt.name, model_name, exc, module, examples, hints(fmt.failure_hints(opts))) from exc
    parity = compare(reference, actual, opts.tolerance)
    parity.method = fmt.method(opts)
    if parity.verified:
        return parity
    if not opts.keep_mismatch:
        tries = hints(["--keep-mismatch to keep it", "--no-rewrite", "--precision fp32"])
        top1 = f", top-1 agreement {parity.top1_agreement:.0%}" if parity.top1_agreement is not None else ""
        raise ConversionError(
            f"{fmt.title} {opts.precision} artifact of {model_name} does not match PyTorch: rel L2 error "
            f"{parity.rel_l2_err:.2e} > tolerance {opts.tolerance:g}{top1}; nothing was written. Re-run with "
            f"{', or '.join(tries)}{fmt.mismatch_hint(opts)}"
        )
    parity.reason += " (kept with --keep-mismatch)"
    return parity


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
