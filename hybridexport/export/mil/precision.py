"""Where an fp16 (or int8-weight) ML Program loses precision: every op against an fp32 reference, on one input.

The reference is the same model converted again at fp32 by the project's own converter
(``hybridexport.export.formats.coreml(..., ExportOptions(precision="fp32"))``) and interpreted in float64.
It has the same op graph (coremltools runs the same passes; fp16 only adds casts and renames outputs
``<name>_cast_fp16``), so each op of the artifact meets its own fp32 twin by name, including the ops
coremltools fused (which PyTorch module hooks could not see); its end-to-end distance to PyTorch is
reported too, so converter faults are told apart from fp16 precision loss.

Per op: the relative L2 error ``||y - y_ref|| / ||y_ref||`` against its twin, the largest magnitudes,
inf/NaN counts and the share of its fp32 values below fp16's normal range (underflow). ``first_jump``
is the first op in program order whose error exceeds the tolerance (its inputs are still within it,
by order); ``origins`` are the ops where inf or NaN appear while none of their inputs has one, the
classic fp16 failure of activations above 65504 before a LayerNorm, softmax or attention logits. Module paths come from the artifact's op table when it
exists, else from the reference conversion's TorchScript scopes (:func:`hybridexport.modpath.from_mil_op`).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridexport.errors import InputFileError
from hybridexport.export.mil.interpreter import Interpreter, mil_dtype
from hybridexport.export.mil.program import Package, load_package
from hybridexport.export.mil.run import feeds

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14  # ≈ 6.1e-5: below it fp16 values are subnormal (fewer bits) and below 6e-8 zero
_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32)+$")


def twin_name(name: str) -> str:
    """The fp32 program's name of an fp16 program's value: ``var_27_cast_fp16`` → ``var_27``."""
    return _SUFFIX.sub("", name)


@dataclass
class OpError:
    """One output of one op of the artifact, against its fp32 twin."""

    index: int  # position of the op in the program
    name: str  # output name in the artifact
    op_type: str
    op_name: str  # the artifact's op name
    module: str  # nn.Module path ("" unknown, modpath.ROOT for the model itself)
    module_source: str  # "op_table", "scope" or ""
    shape: list[int]
    dtype: str  # declared dtype of the output
    reference: str = ""  # name of the twin in the reference program ("" when it has none)
    reference_op: str = ""  # the twin's op name (what coremltools' op_selector sees)
    rel_err: float | None = None  # None: no twin
    max_abs_err: float | None = None
    max_abs: float = 0.0  # largest finite |y|
    ref_max_abs: float | None = None  # largest |y_ref|
    inf: int = 0
    nan: int = 0
    subnormal: float = 0.0  # share of the nonzero fp32 values below fp16's normal range (underflow)
    origin: str = ""  # "inf" or "nan" when this op is where they first appear
    inherited_err: float = 0.0  # largest error among its inputs
    consumers: list[str] = field(default_factory=list)  # reference op names of the ops that read this output

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PrecisionReport:
    """Per-op errors of an artifact and the provenance of the comparison."""

    artifact: str
    model: str
    precision: str
    tolerance: float
    method: str
    reference: str
    module_mapping: str
    ops: list[OpError]
    input: str
    resolution: int = 0
    passes: list[str] = field(default_factory=list)
    sha256: str = ""
    output_rel_err: float | None = None  # artifact vs fp32 reference program, on the model outputs
    pytorch_rel_err: float | None = None  # artifact vs PyTorch fp32
    reference_pytorch_rel_err: float | None = None  # fp32 reference program vs PyTorch fp32
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def first_jump(self) -> OpError | None:
        return next((o for o in self.ops if o.rel_err is not None and not o.rel_err <= self.tolerance), None)

    @property
    def origins(self) -> list[OpError]:
        return [o for o in self.ops if o.origin]

    @property
    def matched_share(self) -> float:
        return sum(1 for o in self.ops if o.reference) / len(self.ops) if self.ops else 0.0

    def ok(self) -> bool:
        """No inf/NaN appeared and the outputs are within the tolerance of the fp32 reference."""
        return not self.origins and self.output_rel_err is not None and self.output_rel_err <= self.tolerance

    def suggestions(self) -> list[str]:
        """One line per problem: what to do about the first overflow/NaN and the first jump."""
        out = []
        for o in self.origins[:1]:
            rng = f"max |x| {o.ref_max_abs:.3g} in fp32" if o.ref_max_abs is not None else "no fp32 twin"
            what = "overflows fp16 (values beyond ±65504 become inf)" if o.origin == "inf" else "turns NaN"
            out.append(f"{_where(o)} {what} ({rng}): " + self._fix(o, rescale=o.origin == "inf"))
        jump = self.first_jump
        if jump is not None and (not self.origins or jump.index < self.origins[0].index):
            head = f"error first exceeds {self.tolerance:g} at {_where(jump)}: rel L2 {jump.rel_err:.2e} " \
                   f"(inputs {jump.inherited_err:.1e})"
            if jump.subnormal > 0.5:  # most of what it must produce is below fp16's normal range
                head += (f"; {jump.subnormal:.0%} of its fp32 values are below fp16's normal range "
                         f"({FP16_MIN_NORMAL:.1e}, max |x| {jump.ref_max_abs:.1e}): they lose bits or flush to 0")
                out.append(head + ": " + self._fix(jump, rescale=False, underflow=True))
            else:
                out.append(head + ": " + self._fix(jump, rescale=False))
        if not out:
            out.append(f"no op exceeds the tolerance {self.tolerance:g} and no inf/NaN appears: "
                       f"the outputs are {self.output_rel_err:.1e} from the fp32 program")
        return out

    def _fix(self, o: OpError, rescale: bool, underflow: bool = False) -> str:
        tail = ", or rescale its input/weights so its activations stay below 65504" if rescale else ""
        if underflow:
            tail = ", or rescale its input/weights so its values stay above 6.1e-5"
        if self.precision == "fp32":
            return ("the program already computes in fp32, so rescale its input/weights so its activations stay "
                    "below 65504" if rescale else "the program already computes in fp32; look for a converter fault")
        # an out-of-range value must stay fp32 from the op that makes it to the ops that read it
        # (a boundary cast makes nothing itself)
        keep = ([] if o.op_type == "cast" else [o.reference_op or o.op_name]) + (
            o.consumers if rescale or underflow else [])
        names = ", ".join(f"'{n}'" for n in dict.fromkeys(keep))
        fp32 = (f"keep {names} in fp32: ct.convert(..., compute_precision=ct.transforms.FP16ComputePrecision("
                f"op_selector=lambda op: op.name not in {{{names}}}))")
        if self.precision == "int8" and o.op_type in ("conv", "linear", "matmul", "conv_transpose"):
            return (f"leave its weights unquantized (linear_quantize_weights with OptimizationConfig("
                    f"op_name_configs={{'{o.op_name}': None}})), or {fp32}{tail}")
        return fp32 + tail

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        jump = self.first_jump
        d["first_jump"] = jump.name if jump else None
        d["origins"] = [o.name for o in self.origins]
        d["matched_share"] = self.matched_share
        d["ok"] = self.ok()
        d["suggestions"] = self.suggestions()
        return d


def _where(o: OpError) -> str:
    mod = f"module '{o.module}'" if o.module else "an unmapped module"
    return f"{o.op_type} '{o.name}' ({mod})"


# ------------------------------------------------------------------ comparing two programs
def compare_programs(program: Any, reference: Any, feed: dict[str, Any], ref_feed: dict[str, Any], *,
                     module_of: Callable[[str, str], tuple[str, str]] | None = None,
                     ) -> tuple[list[OpError], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run ``program`` (interpreted at its own precision) and ``reference`` (float64) and compare op by op.

    ``module_of(name, twin) -> (module, source)`` maps an output to its module. Returns the rows and
    both programs' outputs by name.
    """
    ref_interp = Interpreter(reference, wide=True)
    interp = Interpreter(program)
    ref_values: dict[str, torch.Tensor] = {}
    ref_ops: dict[str, str] = {}  # output name -> op name
    ref_outputs: dict[tuple[str, str], list[str]] = {}  # (op name, op type) -> output names

    def keep(op: Any, outs: list[torch.Tensor]) -> None:
        ref_outputs[(op.name, op.op_type)] = [v.name for v in op.outputs]
        for v, t in zip(op.outputs, outs, strict=True):
            ref_values[v.name] = t.to(torch.float32) if t.is_floating_point() else t
            ref_ops[v.name] = op.name

    def twin_of(op: Any, i: int, shape: tuple[int, ...]) -> str:
        """The reference value of output ``i`` of ``op``: same op (name without fp16 suffix, same type),
        else the value of the same name (a boundary cast keeps the model output's name)."""
        for key in ((twin_name(op.name), op.op_type), (op.name, op.op_type)):
            names = ref_outputs.get(key)
            if names and len(names) == len(op.outputs) and tuple(ref_values[names[i]].shape) == shape:
                return names[i]
        for name in (twin_name(op.outputs[i].name), op.outputs[i].name):
            if name in ref_values and tuple(ref_values[name].shape) == shape:
                return name
        return ""

    ref_result = ref_interp.run(ref_feed, observer=keep)
    rows: list[OpError] = []
    errs: dict[str, float] = {}
    bad: set[str] = set()  # values holding inf or NaN
    for name, t in interp.prepare(feed).items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.add(name)

    def inputs_of(op: Any) -> list[str]:
        names = []
        for v in op.inputs.values():
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                if x.op is None or x.op.op_type != "const":
                    names.append(x.name)
        return names

    index = {id(s.op): i for i, s in enumerate(interp.steps)}

    def observe(op: Any, outs: list[torch.Tensor]) -> None:
        ins = inputs_of(op)
        inherited = max((errs.get(n, 0.0) for n in ins), default=0.0)
        for i, (v, y) in enumerate(zip(op.outputs, outs, strict=True)):
            twin = twin_of(op, i, tuple(y.shape))
            row = OpError(index=index[id(op)], name=v.name, op_type=op.op_type, op_name=op.name, module="",
                          module_source="", shape=list(y.shape), dtype=mil_dtype(v), inherited_err=inherited)
            yf = y.to(torch.float64)
            finite = torch.isfinite(yf)
            row.inf = int(torch.isinf(yf).sum())
            row.nan = int(torch.isnan(yf).sum())
            row.max_abs = float(yf[finite].abs().max()) if bool(finite.any()) else 0.0
            if row.inf or row.nan:
                bad.add(v.name)
                if not any(n in bad for n in ins):
                    row.origin = "inf" if row.inf else "nan"
            r = ref_values.get(twin) if twin else None
            if r is not None:
                row.reference, row.reference_op = twin, ref_ops.get(twin, "")
                rf = r.to(torch.float64)
                diff = yf - rf
                denom = float(torch.linalg.vector_norm(rf))
                num = float(torch.linalg.vector_norm(diff))
                row.rel_err = num / denom if denom > 0 else num
                if not np.isfinite(row.rel_err):
                    row.rel_err = float("inf")
                row.max_abs_err = float(diff.abs().max()) if diff.numel() else 0.0
                row.ref_max_abs = float(rf.abs().max()) if rf.numel() else 0.0
                nonzero = rf != 0
                if row.dtype == "fp16" and bool(nonzero.any()):
                    row.subnormal = float((rf[nonzero].abs() < FP16_MIN_NORMAL).double().mean())
                errs[v.name] = row.rel_err
            if module_of is not None:
                row.module, row.module_source = module_of(v.name, row.reference)
            row.consumers = sorted({_ref_op_name(c) for c in v.child_ops})
            rows.append(row)

    result = interp.run(feed, observer=observe)
    return rows, result.outputs, ref_result.outputs


