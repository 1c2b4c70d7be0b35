"""Execute the ``main`` function of an ML Program op by op, in the precision the program declares.

Rules:

* every op's result is stored at the MIL dtype the program declares for it: an fp16 output is rounded
  to fp16 (round to nearest even; beyond ±65504 it becomes ±inf, as on the device), fp32 stays fp32,
  ints and bools are exact; inputs are converted to the declared input dtype first;
* inside one op the arithmetic is fp32 (conv/matmul accumulate in fp32, reductions too), from inputs
  that are exactly the stored fp16 (or fp32) values; weights are the values stored in the package,
  int8 weights dequantized by the program's own ``constexpr_*`` ops (evaluated once at load);
* ``wide=True`` computes in float64 and keeps fp32 values in float64: a high-precision reference for an
  fp32 program (fp16 values are still rounded to fp16);
* every op type is checked before anything runs: an op without a kernel raises :class:`NotInterpreted`;
  every result's shape is checked against the shape the program declares (:class:`ProgramError`).

What it cannot reproduce: how the device really computes. The Neural Engine and GPU may accumulate
in fp16 or with other rounding inside an op, fuse ops into one kernel (conv+bias+activation,
layer_norm, attention) with no fp16 rounding in between, approximate transcendental functions
(exp, erf, tanh) differently, or run a part on the CPU in fp32. Results are therefore a reference of
the program's declared semantics, not a prediction of the device's bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridexport.export.mil import METHODS
from hybridexport.export.mil import kernels as _kernels  # noqa: F401  (registers every kernel)
from hybridexport.export.mil.errors import FeedError, NotInterpreted, ProgramError
from hybridexport.export.mil.registry import KERNELS, Args, Const

_CONST_OPS = ("const",)
_FLOAT_KINDS = ("fp16", "fp32", "fp64")
#: ops whose results are input values moved or selected, never new values: with inputs of the output's
#: dtype their results are exact and need no rounding (which would also copy their views)
_EXACT = frozenset({
    "reshape", "transpose", "expand_dims", "squeeze", "flatten2d", "slice_by_index", "slice_by_size", "split",
    "concat", "stack", "tile", "reverse", "gather", "gather_along_axis", "gather_nd", "pixel_shuffle",
    "pixel_unshuffle", "depth_to_space", "space_to_depth", "sliding_windows", "crop", "identity", "select",
    "upsample_nearest_neighbor", "resize_nearest_neighbor", "relu", "max_pool", "reduce_max", "reduce_min",
    "maximum", "minimum", "clip",
})


def mil_dtype(var: Any) -> str:
    """The MIL dtype name of a Var's elements ("fp16", "fp32", "int32", "bool", "string", ...)."""
    from coremltools.converters.mil.mil import types

    t = var.sym_type
    prim = t.get_primitive() if types.is_tensor(t) else t
    return types.builtin_to_string(prim)


def _static_shape(var: Any) -> tuple[Any, ...] | None:
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    shape = tuple(var.shape)
    return None if any(is_symbolic(s) for s in shape) else tuple(int(s) for s in shape)


def iter_ops(block: Any) -> list[Any]:
    """Every op of ``block`` and of blocks nested in it, in program order."""
    out = []
    for op in block.operations:
        out.append(op)
        for b in getattr(op, "blocks", []) or []:
            out.extend(iter_ops(b))
    return out


def uninterpreted(function: Any) -> list[str]:
    """Op types of ``function`` (a MIL Function) that have no kernel, sorted."""
    return sorted({op.op_type for op in iter_ops(function) if op.op_type not in _CONST_OPS
                   and op.op_type not in KERNELS})


def program_precision(function: Any) -> str:
    """"fp16" when any computing op of ``function`` outputs fp16, else "fp32"."""
    for op in function.operations:
        if op.op_type in _CONST_OPS or op.op_type.startswith("constexpr_"):
            continue
        if any(mil_dtype(v) == "fp16" for v in op.outputs):
            return "fp16"
    return "fp32"


@dataclass
class _Step:
    op: Any
    fn: Callable[[Args], Any]
    args: Args
    outputs: list[str]
    kinds: list[str]
    shapes: list[tuple[int, ...] | None]
    free: list[str] = field(default_factory=list)  # values whose last use is this step
    exact: bool = False  # results need no rounding (see _EXACT)


@dataclass
class Result:
    """Outputs of one run (by output name, in program order) and, when recorded, every op's output."""

    outputs: dict[str, np.ndarray]
    trace: dict[str, np.ndarray] = field(default_factory=dict)

    def ordered(self, names: Sequence[str]) -> list[np.ndarray]:
        return [self.outputs[n] for n in names]


