"""Static Neural Engine (ANE) compatibility check of a Core ML ML Program.

Core ML decides at load time, on the device, which ops run on the ANE; nothing on Linux can ask it.
What can be checked statically are the ops and tensors that public sources say the ANE does not run
(or runs badly). Each rule below cites its source. ``ane_report`` walks the MIL program (every op,
nested blocks included) and returns one :class:`Finding` per offending op, with the ``nn.Module`` path
it came from (the artifact's op table). The Core ML format records each op's findings in that table.

Severity: ``off-ane`` — the sources say the ANE does not run it (Core ML falls back to GPU/CPU for that
part of the graph, paying a hand-off each way); ``slow`` — runs, but the sources name it as a cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# ------------------------------------------------------------------ sources
APPLE_ANE_ARTICLE = (
    "Apple ML Research, 'Deploying Transformers on the Apple Neural Engine' (2022), "
    "https://machinelearning.apple.com/research/neural-engine-transformers"
)
SRC_RANK = (
    f"{APPLE_ANE_ARTICLE}, Principle 1 'Picking the Right Data Format' (the ANE's layout is 4-D channels-first); "
    "espresso 'ANE does not support blob with rank' in https://github.com/microsoft/onnxruntime/issues/14212; "
    "Core ML rank ≤ 5 limit: https://github.com/apple/coremltools/issues/2536"
)
SRC_MEMCOPY = (
    f"{APPLE_ANE_ARTICLE}, Principle 3 'Minimizing Memory Copies' (reshapes/transposes are memory copies; "
    "ml-ane-transformers reference/multihead_attention.py avoids them)"
)
SRC_LAST_AXIS = f"{APPLE_ANE_ARTICLE}, Principle 1 (the last axis is padded to 64 bytes: a singleton last axis costs 32× in fp16)"
SRC_GATHER = "hollance/neural-engine, docs/unsupported-layers.md, 'Problematic layers': gather"
SRC_DILATED = "hollance/neural-engine, docs/unsupported-layers.md, 'Problematic layers': dilated convolutions"
SRC_RNN = (
    "hollance/neural-engine, docs/unsupported-layers.md ('RNN layers such as LSTM or GRU'); "
    "coremltools maintainer: https://github.com/apple/coremltools/issues/1780"
)
SRC_DIM = (
    "Core ML dimension limit 16384: https://github.com/apple/coremltools/issues/1003, "
    "https://github.com/apple/coremltools/issues/1260 (ANE conv length), onnxruntime CoreML EP "
    "'CoreML does not support input dim > 16384' (https://github.com/microsoft/onnxruntime/issues/19543)"
)
SRC_DTYPE = (
    "hollance/neural-engine docs/16-bit.md ('The ANE appears to use float16 for everything'); coremltools "
    "'Typed Execution Workflow Example' (a float 32 typed model executes on GPU and CPU), "
    "https://apple.github.io/coremltools/docs-guides/source/typed-execution-example.html"
)
SRC_DYNAMIC = (
    "Apple Developer Forums thread 724930 (Core ML engineer: with range flexibility only the default shape "
    "runs on the Neural Engine), https://developer.apple.com/forums/thread/724930; coremltools 'Flexible Input "
    "Shapes' (enumerated shapes for performance), https://apple.github.io/coremltools/docs-guides/source/flexible-inputs.html"
)

MAX_DIM = 16384
GATHER_OPS = frozenset({"gather", "gather_nd", "gather_along_axis"})
RNN_OPS = frozenset({"lstm", "gru", "rnn"})
#: ops that only move data; flagged "slow" when they are real copies (rank ≥ 3, not a no-op)
MEMCOPY_OPS = frozenset({"transpose", "reshape"})
#: op types that carry no computation worth flagging (constants, boundary casts)
IGNORED_OPS = frozenset({"const", "constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"})


@dataclass(frozen=True)
class Finding:
    """One op the Neural Engine is known not to run (``off-ane``) or to run slowly (``slow``)."""

    rule: str
    severity: str
    op_type: str
    op_name: str
    module: str | None
    shapes: str
    reason: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """A named check with its severity and source; ``check(op, ctx)`` returns a reason or None."""

    name: str
    severity: str
    source: str
    check: Callable[[Any, dict[str, Any]], str | None]


# ------------------------------------------------------------------ MIL helpers
def _types():
    from coremltools.converters.mil.mil import types

    return types


def _outputs(op: Any) -> list[Any]:
    return [v for v in getattr(op, "outputs", []) if hasattr(v, "shape")]


def _shape(var: Any) -> tuple[Any, ...]:
    try:
        return tuple(var.shape)
    except Exception:  # noqa: BLE001 - list/tuple vars have no shape
        return ()


def _tensor_outputs(op: Any) -> list[Any]:
    types = _types()
    return [v for v in _outputs(op) if types.is_tensor(v.sym_type)]


def _dtype_name(var: Any) -> str:
    types = _types()
    try:
        return types.builtin_to_string(var.dtype)
    except Exception:  # noqa: BLE001
        return "?"


def _fmt_shapes(op: Any) -> str:
    parts = []
    for v in _tensor_outputs(op):
        parts.append(f"{_dtype_name(v)}[{','.join(str(d) for d in _shape(v))}]")
    return " ".join(parts)


# ------------------------------------------------------------------ rules
def _rank(op: Any, ctx: dict[str, Any]) -> str | None:
    ranks = [len(_shape(v)) for v in _tensor_outputs(op)]
    worst = max(ranks, default=0)
    return f"rank-{worst} tensor (the ANE's layout is 4-D)" if worst > 4 else None


def _gather(op: Any, ctx: dict[str, Any]) -> str | None:
    return f"{op.op_type} (data-dependent indexing) is not an ANE op" if op.op_type in GATHER_OPS else None


def _rnn(op: Any, ctx: dict[str, Any]) -> str | None:
    return f"recurrent layer {op.op_type} does not run on the ANE" if op.op_type in RNN_OPS else None


def _dilated(op: Any, ctx: dict[str, Any]) -> str | None:
    if op.op_type not in ("conv", "conv_transpose"):
        return None
    dil = getattr(op, "dilations", None)
    val = getattr(dil, "val", None) if dil is not None else None
    if val is not None and any(int(d) != 1 for d in list(val)):
        return f"dilated convolution (dilations {list(int(d) for d in val)})"
    return None


def _big_dim(op: Any, ctx: dict[str, Any]) -> str | None:
    for v in _tensor_outputs(op):
        big = [d for d in _shape(v) if isinstance(d, int) and d > MAX_DIM]
        if big:
            return f"dimension {max(big)} > {MAX_DIM}"
    return None


def _dynamic(op: Any, ctx: dict[str, Any]) -> str | None:
    for v in _tensor_outputs(op):
        if any(not isinstance(d, int) for d in _shape(v)):
            return "dynamic (symbolic) shape: only the default shape of a range-flexible model runs on the ANE"
    return None


def _dtype(op: Any, ctx: dict[str, Any]) -> str | None:
    if op.op_type == "cast" or op.op_type in IGNORED_OPS:
        return None  # boundary casts (fp32 I/O ↔ fp16 compute) are expected in an FP16 program
    outs = _tensor_outputs(op)
    names = {_dtype_name(v) for v in outs}
    if "fp32" in names:
        return "float32 compute (the ANE computes in float16; FP32 programs run on GPU/CPU)"
    if names & {"int32", "int64", "int16", "uint16"} and op.op_type not in ("shape",):
        return f"integer tensor compute ({', '.join(sorted(names))}) runs off the ANE"
    return None


def _memcopy(op: Any, ctx: dict[str, Any]) -> str | None:
    if op.op_type not in MEMCOPY_OPS:
        return None
    outs = _tensor_outputs(op)
    if not outs:
        return None
    if op.op_type == "transpose":
        perm = getattr(getattr(op, "perm", None), "val", None)
        if perm is not None and list(perm) == sorted(perm):
            return None
        return f"transpose (perm {list(int(p) for p in perm) if perm is not None else '?'}) is a memory copy"
    x = getattr(op, "x", None)
    src, dst = (_shape(x) if x is not None else ()), _shape(outs[0])
    if _squeeze_only(src, dst):
        return None  # adding/removing unit axes does not move data
    return f"reshape {list(src)} → {list(dst)} is a memory copy on the ANE"


def _squeeze_only(src: tuple[Any, ...], dst: tuple[Any, ...]) -> bool:
    return [d for d in src if d != 1] == [d for d in dst if d != 1]


def _last_axis(op: Any, ctx: dict[str, Any]) -> str | None:
    for v in _tensor_outputs(op):
        shape = _shape(v)
        if len(shape) >= 2 and shape[-1] == 1 and all(isinstance(d, int) for d in shape):
            numel = 1
            for d in shape:
                numel *= d
            if numel >= 1024:
                return f"singleton last axis on a {numel}-element tensor (padded to 64 bytes per row)"
    return None


RULES: tuple[Rule, ...] = (
    Rule("rank>4", "off-ane", SRC_RANK, _rank),
    Rule("gather", "off-ane", SRC_GATHER, _gather),
    Rule("rnn", "off-ane", SRC_RNN, _rnn),
    Rule("dilated-conv", "off-ane", SRC_DILATED, _dilated),
    Rule("dim>16384", "off-ane", SRC_DIM, _big_dim),
    Rule("dtype", "off-ane", SRC_DTYPE, _dtype),
    Rule("dynamic-shape", "slow", SRC_DYNAMIC, _dynamic),
    Rule("memcopy", "slow", SRC_MEMCOPY, _memcopy),
    Rule("last-axis-1", "slow", SRC_LAST_AXIS, _last_axis),
)


# ------------------------------------------------------------------ program walk
def iter_ops(program: Any) -> Iterator[Any]:
    """Every op of every function, depth first through nested blocks (cond/while bodies)."""

    def walk(block: Any) -> Iterator[Any]:
        for op in block.operations:
            yield op
            for inner in getattr(op, "blocks", []) or []:
                yield from walk(inner)

    for fn in program.functions.values():
        yield from walk(fn)


def findings_by_output(program: Any, rules: tuple[Rule, ...] = RULES,
                       module_of: Callable[[str], str] | None = None) -> dict[str, list[Finding]]:
    """Op output name → the findings of that op, for every op of a MIL program that breaks a rule.

    ``program``: a MIL Program, in memory or read back from a package
    (:func:`hybridexport.export.formats.coreml.load_program`). Module paths come from ``module_of``
    (output name → path: the artifact's op table)."""
    out: dict[str, list[Finding]] = {}
    for op in iter_ops(program):
        if op.op_type in IGNORED_OPS or not getattr(op, "outputs", None):
            continue
        name = op.outputs[0].name
        for rule in rules:
            reason = rule.check(op, {})
            if reason:
                module = (module_of(name) if module_of else "") or None
                out.setdefault(name, []).append(Finding(
                    rule=rule.name, severity=rule.severity, op_type=op.op_type, op_name=name,
                    module=module, shapes=_fmt_shapes(op), reason=reason, source=rule.source,
                ))
    return out


def ane_report(program: Any, module_of: Callable[[str], str] | None = None,
               rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """Findings for every op of a MIL program that breaks a rule in :data:`RULES`, in program order."""
    return [f for found in findings_by_output(program, rules, module_of).values() for f in found]


def artifact_findings(path: Any, module_of: Callable[[str], str] | None = None) -> list[Finding]:
    """The findings of the program inside a saved ``.mlpackage`` (module paths from ``module_of``)."""
    from hybridexport.export.formats.coreml import load_program

    return ane_report(load_program(path), module_of)


def summarize(findings: list[Finding]) -> dict[str, int]:
    """Finding counts per rule (plus ``off-ane`` / ``slow`` totals)."""
    counts: Counter[str] = Counter(f.rule for f in findings)
    counts["off-ane"] = sum(1 for f in findings if f.severity == "off-ane")
    counts["slow"] = sum(1 for f in findings if f.severity == "slow")
    return dict(counts)


# ------------------------------------------------------------------ rendering
def render_ane_report(findings: list[Finding], console: Console | None = None, title: str = "Neural Engine",
                      max_rows: int = 40) -> None:
    """Rich tables: findings grouped by rule (count, first modules, source footnote), then the first rows,
    then the numbered sources."""
    from rich.table import Table

    from hybridexport.console import console as default_console

    con = console or default_console
    if not findings:
        con.print(f"[green]{title}: no op breaks a known Neural Engine rule[/]")
        return
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    sources = list(dict.fromkeys(items[0].source for items in by_rule.values()))
    summary = Table(title=f"{title}: static compatibility ({len(findings)} findings)", title_justify="left")
    for col in ("rule", "severity", "ops", "modules (first)", "source"):
        summary.add_column(col, overflow="fold")
    for rule, items in by_rule.items():
        mods = list(dict.fromkeys(f.module or "?" for f in items))
        colour = "red" if items[0].severity == "off-ane" else "yellow"
        summary.add_row(rule, f"[{colour}]{items[0].severity}[/]", str(len(items)),
                        ", ".join(mods[:3]) + (f" (+{len(mods) - 3})" if len(mods) > 3 else ""),
                        f"[{sources.index(items[0].source) + 1}]")
    con.print(summary)
    detail = Table(title="findings", title_justify="left")
    for col in ("severity", "rule", "op", "module", "output", "reason"):
        detail.add_column(col, overflow="fold")
    ordered = sorted(findings, key=lambda f: (f.severity != "off-ane", f.rule))
    for f in ordered[:max_rows]:
        detail.add_row(f.severity, f.rule, f"{f.op_type} {f.op_name}", f.module or "?", f.shapes, f.reason)
    if len(ordered) > max_rows:
        detail.caption = f"{len(ordered) - max_rows} more (see --json)"
    con.print(detail)
    for i, src in enumerate(sources, 1):
        con.print(f"[dim][{i}] {src}[/]", highlight=False, soft_wrap=True)