def _ref_op_name(op: Any) -> str:
    """The name an op of an fp16 program had before fp16 casting (what ``op_selector`` is given)."""
    return twin_name(op.name)


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    x = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in a])
    r = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in b])
    d = float(np.linalg.norm(x - r))
    n = float(np.linalg.norm(r))
    v = d / n if n > 0 else d
    return v if np.isfinite(v) else float("inf")


# ------------------------------------------------------------------ an artifact convert made
@contextlib.contextmanager
def keep_converted() -> Iterator[list[Any]]:
    """Keep the MLModels ``coremltools.convert`` returns inside the block (their programs carry scopes)."""
    import coremltools as ct

    kept: list[Any] = []
    original = ct.convert

    def convert(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        kept.append(model)
        return model

    ct.convert = convert
    try:
        yield kept
    finally:
        ct.convert = original


def scope_modules(program: Any) -> dict[str, str]:
    """Output name → module path from the TorchScript scopes of an in-memory converted program."""
    from hybridexport import modpath
    from hybridexport.export.mil.interpreter import iter_ops

    out = {}
    for op in iter_ops(program.functions["main"]):
        path = modpath.from_mil_op(op)
        for v in op.outputs:
            out[v.name] = path
    return out


def precision_report(artifact: str | Path, *, seed: int | None = None, tolerance: float | None = None,
                     checkpoint: str | None = None, verbose: bool = False) -> PrecisionReport:
    """Compare every op of the Core ML artifact ``convert`` made at ``artifact`` with an fp32 reference.

    The manifest beside it names the model, resolution, checkpoint and passes; the model is rebuilt
    from them (``checkpoint`` overrides a moved checkpoint file). ``seed`` picks the input (default:
    the first parity input); ``tolerance`` defaults to the artifact precision's parity tolerance.
    """
    from hybridexport.export.manifest import Manifest, manifest_path

    path = Path(artifact)
    pkg = load_package(path)
    Interpreter(pkg.program)  # every op type is checked before any work (NotInterpreted)
    mpath = manifest_path(path)
    if not mpath.exists():
        raise InputFileError(f"no manifest '{mpath.name}' beside '{path}'; diagnose rebuilds the model from the "
                             "manifest `hybridexport convert --to coreml` writes: convert it with hybridexport")
    man = Manifest.load(mpath)
    if man.format != "coreml":
        raise InputFileError(f"'{path}' is a {man.format} artifact; diagnose reads Core ML packages")
    module, loaded, options = _rebuild(man, checkpoint)
    return module_report(path, module, reference_module=loaded.module, precision=man.precision,
                         coreml_target=options["coreml_target"], image_input=options["coreml_image_input"],
                         tolerance=tolerance, seed=seed, model=man.model, passes=list(man.passes),
                         sha256=man.sha256, resolution=man.resolution, verbose=verbose, package=pkg)


def module_report(artifact: str | Path, module: Any, *, reference_module: Any = None, precision: str | None = None,
                  coreml_target: str = "iOS15", image_input: bool = False, tolerance: float | None = None,
                  seed: int | None = None, model: str = "", passes: list[str] | None = None, sha256: str = "",
                  resolution: int = 0, verbose: bool = False, package: Package | None = None) -> PrecisionReport:
    """:func:`precision_report` for a package converted from ``module`` (the module as converted, i.e.
    rewritten); ``reference_module`` (default ``module``) is the PyTorch model the outputs are compared with."""
    from hybridexport.export.cache import tool_versions
    from hybridexport.export.mil import METHODS
    from hybridexport.export.options import TOLERANCE
    from hybridexport.export.verify import VERIFY_SEED_BASE, flatten_outputs

    path = Path(artifact)
    pkg = package or load_package(path)
    Interpreter(pkg.program)
    precision = precision or program_kind(pkg.main)
    tol = TOLERANCE.get(precision, 1e-2) if tolerance is None else float(tolerance)
    seed = VERIFY_SEED_BASE if seed is None else int(seed)
    if len(pkg.inputs) != 1:
        raise InputFileError(f"'{path}' has {len(pkg.inputs)} inputs; diagnose handles one-input models")
    shape = pkg.inputs[0].shape
    x = _input(shape, seed, image_input)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="hybridexport-diagnose-") as tmp:
        ref_path = Path(tmp) / "reference.fp32.mlpackage"
        scopes = _reference(module, example, ref_path, coreml_target, image_input, verbose)
        ref_pkg = load_package(ref_path)
        module_of, mapping = _module_mapper(path, scopes)
        rows, outs, ref_outs = compare_programs(pkg.program, ref_pkg.program, feeds(pkg, x), feeds(ref_pkg, x),
                                                module_of=module_of)
    art = [outs[o.name] for o in pkg.outputs]
    ref = [ref_outs[o.name] for o in ref_pkg.outputs]
    with torch.no_grad():
        torch_out = flatten_outputs((reference_module or module)(torch.from_numpy(np.asarray(x))))
    kind = "pixel image" if image_input else "standard normal"
    return PrecisionReport(
        artifact=str(path), model=model, precision=precision, tolerance=tol,
        method=METHODS["fp32" if precision == "fp32" else "fp16"],
        reference=(f"the model as converted, converted again at fp32 by hybridexport.export.formats.coreml "
                   f"({coreml_target}) and interpreted in float64; ops matched by name"),
        module_mapping=mapping, ops=rows, input=f"seeded {kind} input, seed {seed}",
        resolution=resolution, passes=list(passes or []), sha256=sha256,
        output_rel_err=_rel(art, ref), pytorch_rel_err=_rel(art, torch_out),
        reference_pytorch_rel_err=_rel(ref, torch_out),
        versions={k: v for k, v in tool_versions().items() if k in ("coremltools", "torch", "timm")},
    )


