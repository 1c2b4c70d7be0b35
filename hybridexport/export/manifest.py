"""The artifact manifest: ``<artifact>.json`` beside every exported file, and the artifact's identity.

An artifact is named by its model, input shapes, precision and format
(``<out>/<model>/<model>.<shape tag>.<precision><suffix>``), so two input sizes never overwrite each
other. The manifest stores the artifact's file name relative to itself; :meth:`Manifest.load` resolves it
beside the manifest (a copied output folder describes its own files), and :meth:`Manifest.check_artifact`
verifies size and sha256 before anything uses the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError, shown
from hybridexport.jsonfile import read_json

DEFAULT_OUT = Path("hybridexport-out")
MANIFEST_VERSION = 2
REBUILD = "rebuild it with `hybridexport convert --force`"


def _plain_name(name: str) -> bool:
    """A file name without folders (``Path(name).name == name``), not ``.`` or ``..``."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


@dataclass
class Parity:
    """How the artifact's outputs compare with PyTorch on fixed random inputs."""

    verified: bool
    max_abs_err: float | None = None
    rel_l2_err: float | None = None
    top1_agreement: float | None = None
    n_inputs: int = 0
    tolerance: float | None = None
    reason: str = ""
    method: str = ""  # what ran the artifact ("onnxruntime (CPUExecutionProvider)", ...)


@dataclass
class Manifest:
    model: str
    resolution: int
    format: str
    precision: str
    path: str  # the artifact, resolved beside the manifest when loaded (stored as a name relative to it)
    size_bytes: int
    sha256: str
    versions: dict[str, str]
    passes: list[str]
    parity: Parity
    ops: dict[str, int]
    rank5_tensors: int
    seconds: float
    input_shapes: list[list[int]] = field(default_factory=list)
    op_table: str = ""  # file name of the op table, beside the artifact
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape_tag(self) -> str:
        return shape_tag(self.input_shapes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = Path(self.path).name
        return {"manifest_version": MANIFEST_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Manifest:
        """A manifest from JSON, every field's type checked; unknown keys go to ``extra``. The artifact and
        its op table must be plain file names (a manifest describes files beside itself, nothing else)."""
        if not isinstance(d, dict):
            raise InputFileError(f"{source}: a manifest is a JSON object; {REBUILD}")
        if d.get("manifest_version") != MANIFEST_VERSION:
            raise InputFileError(f"{source}: manifest version {d.get('manifest_version')!r} is not "
                                 f"{MANIFEST_VERSION} (written by another hybridexport); rebuild it with "
                                 "`hybridexport convert --force`")
        from hybridexport.records import structure

        body = {k: v for k, v in d.items() if k != "manifest_version"}
        known = set(cls.__dataclass_fields__)
        extra = {k: v for k, v in body.items() if k not in known}
        body = {k: v for k, v in body.items() if k in known}
        if extra:
            body["extra"] = {**extra, **(body["extra"] if isinstance(body.get("extra"), dict) else {})}
        man = structure(body, cls, source, REBUILD)
        from hybridexport.optable import SUFFIX

        if not _plain_name(man.path):
            raise InputFileError(f"{source}: 'path' {man.path!r} is not a file name; {REBUILD}")
        if man.op_table and (not _plain_name(man.op_table) or not man.op_table.endswith(SUFFIX)):
            raise InputFileError(f"{source}: 'op_table' {man.op_table!r} is not a '*{SUFFIX}' file name beside the "
                                 f"artifact; {REBUILD}")
        if man.size_bytes < 0 or man.resolution < 0 or len(man.sha256) != 64 or any(
                c not in "0123456789abcdef" for c in man.sha256):
            raise InputFileError(f"{source}: size_bytes, resolution or sha256 is not a real value; {REBUILD}")
        p = man.parity
        if (not 0 <= man.seconds < math.inf or man.rank5_tensors < 0 or any(v < 0 for v in man.ops.values())
                or p.n_inputs < 0 or any(v is not None and v < 0 for v in (p.max_abs_err, p.rel_l2_err))
                or not all(v is None or 0 <= v <= b for v, b in ((p.top1_agreement, 1.0), (p.tolerance, math.inf)))):
            # a parity error may be inf or NaN (an artifact whose outputs overflowed: verify records the worst)
            raise InputFileError(f"{source}: a count, the build time or a parity figure is negative or not finite "
                                 f"(seconds {man.seconds!r}, parity {p.max_abs_err!r}/{p.rel_l2_err!r}); {REBUILD}")
        if any(not s or any(x < 1 for x in s) for s in man.input_shapes):
            raise InputFileError(f"{source}: input_shapes {shown(man.input_shapes)} has an empty shape or a size < 1; "
                                 f"{REBUILD}")
        return man

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        p = Path(path)
        man = cls.from_dict(read_json(p, "manifest", REBUILD, expect_object=True), source=str(p))
        man.path = str(p.parent.absolute() / Path(man.path).name)
        return man

    def check_artifact(self) -> Path:
        """The artifact's path after checking it exists with the recorded size and sha256 (one-line error)."""
        from hybridexport.export.cache import sha256_path, size_bytes

        p = Path(self.path)
        rebuild = f"rebuild it with `hybridexport convert {self.model} --to {self.format} --force`"
        if not p.exists():
            raise InputFileError(f"artifact {p} named by its manifest does not exist; {rebuild}")
        size = size_bytes(p)
        if size != self.size_bytes:
            raise InputFileError(f"artifact {p} is {size} bytes, its manifest says {self.size_bytes} (truncated or "
                                 f"replaced); {rebuild}")
        if sha256_path(p) != self.sha256:
            raise InputFileError(f"artifact {p} does not match the sha256 in its manifest (modified after "
                                 f"conversion); {rebuild}")
        return p

    def op_table_path(self) -> Path | None:
        return Path(self.path).with_name(self.op_table) if self.op_table else None


def manifest_path(artifact: str | Path) -> Path:
    """``foo.onnx`` → ``foo.onnx.json`` (works for directories such as ``.mlpackage`` too)."""
    a = Path(artifact)
    return a.with_name(a.name + ".json")


def shape_tag(input_shapes: list[list[int]] | list[tuple[int, ...]]) -> str:
    """``224`` for one square image input (1, 3, 224, 224); else ``1x3x256x192`` per input, joined by ``+``."""
    shapes = [list(s) for s in input_shapes]
    if len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][:2] == [1, 3] and shapes[0][2] == shapes[0][3]:
        return str(shapes[0][2])
    return "+".join("x".join(str(d) for d in s) for s in shapes) or "noinput"


def safe_name(model: str) -> str:
    """A model name usable as one path component (no separators, no leading dots)."""
    out = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in model).lstrip(".")
    return out or "model"


def artifact_path(out: str | Path, model: str, fmt: str, precision: str,
                  input_shapes: list[list[int]] | list[tuple[int, ...]]) -> Path:
    """Where ``convert`` writes an artifact: ``<out>/<model>/<model>.<shape tag>.<precision><suffix>``."""
    from hybridexport.export.formats import get

    safe = safe_name(model)
    return Path(out) / safe / get(fmt).artifact_name(f"{safe}.{shape_tag(input_shapes)}", precision)


def find_manifests(out: str | Path = DEFAULT_OUT) -> list[Manifest]:
    """Every manifest ``convert`` wrote under ``out`` (what ``bench`` with no MODEL benchmarks)."""
    return [Manifest.load(p) for p in sorted(Path(out).glob("*/*.json"))]
