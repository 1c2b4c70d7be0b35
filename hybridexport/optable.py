"""The op table: one row per runtime op of an artifact, written by ``convert`` beside the manifest.

It is the one record of what a converted graph contains. Every later stage reads it instead of
converting, rewriting or tracing again: runners map their rows to ``nn.Module`` paths through it, the
predicted runner takes its cost-model features from it, ``info`` shows its Neural Engine findings,
calibration fits on it. A format module builds it from the artifact itself
(``hybridexport.export.formats.<fmt>.op_table``), with module paths from what the file carries, or
from the conversion when the file carries none (Core ML).

Row fields: the runtime's op name and type, the canonical ``kind`` the cost model groups ops by,
activation inputs (names of the producing ops), input/output shapes and output dtypes, elements read
and written, constant (weight) elements, multiply-accumulates, ``bytes`` moved at the artifact's own
dtypes, rank facts, whether the runtime fuses it into its producer, the ``nn.Module`` path with how it
was found (:mod:`hybridexport.modpath` conventions), and static placement findings (Core ML: the
Neural Engine rules that the op breaks, as ``"<severity>:<rule>"`` strings such as ``"off-ane:rank>4"``
or ``"slow:memcopy"``; an op without an ``off-ane`` finding is predicted to run on the Neural Engine).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError

OPTABLE_KIND = "hybridexport-op-table"
OPTABLE_VERSION = 1
SUFFIX = ".ops.json.gz"
REBUILD = "rebuild it with `hybridexport convert --force`"


@dataclass
class OpRow:
    """One runtime op (Core ML MIL op, TFLite op, ONNX node, ExecuTorch node) as later stages see it."""

    name: str  # the runtime's op name (MIL output name, TFLite "<index>:<output tensor>", ONNX node name)
    op_type: str  # the runtime's op type ("conv", "CONV_2D", "Conv", "aten.convolution.default")
    kind: str  # canonical kind (hybridexport.latency.features.KINDS)
    macs: int = 0  # multiply-accumulates (conv, linear, matmul); 0 for memory-bound ops
    w_elems: int = 0  # constant (weight/bias) elements read
    in_elems: int = 0  # activation elements read
    out_elems: int = 0  # elements written
    rank: int = 0  # largest rank among its tensors
    erank: int = 0  # largest number of non-singleton dimensions among its tensors
    max_dim: int = 0  # largest single dimension among its activation tensors
    last_dim: int = 0  # innermost dimension of its (first) output
    fusable: bool = False  # an activation/elementwise op the runtime fuses into its producer
    module: str = ""  # nn.Module path (modpath.ROOT for the model itself; "" = unknown)
    inputs: list[str] = field(default_factory=list)  # names of the ops producing its activation inputs
    module_source: str = ""  # how ``module`` was found (modpath.SOURCES)
    input_shapes: list[list[int]] = field(default_factory=list)  # activation inputs
    output_shapes: list[list[int]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)  # of the outputs ("fp16", "fp32", "int8", ...)
    bytes: int = 0  # activation + weight bytes moved at the artifact's dtypes
    findings: list[str] = field(default_factory=list)  # static placement findings (Core ML: Neural Engine rules)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ROW_FIELDS = {f.name for f in fields(OpRow)}


@dataclass
class TensorSpec:
    """A graph input or output."""

    name: str
    shape: list[int]
    dtype: str = ""


@dataclass
class OpTable:
    """Every runtime op of one artifact, in execution (graph) order."""

    format: str
    ops: list[OpRow]
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    artifact_sha256: str = ""
    #: how module paths were found, in a sentence ("" when the artifact carries none)
    module_mapping: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name: dict[str, OpRow] | None = None

    def by_name(self) -> dict[str, OpRow]:
        if self._by_name is None:
            self._by_name = {o.name: o for o in self.ops}
        return self._by_name

    def module_of(self, name: str) -> str:
        """The module path of the op called ``name`` (``""`` when unknown)."""
        row = self.by_name().get(name)
        return row.module if row is not None else ""

    def mapped_share(self) -> float:
        """Share of ops with a module path."""
        return sum(1 for o in self.ops if o.module) / len(self.ops) if self.ops else 0.0

    def histogram(self) -> dict[str, int]:
        """Op-type counts, most frequent first (ties by name)."""
        counts: dict[str, int] = {}
        for o in self.ops:
            counts[o.op_type] = counts.get(o.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def rank5_tensors(self) -> int:
        """Tensors of rank ≥ 5 the ops produce."""
        return sum(1 for o in self.ops for s in o.output_shapes if len(s) >= 5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": OPTABLE_KIND,
            "version": OPTABLE_VERSION,
            "format": self.format,
            "artifact_sha256": self.artifact_sha256,
            "module_mapping": self.module_mapping,
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "extra": self.extra,
            "ops": [o.to_dict() for o in self.ops],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<op table>") -> OpTable:
        """An op table from JSON, every field's type checked (unknown row keys are ignored: newer columns);
        counts, shapes and ranks must be ≥ 0."""
        if not isinstance(d, dict) or d.get("kind") != OPTABLE_KIND:
            raise InputFileError(f"{source} is not a hybridexport op table; {REBUILD}")
        if d.get("version") != OPTABLE_VERSION:
            raise InputFileError(f"{source}: op table version {d.get('version')!r} is not {OPTABLE_VERSION}; "
                                 f"{REBUILD}")
        from hybridexport.records import structure

        ops = d.get("ops")
        if not isinstance(ops, list):
            raise InputFileError(f"{source}: 'ops' is not a list; {REBUILD}")
        rows = [structure({k: v for k, v in r.items() if k in _ROW_FIELDS} if isinstance(r, dict) else r, OpRow,
                          f"{source}: ops[{i}]", REBUILD) for i, r in enumerate(ops)]
        head = {k: v for k, v in d.items() if k not in ("kind", "version", "ops")}
        table = structure({**head, "ops": []}, cls, source, REBUILD)
        table.ops = rows
        for i, r in enumerate(rows):
            counts = (r.macs, r.w_elems, r.in_elems, r.out_elems, r.rank, r.erank, r.max_dim, r.last_dim, r.bytes)
            if min(counts) < 0 or any(x < 0 for s in (*r.input_shapes, *r.output_shapes) for x in s):
                raise InputFileError(f"{source}: ops[{i}] ({r.name!r}) has a negative count or size; {REBUILD}")
        if any(x < 0 for t in (*table.inputs, *table.outputs) for x in t.shape):
            raise InputFileError(f"{source}: a graph input or output has a negative size; {REBUILD}")
        return table

    def save(self, path: str | Path) -> Path:
        """Write gzip-compressed JSON atomically (deterministic: no timestamp inside)."""
        from hybridexport.atomic import atomic_path

        raw = json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")
        with atomic_path(path) as tmp:
            tmp.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> OpTable:
        """Read a gzip-compressed op table (at most :data:`hybridexport.jsonfile.MAX_TEXT_BYTES` once inflated)."""
        from hybridexport.jsonfile import parse_json, read_bytes

        p = Path(path)
        raw = read_bytes(p, "op table", REBUILD, gunzip=True)
        return cls.from_dict(parse_json(raw, f"op table '{p}'", REBUILD), source=str(p))


def op_table_path(artifact: str | Path) -> Path:
    """``foo.onnx`` → ``foo.onnx.ops.json.gz`` (beside the artifact and its manifest)."""
    a = Path(artifact)
    return a.with_name(a.name + SUFFIX)