def program_kind(function: Any) -> str:
    """"int8" when weights are dequantized by constexpr ops, else the program's compute precision."""
    from hybridexport.export.mil.interpreter import program_precision

    if any(op.op_type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
           for op in function.operations):
        return "int8"
    return program_precision(function)


def _rebuild(man: Any, checkpoint: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """(module as converted, the loaded model, Core ML options) from a manifest."""
    from hybridexport.errors import CheckpointError
    from hybridexport.zoo import build_model

    ckpt = checkpoint or man.extra.get("checkpoint")
    if ckpt and not Path(ckpt).exists():
        raise CheckpointError(f"the checkpoint the manifest names ('{ckpt}') does not exist; pass --checkpoint PATH")
    loaded = build_model(man.model, checkpoint=ckpt, resolution=man.resolution)
    want = man.extra.get("weights_sha256")
    if want and loaded.weights_sha256() != want:
        hint = "pass the checkpoint it was converted with (--checkpoint PATH)" if not checkpoint else (
            "this checkpoint is not the one it was converted with")
        raise CheckpointError(f"the rebuilt {man.model} does not have the weights the artifact was converted from; {hint}")
    module = loaded.module
    if man.passes:
        from hybridexport.rewrite.pipeline import run_pipeline

        module, report = run_pipeline(loaded.module, loaded.example_input(), passes=man.passes, count=False)
        if list(report.applied()) != list(man.passes):
            raise InputFileError(f"rewriting {man.model} again applied {list(report.applied())}, the artifact was "
                                 f"converted with {man.passes}; re-run `hybridexport convert --force`")
    opts = dict(man.extra.get("options") or {})
    options = {
        "coreml_target": man.extra.get("coreml_target") or opts.get("coreml_target") or "iOS15",
        "coreml_image_input": bool(opts.get("coreml_image_input", "image_input" in man.extra)),
    }
    return module, loaded, options


def _input(shape: tuple[int, ...], seed: int, image: bool) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    if not image:
        return torch.randn(*shape, generator=g).numpy()
    from hybridexport.export.formats.coreml import image_params

    p = image_params()
    pixels = torch.randint(0, 256, tuple(shape), generator=g).float()
    return (pixels * p["scale"] + torch.tensor(p["bias"]).view(1, 3, 1, 1)).numpy()


def _reference(module: Any, example: torch.Tensor, path: Path, target: str, image_input: bool,
               verbose: bool) -> dict[str, str]:
    """Convert ``module`` at fp32 into ``path``; its output name → module path from the conversion's scopes."""
    from hybridexport.export import formats
    from hybridexport.export.options import ExportOptions
    from hybridexport.export.quiet import converter_output

    opts = ExportOptions(precision="fp32", coreml_target=target, coreml_image_input=image_input, verify_inputs=0)
    with converter_output(verbose, "converting the fp32 reference"), keep_converted() as kept:
        formats.get("coreml").convert(module, (example,), path, opts)
    return scope_modules(kept[-1]._mil_program) if kept else {}  # noqa: SLF001


def _module_mapper(artifact: Path, scopes: dict[str, str]) -> tuple[Callable[[str, str], tuple[str, str]], str]:
    from hybridexport.optable import OpTable, op_table_path

    table_path = op_table_path(artifact)
    if table_path.exists():
        table = OpTable.load(table_path)

        def from_table(name: str, twin: str) -> tuple[str, str]:
            m = table.module_of(name)
            if m:
                return m, "op_table"
            m = scopes.get(twin, "") if twin else ""  # ops the table leaves out (casts, constants' consumers)
            return (m, "scope") if m else ("", "")

        return from_table, f"the artifact's op table ({table_path.name}), else the fp32 reference's scopes"

    def from_scopes(name: str, twin: str) -> tuple[str, str]:
        m = scopes.get(twin, "") if twin else ""
        return (m, "scope") if m else ("", "")

    return from_scopes, "TorchScript scopes of the fp32 reference conversion, matched by name"


__all__ = ["FP16_MAX", "OpError", "PrecisionReport", "compare_programs", "keep_converted", "module_report",
           "precision_report", "scope_modules", "twin_name"]