class Interpreter:
    """A compiled MIL ``main`` function: ``run(feeds)`` executes it op by op.

    ``program`` is a coremltools MIL Program (``hybridexport.export.mil.program.load_package(path).program``
    or an ``MLModel._mil_program``). Construction checks every op type (:class:`NotInterpreted`) and
    evaluates constants, so a run does no set-up work.
    """

    def __init__(self, program: Any, *, wide: bool = False) -> None:
        if "main" not in getattr(program, "functions", {}):
            raise ProgramError("the MIL program has no 'main' function")
        self.function = program.functions["main"]
        missing = uninterpreted(self.function)  # control flow (cond, while_loop) has no kernel either
        if missing:
            first = next(op.name for op in iter_ops(self.function) if op.op_type == missing[0])
            raise NotInterpreted(missing, first)
        self.wide = wide
        self.fdtype = torch.float64 if wide else torch.float32
        self.precision = program_precision(self.function)
        self.method = METHODS[self.precision] + (" in float64" if wide else "")
        self.input_names = list(self.function.inputs)
        self.input_vars = dict(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]
        self.consts: dict[str, Const] = {}
        self.steps: list[_Step] = []
        self._compile()

    @classmethod
    def from_package(cls, path: str | Path, *, wide: bool = False) -> Interpreter:
        from hybridexport.export.mil.program import load_package

        return cls(load_package(path).program, wide=wide)

    # ------------------------------------------------------------------ compile
    def _compile(self) -> None:
        last_use: dict[str, int] = {}
        for op in self.function.operations:
            if op.op_type in _CONST_OPS:
                self.consts[op.outputs[0].name] = Const(op.outputs[0].val, self.fdtype)
                continue
            bindings = {name: self._bind(v) for name, v in op.inputs.items()}
            kinds = [mil_dtype(v) for v in op.outputs]
            args = Args(op.name, op.op_type, bindings, self.fdtype, kinds, [_static_shape(v) for v in op.outputs])
            fn = KERNELS[op.op_type]
            if op.op_type.startswith("constexpr_"):  # weights: evaluate once, with the same kernels
                results = self._call(fn, args, op)
                for v, kind, t in zip(op.outputs, kinds, results, strict=True):
                    t = self._store(t, kind)
                    self.consts[v.name] = Const(_to_numpy(t, kind), self.fdtype)
                continue
            step = _Step(op, fn, args, [v.name for v in op.outputs], kinds, args.out_shapes)
            floats = [mil_dtype(x) for v in op.inputs.values() for x in (v if isinstance(v, (list, tuple)) else [v])
                      if mil_dtype(x) in _FLOAT_KINDS]
            step.exact = op.op_type in _EXACT and len(set(kinds)) == 1 and all(k == kinds[0] for k in floats)
            for b in bindings.values():
                for name in (b if isinstance(b, list) else [b]):
                    if isinstance(name, str):
                        last_use[name] = len(self.steps)
            self.steps.append(step)
        keep = set(self.output_names)
        for name, i in last_use.items():
            if name not in keep:
                self.steps[i].free.append(name)

    def _bind(self, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [self._bind(x) for x in v]
        if v.name in self.consts:
            return self.consts[v.name]
        return v.name

    # ------------------------------------------------------------------ run
    def run(self, feeds: Mapping[str, Any] | Sequence[Any], *, record: bool = False,
            observer: Callable[[Any, list[torch.Tensor]], None] | None = None) -> Result:
        """Execute ``main`` on ``feeds`` (by input name, or in input order).

        ``record=True`` keeps every op's outputs (numpy, at their declared dtype) in ``Result.trace``;
        ``observer(op, outputs)`` is called after each op with its stored outputs.
        """
        env = self.prepare(feeds)
        trace: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for step in self.steps:
                step.args.env = env
                results = self._call(step.fn, step.args, step.op)
                stored = []
                inputs = None if step.exact else self._storages(step.args)
                for name, kind, shape, t in zip(step.outputs, step.kinds, step.shapes, results, strict=True):
                    if not (step.exact and isinstance(t, torch.Tensor) and t.dtype in (self.fdtype, torch.int32,
                                                                                          torch.bool)):
                        t = self._store(t, kind, inputs)
                    if shape is not None and tuple(t.shape) != shape:
                        raise ProgramError(
                            f"op '{step.op.name}' ({step.op.op_type}) computed shape {tuple(t.shape)} but the "
                            f"program declares {shape} for '{name}'; the package is inconsistent (or this kernel "
                            "is wrong): re-run `hybridexport convert --force`")
                    env[name] = t
                    stored.append(t)
                    if record:
                        trace[name] = _to_numpy(t, kind)
                if observer is not None:
                    observer(step.op, stored)
                step.args.env = {}
                for name in step.free:
                    env.pop(name, None)
        outputs = {}
        for v in self.function.outputs:
            t = env[v.name] if v.name in env else self.consts[v.name].tensor
            outputs[v.name] = _to_numpy(t, mil_dtype(v))
        return Result(outputs=outputs, trace=trace)

    def prepare(self, feeds: Mapping[str, Any] | Sequence[Any]) -> dict[str, torch.Tensor]:
        """Feeds (by name or in input order) checked and stored at the declared input dtypes."""
        if not isinstance(feeds, Mapping):
            feeds = list(feeds)
            if len(feeds) != len(self.input_names):
                raise FeedError(f"the program takes {len(self.input_names)} input(s) "
                                f"({', '.join(self.input_names)}), got {len(feeds)}")
            feeds = dict(zip(self.input_names, feeds, strict=True))
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise FeedError(f"inputs do not match the program: missing {missing or 'none'}, unknown {unknown or 'none'}; "
                            f"it takes {', '.join(self.input_names)}")
        env: dict[str, torch.Tensor] = {}
        for name, var in self.input_vars.items():
            a = np.asarray(feeds[name])
            shape = _static_shape(var)
            if shape is not None and tuple(a.shape) != shape:
                raise FeedError(f"input '{name}' has shape {tuple(a.shape)}, the program takes {shape}")
            kind = mil_dtype(var)
            if kind in _FLOAT_KINDS:
                t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(self.fdtype)
            elif kind == "bool":
                t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.bool_))
            else:
                t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
            env[name] = self._store(t, kind)
        return env

    def _call(self, fn: Callable[[Args], Any], args: Args, op: Any) -> tuple[torch.Tensor, ...]:
        try:
            out = fn(args)
        except ProgramError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ProgramError(f"op '{op.name}' ({op.op_type}) failed: {type(exc).__name__}: {first}; the package is "
                               "inconsistent or this kernel does not cover its inputs (report it with the package)"
                               ) from exc
        results = out if isinstance(out, (tuple, list)) else (out,)
        if len(results) != len(op.outputs):
            raise ProgramError(f"kernel of '{op.op_type}' returned {len(results)} outputs, the op has {len(op.outputs)}")
        return tuple(results)

    @staticmethod
    def _storages(args: Args) -> set[int]:
        """Storage addresses of an op's input tensors (its result must not be rounded in place over them)."""
        out = set()
        for b in args.bindings.values():
            for x in (b if isinstance(b, list) else [b]):
                t = x.tensor if isinstance(x, Const) else args.env.get(x)
                if isinstance(t, torch.Tensor):
                    out.add(t.untyped_storage().data_ptr())
        return out

    def _store(self, t: Any, kind: str, inputs: set[int] | None = None) -> torch.Tensor:
        """``t`` at the declared MIL dtype ``kind``, held in the compute dtype for floats.

        An fp16 result the kernel allocated itself (its storage is not one of ``inputs``) is rounded in
        place; one that may alias an input is rounded into a new tensor.
        """
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if kind == "fp16":
            if (inputs is not None and t.dtype == self.fdtype and t.is_contiguous()
                    and t.untyped_storage().data_ptr() not in inputs):
                return t.copy_(t.to(torch.float16))
            return t.to(torch.float16).to(self.fdtype)
        if kind in ("fp32", "fp64"):
            return t.to(self.fdtype) if (self.wide or kind == "fp64") else t.to(torch.float32)
        if kind == "bool":
            return t.to(torch.bool)
        if kind == "int32":
            return t.to(torch.int32)
        if kind in ("int8", "uint8", "int16"):
            return t.to(getattr(torch, kind))
        if kind in ("uint16", "uint32", "int64"):
            return t.to(torch.int64)
        raise ProgramError(f"values of MIL dtype '{kind}' are not supported by the interpreter")


_NP = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "bool": np.bool_, "int32": np.int32,
       "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "uint32": np.uint32,
       "int64": np.int64}


def _to_numpy(t: torch.Tensor, kind: str) -> np.ndarray:
    """A stored value as numpy at its declared dtype (wide fp32 values stay float64)."""
    if kind == "fp32" and t.dtype == torch.float64:
        return t.numpy().copy()
    return t.detach().numpy().astype(_NP.get(kind) or t.numpy().dtype, copy=True)
